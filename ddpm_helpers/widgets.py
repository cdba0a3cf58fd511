"""Interactive explorers (ipywidgets 7.x and 8.x): the forward process, the samplers, a stored run,
classifier-free guidance.

When are widgets shown? `interactive=None` (the default) means: widgets when ipywidgets can be
imported and the code runs inside a Jupyter kernel; anywhere else (a script, pytest, a plain
IPython shell) a static figure with a one-line notice. `interactive=True` forces widgets (they are
built even without a front end, which tests use), `interactive=False` forces the static figure.

Each explorer returns an ipywidgets box; `box.controls` names its widgets and `box.state` holds
what is on screen now (for tests and for the curious). Pictures are rendered off screen (matplotlib Agg, no pyplot, so nothing leaks)
into PNG bytes shown by an ipywidgets.Image, with the course's display mapping
pixel = clamp((x + 1) / 2, 0, 1); the histogram shows the raw values of x_t.
"""
from __future__ import annotations

import html
import io
import math
import time

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .diffusion import draw_noise, q_sample
from .gif import png_bytes, render_frames, trajectory_frames
from .viz import as_trajectory, data_kind, draw_points, show_filmstrip, show_grid

NOTICE = ("Interactive widgets need ipywidgets in a Jupyter kernel: showing a static figure instead "
          "(pass interactive=True to force the widgets).")


