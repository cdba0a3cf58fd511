"""Our model under Hugging Face diffusers' schedulers: DDPM, DDIM, DPM-Solver++, UniPC, Euler.

diffusers splits sampling the way our samplers do: a *scheduler* holds the noise schedule and makes
one update, `scheduler.step(eps, t, x_t).prev_sample`, and the model stays outside. This module builds
diffusers schedulers from our NoiseSchedule, in code (nothing is downloaded: no `from_pretrained`, no
Hub), and drives any of them with our eps_model(x_t, t). diffusers is imported only when a function
here is called, so `import ddpm_helpers` does not pay for it.

diffusers counts timesteps like we do: code t = 0 ... T-1 is the paper's 1 ... T. What must match for
its DDPM and DDIM to compute exactly what `ancestral_sample` and `ddim_sample` compute:

    trained_betas      our betas (its default linear schedule is the same one, rounded in float32)
    clip_sample=False  its default clamps the predicted x0 to [-1, 1]; ours do not (clip_x0=False)
    variance_type      "fixed_small": sigma^2 = beta_tilde, our variance="posterior" (its default)
    set_alpha_to_one   True: DDIM's last jump lands on alpha_bar = 1, our t_prev = -1 (its default;
                       Stable Diffusion's config sets False: the jump ends at alpha_bar_0 instead)
    steps_offset       0: its default; 1 (Stable Diffusion) shifts every visited timestep up by one
    float64 tables     DDPMScheduler.step re-derives beta_t = 1 - a_t / a_{t-1} from float32 alpha_bars,
                       losing 3 of float32's 7 digits at small t (beta = 1e-4); our schedules are
                       computed in float64, and so are the tables we hand it
    step pairs         DDIMScheduler.step jumps from t to t - T // steps (diffusers issues #11347 and
                       #12633): right only for evenly spaced timesteps. `respace` makes our uneven
                       ddim_timesteps the steps of a schedule of their own, which it walks one by one.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .diffusion import EpsModel, check_like
from .samplers import SamplerStep, _run
from .schedules import NoiseSchedule

SCHEDULERS = {  # name: (diffusers class, the settings that make it follow our conventions)
    "ddpm": ("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_small", "timestep_spacing": "trailing"}),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0,
                               "timestep_spacing": "trailing"}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),  # "linspace" gives fractional t
}
FLOAT64_TABLES = ("ddpm", "ddim")  # the schedulers whose step() reads alpha_bars directly


def _import_diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError("ddpm_helpers.toolbox needs Hugging Face diffusers: pip install diffusers "
                          "(or pip install -r requirements.txt).") from err
    return diffusers


def diffusers_scheduler(name: str, schedule: NoiseSchedule, **overrides):
    """A diffusers scheduler (`name` in SCHEDULERS) configured from our schedule and conventions.

    overrides replace any setting, e.g. diffusers_scheduler("ddim", schedule, clip_sample=True) to see
    what a diffusers default changes, or algorithm_type="sde-dpmsolver++" for the stochastic DPM-Solver++.
    The scheduler lives on the CPU; the loop below moves nothing but the samples.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}.")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}.")
    class_name, settings = SCHEDULERS[name]
    betas = _betas64(schedule)
    config = {"num_train_timesteps": schedule.T, "trained_betas": betas.tolist(), "prediction_type": "epsilon",
              **settings, **overrides}
    scheduler = getattr(_import_diffusers(), class_name)(**config)
    if name in FLOAT64_TABLES:  # see the module docstring; step() still returns float32 samples
        scheduler.betas = betas
        scheduler.alphas = 1.0 - betas
        scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
        if name == "ddim" and not scheduler.config.set_alpha_to_one:  # last jump ends at alpha_bar_0, float64 too
            scheduler.final_alpha_cumprod = scheduler.alphas_cumprod[0]
    return scheduler


def _betas64(schedule: NoiseSchedule) -> Tensor:
    """The betas in float64 on the CPU. A schedule keeps beta and alpha = 1 - beta in float32, and the
    smaller of the two carries more digits: beta near 0 (most steps), alpha near 1 (long respaced jumps)."""
    betas, alphas = schedule.betas.detach().cpu().double(), schedule.alphas.detach().cpu().double()
    return torch.where(betas < 0.5, betas, 1.0 - alphas)


