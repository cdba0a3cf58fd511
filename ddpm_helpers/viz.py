"""Pictures for the course: image grids, filmstrips, 2-D scatters, schedule and loss plots.

One global mapping from data to pixels is used everywhere (grids, filmstrips, GIFs, widgets):

    pixel = clamp((x + 1) / 2, 0, 1)                       for DISPLAY only

Data live in [-1, 1]: -1 is black, +1 is white. Values outside [-1, 1] saturate (a noisy x_t shows
pure black or white wherever |x| > 1); nothing is ever rescaled per image or per frame, so what you
see is what the model produced. Point clouds are drawn in fixed limits (±POINT_LIM on both axes)
with the two-moons manifold faintly behind, so that the frames of a run can be compared.

Every function returns a matplotlib Figure and never calls plt.show(). In a notebook, end the line
with `;` (or assign the figure) so that Jupyter shows the figure once, not twice.

Notation: t is the code timestep 0 ... T-1 (the paper's 1 ... T); x_t is the sample at t; x0_pred
is the model's estimate of x0 from x_t; "final" is the sample left after the last step.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from .data import make_moons

POINT_LIM = 2.5  # half-width of the fixed window for 2-D point clouds (x_T ~ N(0, I) mostly fits)
FINAL_LABEL = "final $x_0$"


def to_pixels(x: Tensor) -> Tensor:
    """Map data in [-1, 1] to display intensities in [0, 1]: clamp((x + 1) / 2, 0, 1), on the CPU."""
    return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)


def data_kind(x: Tensor, name: str = "x") -> str:
    """'images' for a (B, 1 or 3, H, W) batch, 'points' for (B, 2); raise a helpful error otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                        "wrap it with torch.as_tensor(...)")
    if x.ndim == 4 and x.shape[1] in (1, 3):
        kind = "images"
    elif x.ndim == 2 and x.shape[1] == 2:
        kind = "points"
    else:
        raise ValueError(f"{name} must be images of shape (B, 1 or 3, H, W) or 2-D points (B, 2), "
                         f"got shape {tuple(x.shape)}; for a single image add the batch axis with "
                         "x.unsqueeze(0)")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one sample")
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN values, which cannot be drawn; did sampling diverge? "
                         "Check the model output and the schedule")
    return kind


def image_grid(images: Tensor, nrow: int = 8) -> Tensor:
    """Tile a (B, C, H, W) batch in [-1, 1] into one (3, H', W') picture in [0, 1] with white gaps."""
    _check_positive_int(nrow, "nrow")
    return make_grid(to_pixels(images), nrow=nrow, padding=2, pad_value=1.0)


def show_grid(images: Tensor, nrow: int = 8, title: str | None = None, ax: Axes | None = None) -> Figure:
    """Show a batch of images as one grid (grey colormap for 1 channel, no ticks); return the Figure."""
    if data_kind(images, "images") != "images":
        raise ValueError("show_grid draws images (B, C, H, W); for 2-D points (B, 2) use show_scatter")
    grid = image_grid(images, nrow)
    height, width = grid.shape[1:]
    if ax is None:
        scale = min(10.0, max(2.0, width / 40)) / width  # inches per pixel, about 40 px an inch
        _, ax = plt.subplots(figsize=(width * scale, height * scale + (0.4 if title else 0.0)),
                             layout="constrained")
    _imshow(ax, grid, channels=images.shape[1])
    if title:
        ax.set_title(title)
    return ax.figure


def show_scatter(points: Tensor, title: str | None = None, ax: Axes | None = None,
                 manifold: bool = True, lim: float = POINT_LIM) -> Figure:
    """Scatter 2-D points in the fixed window [-lim, lim]^2 (equal aspect), moons manifold faint behind.

    Points outside the window are not drawn (the window is fixed so that pictures are comparable).
    """
    if data_kind(points, "points") != "points":
        raise ValueError("show_scatter draws 2-D points (B, 2); for images (B, C, H, W) use show_grid")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4), layout="constrained")
    draw_points(ax, points, manifold, lim)
    if title:
        ax.set_title(title)
    return ax.figure


