"""Reverse-process samplers: DDPM ancestral sampling and DDIM, each with a progressive variant.

Notation: code t = 0 ... T-1 is the paper's 1 ... T; a_t = alpha_bar_t; t_prev = -1 means "the end"
(alpha_bar = 1). A model is any callable eps_model(x_t, t) -> eps, called with t a LongTensor (B,).

    DDPM step   x_{t-1} = mu_tilde_t(x_t, x0_pred) + sigma_t z,  z = 0 at t = 0   Algorithm 2, (7), (11) Ho et al. 2020
    DDIM step   x_prev  = sqrt(a_prev) x0_pred + sqrt(1 - a_prev - sigma^2) eps + sigma z   (12) Song et al. 2021
                sigma   = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)        (16)

Progressive samplers yield one `SamplerStep(t, x_t, x0_pred, x_prev)` per model evaluation;
the plain samplers run the same loop and return the last x_prev. Noise (x_T and each z) is drawn
with the given generator on its device (the CPU by default) and moved to the schedule's device.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterator, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .diffusion import EpsModel, check_like, check_model_schedule, check_x, draw_noise, predict_x0, q_posterior
from .schedules import NoiseSchedule, _check_int

VARIANCES = ("posterior", "beta")


class SamplerStep(NamedTuple):
    """One step of a sampler: the model was evaluated at timestep t on x_t; x_prev is the result
    (x_{t-1} for ancestral sampling, x_{t_prev} for DDIM; after the last step, the final sample)."""
    t: int
    x_t: Tensor
    x0_pred: Tensor
    x_prev: Tensor


# ---------------------------------------------------------------------- shared checks
def _eps(model: EpsModel, x_t: Tensor, t: Tensor) -> Tensor:
    eps = model(x_t, t)
    check_like(eps, x_t, "the model output")
    return eps


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1), to broadcast against x."""
    return values.reshape(-1, *([1] * (x.ndim - 1)))


def _start(shape, schedule: NoiseSchedule, generator, x_T) -> Tensor:
    """x_T ~ N(0, I) of `shape` on the schedule's device, or the given x_T after checks."""
    if x_T is not None:
        check_x(x_T, "x_T", schedule)
        if shape is not None and tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}; pass matching ones.")
        return x_T
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 2 or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, ...), e.g. (16, 2), got {shape!r}.")
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=source).to(schedule.device)


def _check_variance(variance) -> None:
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}.")


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(eta):
        raise TypeError(f"eta must be a number in [0, 1], got {eta!r}.")
    if not 0 <= eta <= 1:
        raise ValueError(
            f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise), got {eta}; "
            "beyond 1 the coefficient sqrt(1 - a_prev - sigma^2) of (12) can become imaginary."
        )
    return float(eta)


def _run(steps: Iterator[SamplerStep]) -> Tensor:
    for step in steps:
        pass
    return step.x_prev


# ---------------------------------------------------------------------- DDPM (ancestral)
def _p_step(model, x_t, t, schedule, noise, variance, clip_x0, generator) -> tuple[Tensor, Tensor]:
    check_x(x_t, "x_t", schedule)
    t = schedule.check_timesteps(t, batch=x_t.shape[0])
    x0_pred = predict_x0(x_t, t, _eps(model, x_t, t), schedule)          # (15)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
    # mu_tilde(x_t, x0_pred) of (7); unclipped it equals (11): (x_t - beta_t / sqrt(1 - a_t) eps) / sqrt(alpha_t)
    mean, var = q_posterior(x0_pred, x_t, t, schedule)
    if variance == "beta":
        var = NoiseSchedule.gather(schedule.betas, t, x_t.ndim).to(x_t.dtype)
    var = torch.where(_per_sample(t, x_t) == 0, torch.zeros_like(var), var)   # z = 0 at t = 0 (paper t = 1)
    if noise is None and not bool((t > 0).any()):
        return mean, x0_pred
    noise = draw_noise(x_t, generator) if noise is None else noise
    check_like(noise, x_t, "noise")
    return mean + var.sqrt() * noise, x0_pred


@torch.no_grad()
def p_sample(model: EpsModel, x_t: Tensor, t, schedule: NoiseSchedule, noise: Tensor | None = None,
             variance: str = "posterior", clip_x0: bool = False,
             generator: torch.Generator | None = None) -> Tensor:
    """One reverse step of DDPM (Algorithm 2 of Ho et al. 2020): sample p(x_{t-1} | x_t).

    x_{t-1} = mu_tilde_t(x_t, x0_pred) + sigma_t z, with x0_pred from (15), mu_tilde from (7),
    sigma_t^2 = beta_tilde_t (variance="posterior") or beta_t (variance="beta"), and no noise at
    t = 0. clip_x0=True clamps x0_pred to [-1, 1] (the data range) before forming the mean.
    """
    check_model_schedule(model, schedule)
    _check_variance(variance)
    return _p_step(model, x_t, t, schedule, noise, variance, clip_x0, generator)[0]