def respace(model: EpsModel, schedule: NoiseSchedule, timesteps: Sequence[int]) -> tuple[EpsModel, NoiseSchedule]:
    """The diffusion that visits only `timesteps`, as a model and a schedule of len(timesteps) steps.

    Sort the kept timesteps, s_0 < s_1 < ... < s_{S-1}; step k of the new schedule is our s_k:
        beta'_k = 1 - alpha_bar[s_k] / alpha_bar[s_{k-1}]   (alpha_bar[s_{-1}] = 1),  so alpha_bar'_k = alpha_bar[s_k],
    and the new model is told the old timestep, model'(x, k) = model(x, s_k). Consecutive steps k -> k-1
    of the new schedule are the jumps s_k -> s_{k-1} of the old one (section 4 of Nichol & Dhariwal
    2021; `respace.py` of their improved-diffusion). So ddim_sample(model', ..., schedule', steps=S)
    is ddim_sample(model, ..., schedule, steps=S) when timesteps = ddim_timesteps(T, S), and any
    scheduler that steps from k to k - 1 follows our pairs exactly.
    """
    kept = sorted({int(t) for t in timesteps})
    if not kept or len(kept) != len(timesteps) or kept[0] < 0 or kept[-1] >= schedule.T:
        raise ValueError(f"timesteps must be distinct ints in 0 ... {schedule.T - 1}, got {list(timesteps)!r:.80}.")
    alpha_bars = torch.cumprod(1.0 - _betas64(schedule), dim=0)[kept]
    betas = 1.0 - alpha_bars / torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])
    old_t = torch.tensor(kept, device=schedule.device)

    def respaced_model(x_t: Tensor, k: Tensor) -> Tensor:
        return model(x_t, old_t.to(k.device)[k])

    return respaced_model, NoiseSchedule.from_betas(betas).to(schedule.device)


def _step_options(scheduler, generator, step_kwargs: dict) -> dict:
    """Keyword arguments for scheduler.step: the caller's (checked) and the generator where it takes one."""
    accepted = inspect.signature(scheduler.step).parameters
    for key in step_kwargs:
        if key not in accepted or key in ("model_output", "timestep", "sample", "return_dict"):
            raise TypeError(f"{type(scheduler).__name__}.step() takes no option {key!r}; "
                            f"it takes {[k for k in accepted if k not in ('model_output', 'timestep', 'sample')]}.")
    return {**step_kwargs, "generator": generator} if "generator" in accepted else dict(step_kwargs)


def _first_sample(shape, generator, x_T, device) -> Tensor:
    """x_T ~ N(0, I) drawn on the generator's device (the CPU by default), as our samplers draw it."""
    if x_T is not None:
        if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.ndim < 2:
            raise TypeError(f"x_T must be a floating-point tensor of shape (B, ...), got {x_T!r:.60}.")
        if shape is not None and tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}; pass matching ones.")
        return x_T
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 2 or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, ...), e.g. (16, 1, 28, 28), got {shape!r}.")
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=source).to(device)


def scheduler_sample_progressive(model: EpsModel, scheduler, shape, steps, generator: torch.Generator | None = None,
                                 x_T: Tensor | None = None, device="cpu", progress: bool = True,
                                 **step_kwargs) -> Iterator[SamplerStep]:
    """Yield a SamplerStep per model call of the loop every diffusers pipeline runs:

        scheduler.set_timesteps(steps);  x = x_T * scheduler.init_noise_sigma
        for t in scheduler.timesteps:  eps = model(scheduler.scale_model_input(x, t), t)
                                       x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    steps is a number of steps or a list of timesteps (for schedulers whose set_timesteps takes one).
    step_kwargs go to step() (e.g. eta=1.0 for DDIM); the generator goes there too when step() takes
    one. x_T is drawn like our samplers draw it, on `device` unless given. x0_pred is the scheduler's
    own when it reports one (DDPM, DDIM, Euler), else the x0 implied by eps.
    """
    options = _step_options(scheduler, generator, step_kwargs)
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        scheduler.set_timesteps(int(steps))
    else:
        scheduler.set_timesteps(timesteps=[int(t) for t in steps])
    x = _first_sample(shape, generator, x_T, device) * scheduler.init_noise_sigma
    return _scheduler_steps(model, scheduler, x, options, progress)


@torch.no_grad()
def _scheduler_steps(model, scheduler, x, options, progress):
    for t in tqdm(scheduler.timesteps, desc=type(scheduler).__name__, disable=not progress):
        if float(t) != int(t):
            raise ValueError(f"{type(scheduler).__name__} visits the fractional timestep {float(t)}; our models "
                             "take integer timesteps: use timestep_spacing='trailing' or 'leading'.")
        x_in = scheduler.scale_model_input(x, t)
        eps = model(x_in, torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device))
        check_like(eps, x, "the model output")
        out = scheduler.step(eps, t, x, **options)
        x0_pred = getattr(out, "pred_original_sample", None)
        if x0_pred is None:  # (15) of Ho et al.: the x0 that x_in and eps imply
            a = scheduler.alphas_cumprod[int(t)]
            x0_pred = (x_in - (1 - a).sqrt() * eps) / a.sqrt()
        yield SamplerStep(int(t), x, x0_pred, out.prev_sample)
        x = out.prev_sample


def scheduler_sample(model: EpsModel, scheduler, shape, steps, generator: torch.Generator | None = None,
                     x_T: Tensor | None = None, device="cpu", progress: bool = True, **step_kwargs) -> Tensor:
    """Sample with a diffusers scheduler driving our eps-model (see scheduler_sample_progressive)."""
    return _run(scheduler_sample_progressive(model, scheduler, shape, steps, generator, x_T, device, progress,
                                             **step_kwargs))