def collect_trajectory(steps: Iterable, keep: Iterable[int] | None = None, every: int = 1) -> dict:
    """Store a progressive sampler run as {"ts", "x_t", "x0_pred", "final"} (CPU copies).

    `steps` is what ancestral_sample_progressive / ddim_sample_progressive yield: SamplerStep(t, x_t,
    x0_pred, x_prev). `keep` (a collection of timesteps) and `every` (keep each every-th step, counted
    from the first) thin the run to save memory; with `keep=None` the last step is always kept.
    "final" is x_prev of the last step, the finished sample.
    """
    _check_positive_int(every, "every")
    keep = None if keep is None else {int(t) for t in keep}
    traj = {"ts": [], "x_t": [], "x0_pred": [], "final": None}
    step, kept = None, False
    for i, step in enumerate(steps):
        if not all(hasattr(step, a) for a in ("t", "x_t", "x0_pred", "x_prev")):
            raise TypeError("collect_trajectory expects the SamplerStep(t, x_t, x0_pred, x_prev) items "
                            f"that a *_progressive sampler yields, got {type(step).__name__}")
        kept = i % every == 0 and (keep is None or int(step.t) in keep)
        if kept:
            _append_step(traj, step)
    if step is None:
        raise ValueError("collect_trajectory got no steps: the sampler yielded nothing")
    if not kept and keep is None:
        _append_step(traj, step)
    traj["final"] = _cpu_copy(step.x_prev)
    return traj


def show_filmstrip(steps_or_frames, ts: Sequence[int] | None = None, n_cols: int = 6,
                   show_x0: bool = False, n_samples: int = 4, show_final: bool = True,
                   lim: float = POINT_LIM, title: str | None = None) -> Figure:
    """Columns = timesteps ("t = 999" ... then the final sample), rows = samples; return the Figure.

    `steps_or_frames`: SamplerSteps from a progressive sampler, a trajectory from
    collect_trajectory, or a dict {t: x_t}. `ts` picks the columns (timesteps present in the run);
    None spreads `n_cols` columns evenly from the first to the last step. `show_x0` adds a row of the
    model's predicted x0. Images: each panel stacks the first `n_samples` samples from top to bottom.
    Points (B, 2): each panel is one scatter of all points, moons manifold faintly behind.
    """
    traj = as_trajectory(steps_or_frames, keep=ts)  # a live run stores only the requested columns
    kind = data_kind(traj["x_t"][0], "frames")
    if show_x0 and traj["x0_pred"] is None:
        raise ValueError("show_x0=True needs predicted x0, which a {t: x_t} dict does not have; pass the "
                         "SamplerSteps of a progressive sampler (or collect_trajectory of them)")
    _check_positive_int(n_samples, "n_samples")
    cols = [(f"t = {traj['ts'][i]}", traj["x_t"][i], traj["x0_pred"][i] if show_x0 else None)
            for i in pick_columns(traj["ts"], ts, n_cols)]
    if show_final and traj["final"] is not None:
        cols.append((FINAL_LABEL, traj["final"], None))
    nrows = 2 if show_x0 else 1
    if kind == "images":
        b, _, h, w = traj["x_t"][0].shape
        size = (0.4 + 1.0 * len(cols), nrows * (0.35 + 0.85 * min(b, n_samples) * h / w))
    else:
        size = (0.4 + 1.9 * len(cols), 2.05 * nrows)
    size = (size[0], size[1] + (0.3 if title else 0.0))
    fig, axes = plt.subplots(nrows, len(cols), figsize=size, squeeze=False, layout="constrained")
    for j, (label, x_t, x0_pred) in enumerate(cols):
        axes[0, j].set_title(label, fontsize=9)
        _filmstrip_panel(axes[0, j], x_t, kind, n_samples, lim)
        if show_x0:
            _filmstrip_panel(axes[1, j], x0_pred, kind, n_samples, lim)
    axes[0, 0].set_ylabel("$x_t$")
    if show_x0:
        axes[1, 0].set_ylabel(r"predicted $\hat{x}_0$")
    if title:
        fig.suptitle(title)
    return fig