def ancestral_sample_progressive(model: EpsModel, shape, schedule: NoiseSchedule,
                                 generator: torch.Generator | None = None, variance: str = "posterior",
                                 clip_x0: bool = False, progress: bool = True,
                                 x_T: Tensor | None = None) -> Iterator[SamplerStep]:
    """Yield a SamplerStep for every t = T-1, ..., 0 of DDPM ancestral sampling (all T steps)."""
    check_model_schedule(model, schedule)
    _check_variance(variance)
    x = _start(shape, schedule, generator, x_T)
    return _ancestral_steps(model, x, schedule, generator, variance, clip_x0, progress)


@torch.no_grad()
def _ancestral_steps(model, x, schedule, generator, variance, clip_x0, progress):
    for t in tqdm(range(schedule.T - 1, -1, -1), desc="DDPM sampling", disable=not progress):
        noise = draw_noise(x, generator) if t > 0 else None
        x_prev, x0_pred = _p_step(model, x, t, schedule, noise, variance, clip_x0, None)
        yield SamplerStep(t, x, x0_pred, x_prev)
        x = x_prev


def ancestral_sample(model: EpsModel, shape, schedule: NoiseSchedule, generator: torch.Generator | None = None,
                     variance: str = "posterior", clip_x0: bool = False, progress: bool = True,
                     x_T: Tensor | None = None) -> Tensor:
    """Sample with all T steps of DDPM (Algorithm 2 of Ho et al. 2020) from x_T ~ N(0, I)."""
    return _run(ancestral_sample_progressive(model, shape, schedule, generator, variance, clip_x0,
                                             progress, x_T))