def widgets_available() -> bool:
    """True when ipywidgets imports and we run inside a Jupyter kernel (IPython with a kernel)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def use_widgets(interactive: bool | None) -> bool:
    """Resolve the `interactive` argument: None = auto-detect, True/False = force."""
    if interactive is None:
        return widgets_available()
    if not isinstance(interactive, bool):
        raise TypeError(f"interactive must be None (auto-detect), True or False, got {interactive!r}")
    if interactive:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            raise ImportError("interactive=True needs ipywidgets: pip install ipywidgets") from None
    return interactive


def forward_explorer(x0: Tensor, schedule, t: int | None = None, n: int = 8, seed: int = 0,
                     interactive: bool | None = None):
    """A t slider over the forward process q(x_t | x0) for a small batch (eq. 4, Ho et al. 2020):

        x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps,   eps fixed (drawn once from `seed`)

    Left: x_t (images: the first `n`; points: all). Right: the histogram of x_t's values against
    the N(0, 1) density it approaches. The readout gives alpha_bar_t and the two scales.
    """
    kind = data_kind(x0, "x0")
    _check_int(n, "n", low=1)
    _check_int(seed, "seed", low=0)
    x0 = x0.detach().float().cpu()
    x0 = x0[:n] if kind == "images" else x0
    schedule = schedule.to("cpu")
    t = schedule.T // 2 if t is None else int(schedule.check_timesteps(t, batch=1)[0])
    noise = draw_noise(x0, torch.Generator().manual_seed(seed))

    def render(t: int) -> tuple[Figure, dict]:
        x_t = q_sample(x0, t, schedule, noise=noise)
        abar = float(schedule.alpha_bars[t])
        return _forward_figure(x_t, kind, t, abar), {"t": t, "alpha_bar": abar, "x_t": x_t}

    if not use_widgets(interactive):
        print(NOTICE)
        return render(t)[0]
    import ipywidgets as W

    slider = W.IntSlider(value=t, min=0, max=schedule.T - 1, description="t", continuous_update=False,
                         layout=W.Layout(width="500px"))
    readout, image = W.HTML(), W.Image(format="png")
    box = W.VBox([slider, readout, image])
    box.state, box.controls = {}, {"t": slider, "readout": readout, "image": image}

    def update(change=None) -> None:
        fig, box.state = render(slider.value)
        a = box.state["alpha_bar"]
        readout.value = (f"t = {slider.value} &nbsp; ᾱ<sub>t</sub> = {a:.4f} &nbsp; signal √ᾱ<sub>t</sub>"
                         f" = {math.sqrt(a):.3f} &nbsp; noise √(1−ᾱ<sub>t</sub>) = {math.sqrt(1 - a):.3f}")
        image.value = _figure_png(fig)

    slider.observe(update, names="value")
    update()
    return box


def sampler_explorer(model, schedule, shape: tuple[int, ...], interactive: bool | None = None):
    """Pick a sampler (ancestral with sigma^2 = posterior or beta; DDIM with steps and eta) and a
    seed, press "Sample": a grid (or scatter) of samples and the wall time. Nothing runs until the
    button is pressed. Without widgets, one DDIM run (50 steps, eta = 0, seed 0) is shown."""
    shape = tuple(int(s) for s in shape)
    settings = {"sampler": "ddim", "steps": min(50, schedule.T), "eta": 0.0, "variance": "posterior",
                "seed": 0}
    if not use_widgets(interactive):
        print(NOTICE)
        x, seconds = run_sampler(model, schedule, shape, **settings)
        return _samples_figure(x, f"{_describe(settings)}: {seconds:.2f} s")
    import ipywidgets as W

    c = _sampler_controls(W, schedule.T, settings["steps"])
    status, image = c["status"], c["image"]
    box = W.VBox([W.HBox([c["sampler"], c["variance"]]), W.HBox([c["steps"], c["eta"]]),
                  W.HBox([c["seed"], c["button"]]), status, image])
    box.state, box.controls = {}, c

    def toggle(change=None) -> None:
        c["variance"].disabled = c["sampler"].value != "ancestral"
        c["steps"].disabled = c["eta"].disabled = c["sampler"].value != "ddim"

    def run(_button=None) -> None:
        chosen = {name: c[name].value for name in settings}
        status.value = f"sampling: {_describe(chosen)} ..."
        try:
            x, seconds = run_sampler(model, schedule, shape, **chosen)
        except Exception as err:  # a callback's traceback is hidden in Jupyter: show it in the box
            status.value = f"<b>sampling failed</b>: {type(err).__name__}: {html.escape(str(err))}"
            raise
        status.value = f"{_describe(chosen)}: {seconds:.2f} s wall time"
        image.value = _figure_png(_samples_figure(x, _describe(chosen)))
        box.state = {**chosen, "seconds": seconds, "samples": x}

    c["sampler"].observe(toggle, names="value")
    c["button"].on_click(run)
    toggle()
    return box


def _sampler_controls(W, T: int, steps: int) -> dict:
    return {
        "sampler": W.Dropdown(options=[("ancestral (DDPM)", "ancestral"), ("DDIM", "ddim")],
                              value="ddim", description="sampler"),
        "variance": W.Dropdown(options=["posterior", "beta"], value="posterior", description="σ² (DDPM)"),
        "steps": W.IntSlider(value=steps, min=1, max=T, description="steps (DDIM)", continuous_update=False),
        "eta": W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.1, description="η (DDIM)",
                             continuous_update=False),
        "seed": W.IntText(value=0, description="seed"),
        "button": W.Button(description="Sample"),
        "status": W.HTML("press Sample"),
        "image": W.Image(format="png"),
    }


def trajectory_scrubber(trajectory, nrow: int = 4, scale: int = 2, interactive: bool | None = None):
    """A slider over a stored progressive run: x_t on the left, the model's predicted x0 on the right.

    `trajectory`: collect_trajectory(...) of a progressive sampler (or its SamplerSteps). The last
    position is the final sample (next to the prediction made at the last step).
    """
    traj = as_trajectory(trajectory)
    if traj["x0_pred"] is None:
        raise ValueError("the scrubber shows predicted x0 next to x_t, which a {t: x_t} dict lacks; pass "
                         "collect_trajectory(<a progressive sampler>)")
    frames, labels = trajectory_frames(traj)
    preds = list(traj["x0_pred"]) + ([traj["x0_pred"][-1]] if len(frames) > len(traj["ts"]) else [])
    ts = traj["ts"] + [traj["ts"][-1]] * (len(frames) - len(traj["ts"]))
    if not use_widgets(interactive):
        print(NOTICE)
        return show_filmstrip(traj, show_x0=True)
    import ipywidgets as W

    kind = data_kind(frames[0], "trajectory frames")
    slider = W.SelectionSlider(options=[(text, i) for i, text in enumerate(labels)], value=0,
                               description="step", continuous_update=kind == "images",
                               layout=W.Layout(width="500px"))
    left, right = W.Image(format="png"), W.Image(format="png")
    box = W.VBox([slider, W.HBox([left, right])])
    box.state, box.controls = {}, {"step": slider, "x_t": left, "x0_pred": right}

    def picture(x: Tensor, text: str) -> bytes:
        return png_bytes(render_frames([x], labels=[text], nrow=nrow, scale=scale)[0])

    def update(change=None) -> None:
        i = slider.value
        left.value = picture(frames[i], labels[i].replace("t =", "x_t at t ="))
        right.value = picture(preds[i], f"predicted x0 from t = {ts[i]}")
        box.state = {"index": i, "label": labels[i], "t": ts[i]}

    slider.observe(update, names="value")
    update()
    return box


def guidance_explorer(model, schedule, shape: tuple[int, ...], label: int = 0, scale: float = 3.0,
                      steps: int = 50, interactive: bool | None = None):
    """Pick a class, a guidance scale s and a seed, press "Sample": DDIM samples (eta = 0) of the
    guided model eps(∅) + s (eps(c) - eps(∅)) for a conditional `model` (see ddpm_helpers.guidance).
    s = 0 ignores the class, s = 1 is the conditional model, s > 1 pushes harder towards the class.
    Nothing runs until the button is pressed. Without widgets, one run with label, scale, steps, seed 0."""
    from .guidance import classifier_free_guidance

    classifier_free_guidance(model, label, scale)                  # validates model, label and scale
    shape, chosen = tuple(int(s) for s in shape), {"label": label, "scale": float(scale), "seed": 0}

    def run(label: int, scale: float, seed: int) -> tuple[Tensor, float, str]:
        guided = classifier_free_guidance(model, label, scale)
        x, seconds = run_sampler(guided, schedule, shape, "ddim", steps, 0.0, "posterior", seed)
        return x, seconds, f"class {label}, s = {scale:g}, DDIM {steps} steps, seed {seed}"

    if not use_widgets(interactive):
        print(NOTICE)
        x, seconds, text = run(**chosen)
        return _samples_figure(x, f"{text}: {seconds:.2f} s")
    import ipywidgets as W

    c = {"label": W.Dropdown(options=list(range(model.num_classes)), value=label, description="class"),
         "scale": W.FloatSlider(value=float(scale), min=0.0, max=10.0, step=0.5, description="scale s",
                                continuous_update=False),
         "seed": W.IntText(value=0, description="seed"), "button": W.Button(description="Sample"),
         "status": W.HTML("press Sample"), "image": W.Image(format="png")}
    box = W.VBox([W.HBox([c["label"], c["scale"]]), W.HBox([c["seed"], c["button"]]), c["status"], c["image"]])
    box.state, box.controls = {}, c

    def on_click(_button=None) -> None:
        chosen = {name: c[name].value for name in ("label", "scale", "seed")}
        c["status"].value = "sampling ..."
        try:
            x, seconds, text = run(**chosen)
        except Exception as err:  # a callback's traceback is hidden in Jupyter: show it in the box
            c["status"].value = f"<b>sampling failed</b>: {type(err).__name__}: {html.escape(str(err))}"
            raise
        c["status"].value = f"{text}: {seconds:.2f} s wall time"
        c["image"].value = _figure_png(_samples_figure(x, text))
        box.state = {**chosen, "steps": steps, "seconds": seconds, "samples": x}

    c["button"].on_click(on_click)
    return box


def run_sampler(model, schedule, shape, sampler: str, steps: int, eta: float, variance: str,
                seed: int) -> tuple[Tensor, float]:
    """One sampling run with a seeded CPU generator; returns (samples, wall-clock seconds)."""
    from .samplers import ancestral_sample, ddim_sample

    generator = torch.Generator().manual_seed(int(seed))
    start = time.perf_counter()
    with torch.no_grad():
        if sampler == "ancestral":
            x = ancestral_sample(model, shape, schedule, generator=generator, variance=variance,
                                 progress=False)
        elif sampler == "ddim":
            x = ddim_sample(model, shape, schedule, steps=steps, eta=eta, generator=generator,
                            progress=False)
        else:
            raise ValueError(f"sampler must be 'ancestral' or 'ddim', got {sampler!r}")
    return x.detach().cpu(), time.perf_counter() - start


def _check_int(value, name: str, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


# ---- rendering (off screen, bare Figures: no pyplot, nothing to close) ----------------------------

def _describe(s: dict) -> str:
    if s["sampler"] == "ancestral":
        return f"ancestral, σ² = {s['variance']}, seed {s['seed']}"
    return f"DDIM, {s['steps']} steps, η = {s['eta']:.1f}, seed {s['seed']}"


def _figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def _samples_figure(x: Tensor, title: str) -> Figure:
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    if data_kind(x, "samples") == "images":
        show_grid(x, nrow=int(math.ceil(math.sqrt(x.shape[0]))), ax=ax)
    else:
        draw_points(ax, x)
    ax.set_title(title)
    return fig


def _forward_figure(x_t: Tensor, kind: str, t: int, abar: float) -> Figure:
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_x, ax_hist = fig.subplots(1, 2)
    if kind == "images":
        show_grid(x_t, nrow=4, ax=ax_x)
    else:
        draw_points(ax_x, x_t)
    ax_x.set_title(f"$x_t$ at t = {t}  ($\\bar\\alpha_t$ = {abar:.4f})")
    values = x_t.flatten().numpy()
    edges = np.linspace(-4, 4, 81)
    weights = np.full(values.size, 1.0 / (values.size * (edges[1] - edges[0])))  # true density
    heights, _, _ = ax_hist.hist(values, bins=edges, weights=weights, color="C0", alpha=0.6,
                                 label="values of $x_t$")
    grid = np.linspace(-4, 4, 400)
    ax_hist.plot(grid, np.exp(-grid**2 / 2) / math.sqrt(2 * math.pi), color="k", label="N(0, 1)")
    ax_hist.set(xlim=(-4, 4), ylim=(0, 1.0), xlabel="value", ylabel="density",
                title="histogram of $x_t$ vs N(0, 1)")
    if heights.max() > 1.0:
        ax_hist.text(0.02, 0.95, f"tallest bar cut off (density {heights.max():.1f})",
                     transform=ax_hist.transAxes, fontsize=8, va="top")
    ax_hist.legend(loc="upper right")
    return fig