def as_trajectory(obj, keep: Iterable[int] | None = None) -> dict:
    """A trajectory dict from a trajectory, a {t: x_t} dict, or SamplerSteps (keeping `keep`)."""
    if isinstance(obj, Mapping) and "ts" in obj:
        if not obj["ts"]:
            raise ValueError("the trajectory holds no steps")
        return obj
    if isinstance(obj, Mapping):
        if not obj:
            raise ValueError("the {t: x_t} dict is empty; pass at least one frame")
        frames = sorted(((int(t), x) for t, x in obj.items()), key=lambda item: -item[0])  # noise first
        return {"ts": [t for t, _ in frames], "x_t": [x for _, x in frames], "x0_pred": None, "final": None}
    if isinstance(obj, Iterable) and not isinstance(obj, Tensor):
        return collect_trajectory(obj, keep=keep)
    raise TypeError("expected SamplerSteps from a progressive sampler, a trajectory from "
                    f"collect_trajectory, or a dict {{t: x_t}}; got {type(obj).__name__}")


def pick_columns(available: Sequence[int], ts: Sequence[int] | None, n_cols: int) -> list[int]:
    """Indices into `available` for the requested timesteps `ts`, or n_cols evenly spaced ones."""
    if ts is None:
        _check_positive_int(n_cols, "n_cols")
        n = min(n_cols, len(available))
        return sorted({int(round(i)) for i in np.linspace(0, len(available) - 1, n)})
    index = {t: i for i, t in enumerate(available)}
    missing = [t for t in ts if t not in index]
    if missing:
        raise ValueError(f"timesteps {missing} are not in this run, which holds {len(available)} steps "
                         f"from t = {available[0]} to t = {available[-1]}; choose from its 'ts' or pass "
                         "ts=None for evenly spaced columns")
    return [index[t] for t in ts]


def show_rows(rows: Mapping[str, Sequence[Tensor]], col_labels: Sequence[str], n_samples: int = 4,
              title: str | None = None) -> Figure:
    """A table of image strips for comparing models or pipelines side by side; return the Figure.

    `rows` maps a row label (e.g. "x0_pred, healthy model") to one (B, C, H, W) batch per column;
    `col_labels` names the columns (e.g. "t = 200"). Each panel shows the first `n_samples` images
    of its batch in one horizontal strip, on the same fixed [-1, 1] scale as every other picture.
    """
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError("rows must be a non-empty dict {row label: [one image batch per column]}")
    col_labels = list(col_labels)
    _check_positive_int(n_samples, "n_samples")
    for label, batches in rows.items():
        if isinstance(batches, Tensor) or len(batches) != len(col_labels):
            got = "one tensor" if isinstance(batches, Tensor) else f"{len(batches)} batches"
            raise ValueError(f"row {label!r} must hold one image batch per column ({len(col_labels)}: "
                             f"{col_labels}), got {got}; wrap a single batch in a list")
        for batch in batches:
            if data_kind(batch, f"row {label!r}") != "images":
                raise ValueError(f"row {label!r} holds 2-D points; show_rows draws images (B, C, H, W)")
    first = next(iter(rows.values()))[0]
    b, _, h, w = first.shape
    strip = min(b, n_samples) * w / h                    # width of one panel in image heights
    size = (1.6 + 0.55 * strip * len(col_labels), 0.25 + 0.6 * len(rows) + (0.3 if title else 0.0))
    fig, axes = plt.subplots(len(rows), len(col_labels), figsize=size, squeeze=False, layout="constrained")
    for i, (label, batches) in enumerate(rows.items()):
        for j, batch in enumerate(batches):
            _imshow(axes[i, j], image_grid(batch[:n_samples], nrow=n_samples), channels=batch.shape[1])
            if i == 0:
                axes[i, j].set_title(col_labels[j], fontsize=9)
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_schedule(*schedules, labels: Sequence[str] | None = None) -> Figure:
    """Four panels against t: beta_t (log scale), alpha_bar_t, signal sqrt(alpha_bar_t) with noise
    sqrt(1 - alpha_bar_t), and log-SNR = log(alpha_bar_t / (1 - alpha_bar_t)); schedules overlaid."""
    if not schedules:
        raise ValueError("plot_schedule needs at least one schedule, e.g. plot_schedule(NoiseSchedule.linear())")
    if labels is None:
        labels = [f"{getattr(s, 'kind', 'schedule')} (T={s.T})" for s in schedules]
    if len(labels) != len(schedules):
        raise ValueError(f"got {len(labels)} labels for {len(schedules)} schedules; give one label each")
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), layout="constrained")
    ax_beta, ax_abar, ax_scale, ax_snr = axes.flat
    for i, (s, label) in enumerate(zip(schedules, labels)):
        t = np.arange(s.T)
        abar = s.alpha_bars.detach().cpu().double().numpy()
        color = f"C{i}"
        ax_beta.plot(t, s.betas.detach().cpu().numpy(), color=color, label=label)
        ax_abar.plot(t, abar, color=color, label=label)
        ax_scale.plot(t, np.sqrt(abar), color=color)
        ax_scale.plot(t, np.sqrt(1 - abar), color=color, linestyle="--")
        ax_snr.plot(t, s.log_snr.detach().cpu().numpy(), color=color)
    ax_beta.set(yscale="log", title=r"$\beta_t$ (log scale)")
    ax_abar.set(title=r"$\bar\alpha_t = \prod_{s \leq t} (1 - \beta_s)$")
    ax_scale.set(title=r"signal $\sqrt{\bar\alpha_t}$ (solid), noise $\sqrt{1-\bar\alpha_t}$ (dashed)")
    ax_snr.set(title=r"log-SNR $= \log\,\bar\alpha_t / (1-\bar\alpha_t)$")
    for ax in axes.flat:
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    ax_abar.legend()
    return fig