# ---------------------------------------------------------------------- DDIM
def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The `steps` timesteps DDIM visits: evenly spaced from T-1 down to 0, as a list of ints.

    t_i = round((T-1) * (steps-1-i) / (steps-1)) for i = 0 ... steps-1 (round half up, exact
    integer arithmetic): descending, unique (spacing >= 1 because steps <= T), first T-1, last 0.
    E.g. ddim_timesteps(1000, 5) == [999, 749, 500, 250, 0]. steps=1 gives [T-1]: a single jump
    from noise to the model's x0 prediction. (Song et al. used range(0, T, T // steps), which never
    visits T-1; starting at T-1 makes the first model call see pure noise, as in training.)
    """
    T = _check_int(T, "T", 1)
    steps = _check_int(steps, "steps", 1)
    if steps > T:
        raise ValueError(f"steps must be between 1 and T={T}, got {steps}; use steps={T} for every timestep.")
    if steps == 1:
        return [T - 1]
    n = steps - 1
    return [((T - 1) * (n - i) * 2 + n) // (2 * n) for i in range(steps)]


def _ddim_step(model, x_t, t, t_prev, schedule, eta, noise, clip_x0, generator) -> tuple[Tensor, Tensor]:
    eta = _check_eta(eta)
    check_x(x_t, "x_t", schedule)
    t = schedule.check_timesteps(t, batch=x_t.shape[0])
    t_prev = schedule.check_timesteps(t_prev, batch=x_t.shape[0], allow_end=True)
    if bool((t_prev >= t).any()):
        raise ValueError(f"t_prev must be smaller than t (DDIM steps go down), got t={t.tolist()}, "
                         f"t_prev={t_prev.tolist()}.")
    eps = _eps(model, x_t, t)
    a_t = NoiseSchedule.gather(schedule.alpha_bars, t, x_t.ndim).to(x_t.dtype)
    a_prev = torch.where(t_prev >= 0, schedule.alpha_bars[t_prev.clamp(min=0)], 1.0)   # t_prev = -1: a = 1
    a_prev = _per_sample(a_prev, x_t).to(x_t.dtype)
    x0_pred = predict_x0(x_t, t, eps, schedule)                       # "predicted x0" in (12)
    if clip_x0:  # keep (x0_pred, eps) consistent with x_t, so eta = 1 still equals p_sample
        x0_pred = x0_pred.clamp(-1.0, 1.0)
        eps = (x_t - a_t.sqrt() * x0_pred) / (1 - a_t).sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()          # (16)
    direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps    # clamp: rounding only; >= 0 for eta <= 1
    x_prev = a_prev.sqrt() * x0_pred + direction                      # (12)
    if eta > 0 and (noise is not None or bool((t_prev >= 0).any())):
        noise = draw_noise(x_t, generator) if noise is None else noise
        check_like(noise, x_t, "noise")
        x_prev = x_prev + sigma * noise                               # "random noise" in (12)
    return x_prev, x0_pred


@torch.no_grad()
def ddim_step(model: EpsModel, x_t: Tensor, t, t_prev, schedule: NoiseSchedule, eta: float = 0.0,
              noise: Tensor | None = None, clip_x0: bool = False,
              generator: torch.Generator | None = None) -> Tensor:
    """One DDIM step from timestep t to t_prev < t, eq. (12) of Song et al. 2021 with sigma(eta) of (16):

    x_prev = sqrt(a_prev) x0_pred + sqrt(1 - a_prev - sigma^2) eps_theta(x_t, t) + sigma z.
    Any pair works (t_prev = -1: a_prev = 1, the end). eta = 0 is deterministic; eta = 1 with
    t_prev = t - 1 is exactly p_sample with the posterior variance. With clip_x0, eps is re-derived
    from the clipped x0_pred.
    """
    check_model_schedule(model, schedule)
    return _ddim_step(model, x_t, t, t_prev, schedule, eta, noise, clip_x0, generator)[0]


def ddim_sample_progressive(model: EpsModel, shape, schedule: NoiseSchedule, steps: int = 50, eta: float = 0.0,
                            generator: torch.Generator | None = None, clip_x0: bool = False,
                            progress: bool = True, x_T: Tensor | None = None) -> Iterator[SamplerStep]:
    """Yield a SamplerStep for every pair (t, t_prev) of ddim_timesteps(T, steps), the last t_prev -1."""
    eta = _check_eta(eta)
    check_model_schedule(model, schedule)
    ts = ddim_timesteps(schedule.T, steps)
    x = _start(shape, schedule, generator, x_T)
    return _ddim_steps(model, x, schedule, ts, eta, generator, clip_x0, progress)


@torch.no_grad()
def _ddim_steps(model, x, schedule, ts, eta, generator, clip_x0, progress):
    pairs = zip(ts, ts[1:] + [-1])
    for t, t_prev in tqdm(pairs, total=len(ts), desc="DDIM sampling", disable=not progress):
        x_prev, x0_pred = _ddim_step(model, x, t, t_prev, schedule, eta, None, clip_x0, generator)
        yield SamplerStep(t, x, x0_pred, x_prev)
        x = x_prev


def ddim_sample(model: EpsModel, shape, schedule: NoiseSchedule, steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, clip_x0: bool = False, progress: bool = True,
                x_T: Tensor | None = None) -> Tensor:
    """Sample with `steps` DDIM steps (Song et al. 2021) over ddim_timesteps(T, steps)."""
    return _run(ddim_sample_progressive(model, shape, schedule, steps, eta, generator, clip_x0,
                                        progress, x_T))


# ---------------------------------------------------------------------- the wrong way
def naive_skip_timesteps(T: int, k: int) -> list[int]:
    """Timesteps visited by naive_skip_sample: T-1, T-1-k, T-1-2k, ... and then 0 if not reached."""
    T = _check_int(T, "T", 1)
    k = _check_int(k, "k", 1)
    if k > T:
        raise ValueError(f"k must be between 1 and T={T}, got {k}.")
    ts = list(range(T - 1, -1, -k))
    return ts if ts[-1] == 0 else ts + [0]


def naive_skip_sample_progressive(model: EpsModel, shape, schedule: NoiseSchedule, k: int,
                                  generator: torch.Generator | None = None, progress: bool = True,
                                  x_T: Tensor | None = None) -> Iterator[SamplerStep]:
    """Yield the steps of naive_skip_sample (x_prev is what the next visited timestep receives)."""
    check_model_schedule(model, schedule)
    ts = naive_skip_timesteps(schedule.T, k)
    x = _start(shape, schedule, generator, x_T)
    return _naive_steps(model, x, schedule, ts, generator, progress)


@torch.no_grad()
def _naive_steps(model, x, schedule, ts, generator, progress):
    for t in tqdm(ts, desc="naive skipping", disable=not progress):
        noise = draw_noise(x, generator) if t > 0 else None
        x_prev, x0_pred = _p_step(model, x, t, schedule, noise, "posterior", False, None)
        yield SamplerStep(t, x, x0_pred, x_prev)
        x = x_prev


def naive_skip_sample(model: EpsModel, shape, schedule: NoiseSchedule, k: int,
                      generator: torch.Generator | None = None, progress: bool = True,
                      x_T: Tensor | None = None) -> Tensor:
    """THE WRONG WAY to sample faster, kept for the exercise that contrasts it with DDIM.

    It visits t = T-1, T-1-k, T-1-2k, ..., 0 (see naive_skip_timesteps) and at each applies the
    ordinary one-step DDPM update p_sample(x_t, t), i.e. the coefficients of a step t -> t-1, then
    pretends the result is the sample at t-k. Those coefficients remove only one step's worth of
    noise (beta_t, not 1 - a_{t-k}/a_t), so most of the noise is never removed and the samples stay
    noisy. k = 1 is ordinary ancestral sampling. The fix is to use the coefficients of the actual
    jump t -> t-k: that is what ddim_step does (eta = 1 is the stochastic, DDPM-like version).
    """
    return _run(naive_skip_sample_progressive(model, shape, schedule, k, generator, progress, x_T))