def plot_losses(history, smooth: int | None = None, ax: Axes | None = None,
                title: str = "training loss") -> Figure:
    """Loss per step: raw values faint, a trailing moving average of `smooth` steps on top, log y.

    `history`: the result of train(...) (its .losses), a sequence of numbers, or a dict with a
    "loss" sequence. smooth=None picks a tenth of the run (at most 100 steps); 1 draws no average.
    """
    values = history["loss"] if isinstance(history, Mapping) else getattr(history, "losses", history)
    losses = np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu(), dtype=float).reshape(-1)
    if losses.size == 0:
        raise ValueError("plot_losses got an empty history; train for at least one step first")
    if smooth is None:
        smooth = int(min(100, max(1, losses.size // 10)))
    _check_positive_int(smooth, "smooth")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    steps = np.arange(1, losses.size + 1)
    ax.plot(steps, losses, color="C0", alpha=0.3, linewidth=0.8, label="per step")
    if 1 < smooth <= losses.size:
        average = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        ax.plot(steps[smooth - 1:], average, color="C0", label=f"moving average ({smooth} steps)")
    ax.set(yscale="log", xlabel="step", ylabel="loss (log scale)", title=title)
    ax.legend()
    return ax.figure


# ---- small pieces -------------------------------------------------------------------------------

def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _cpu_copy(x: Tensor) -> Tensor:
    return x.detach().to("cpu", copy=True)


def _append_step(traj: dict, step) -> None:
    traj["ts"].append(int(step.t))
    traj["x_t"].append(_cpu_copy(step.x_t))
    traj["x0_pred"].append(_cpu_copy(step.x0_pred))


def _imshow(ax: Axes, grid: Tensor, channels: int) -> None:
    """Draw a (3, H, W) picture in [0, 1] with a fixed 0..1 range (never matplotlib's auto-stretch)."""
    if channels == 1:
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(rearrange(grid, "c h w -> h w c").numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


@functools.lru_cache(maxsize=1)
def moons_manifold() -> np.ndarray:
    """2,000 points on the noise-free two moons (fixed seed), drawn faintly behind scatters."""
    return make_moons(2000, noise=0.0, generator=torch.Generator().manual_seed(0)).numpy()


def draw_points(ax: Axes, points: Tensor, manifold: bool = True, lim: float = POINT_LIM) -> None:
    """Scatter (B, 2) points on `ax` in the fixed window [-lim, lim]^2, moons manifold faint behind."""
    if manifold:
        m = moons_manifold()
        ax.scatter(m[:, 0], m[:, 1], s=1, color="0.55", alpha=0.35, linewidths=0, zorder=0)
    p = points.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=4, color="C0", alpha=0.6, linewidths=0, zorder=1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")


def _filmstrip_panel(ax: Axes, x: Tensor | None, kind: str, n_samples: int, lim: float) -> None:
    if x is None:  # the final column has no predicted x0
        ax.axis("off")
    elif kind == "images":
        _imshow(ax, image_grid(x[:n_samples], nrow=1), channels=x.shape[1])
    else:
        draw_points(ax, x, manifold=True, lim=lim)
        ax.set_xticks([])
        ax.set_yticks([])
