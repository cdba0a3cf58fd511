"""Editing images with an unconditional model: inpainting (RePaint) and SDEdit, built on our DDIM step.

Notation as in samplers.py: code t = 0 ... T-1 is the paper's 1 ... T, a_t = alpha_bar_t, and t_prev = -1
is the end (a = 1). `known` is a 0/1 mask, 1 where the pixels of the original x0 are kept.

    Inpainting (Lugmayr et al. 2022, "RePaint", section 4.1 and Algorithm 1), for each jump t -> t_prev:
        x_known   = q_sample(x0, t_prev)                 the original, noised to the level we land on
        x_unknown = ddim_step(x_t, t, t_prev, eta)       the model's step, on the whole image
        x_prev    = known * x_known + (1 - known) * x_unknown                  (at the end: x_known = x0)
    RePaint takes DDPM steps (t_prev = t - 1, eta = 1); a DDIM grid with fewer, longer jumps works the same.
    Resampling (section 4.2): every `jump_length` steps, go back up as many steps with the forward process,
        x_t ~ q(x_t | x_prev) = N( sqrt(a_t / a_prev) x_prev, (1 - a_t / a_prev) I ),
    and step down again, `resamplings` passes in all, so the generated part can adapt to the known part.

    SDEdit (Meng et al. 2022, section 3): noise a guide image to level t0, x_{t0} = q_sample(guide, t0),
    and denoise it with DDIM steps from t0 to the end. Small t0 stays faithful to the guide; large t0
    gives a realistic digit that resembles the guide less (at t0 = T-1 it is nearly a fresh sample).
"""
from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .diffusion import EpsModel, check_x, draw_noise, q_sample
from .samplers import _check_eta, _ddim_step, _ddim_steps, _run, _start, ddim_timesteps
from .schedules import NoiseSchedule, _check_int

RANGE_TOLERANCE = 1e-3
SDEDIT_STEP_DENSITY = 50  # default SDEdit grid: as dense as ddim_sample with 50 steps over all T


def _check_image(x, name: str, schedule: NoiseSchedule) -> None:
    check_x(x, name, schedule)
    peak = x.abs().max().item() if x.numel() else 0.0
    if peak > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{name} must lie in the data range [-1, 1], got values up to {peak:.4g}; images in "
                         f"[0, 1] become {name} * 2 - 1, pixels in [0, 255] become {name} / 127.5 - 1.")


def _check_mask(known, x0: Tensor) -> Tensor:
    """`known` as a float 0/1 tensor broadcastable to x0, or a ValueError/TypeError naming the fix.

    Accepted: a bool tensor, or a numeric one holding only 0 and 1, of shape x0.shape, or x0.shape
    without the batch dimension (one mask for every image), on x0's device.
    """
    if not isinstance(known, Tensor) or known.is_complex():
        raise TypeError(f"known must be a bool or 0/1 tensor, 1 where x0 is kept, got {type(known).__name__}.")
    if tuple(known.shape) not in (tuple(x0.shape), tuple(x0.shape[1:])):
        raise ValueError(f"known must have the shape of x0, {tuple(x0.shape)}, or of one image, "
                         f"{tuple(x0.shape[1:])}, got {tuple(known.shape)}.")
    if known.device != x0.device:
        raise ValueError(f"known is on {known.device} but x0 is on {x0.device}; move it with .to(x0.device).")
    if known.dtype != torch.bool and not bool(((known == 0) | (known == 1)).all()):
        raise ValueError(f"known must hold only 0 and 1 (1 = keep the pixel), got values from "
                         f"{known.min().item():.3g} to {known.max().item():.3g}; threshold it, e.g. known > 0.5.")
    return known.to(x0.dtype)


def repaint_timesteps(T: int, steps: int, jump_length: int = 5, resamplings: int = 1) -> list[int]:
    """The timesteps inpaint visits, from T-1 to the end (-1), going down the grid ddim_timesteps(T, steps)
    and, every `jump_length` grid steps, back up `jump_length` grid steps, `resamplings - 1` times
    (RePaint's schedule, with its t counting grid positions). resamplings=1: the plain grid, then -1.
    E.g. repaint_timesteps(1000, 4, jump_length=2, resamplings=2) == [999, 666, 333, 0, 333, 666, 333, 0, -1].
    """
    steps = _check_int(steps, "steps", 1)
    jump_length = _check_int(jump_length, "jump_length", 1)
    resamplings = _check_int(resamplings, "resamplings", 1)
    if resamplings > 1 and jump_length >= steps:
        raise ValueError(f"jump_length={jump_length} must be smaller than steps={steps} for resampling to "
                         f"jump back at all; use a shorter jump or more steps.")
    grid = ddim_timesteps(T, steps) + [-1]             # position p = steps - 1 - i holds grid[i]; p = -1: the end
    jumps = {p: resamplings - 1 for p in range(0, steps - jump_length, jump_length)}
    p, path = steps - 1, [steps - 1]
    while p >= 0:
        p -= 1
        path.append(p)
        if jumps.get(p, 0) > 0:
            jumps[p] -= 1
            path += list(range(p + 1, p + jump_length + 1))
            p += jump_length
    return [grid[steps - 1 - p] for p in path]


def _renoise(x_prev: Tensor, t_prev: int, t: int, schedule: NoiseSchedule, generator) -> Tensor:
    """x_t ~ q(x_t | x_prev) = N(sqrt(a_t / a_prev) x_prev, (1 - a_t / a_prev) I): the forward process from t_prev up to t."""
    ratio = (schedule.alpha_bars[t] / schedule.alpha_bars[t_prev]).to(x_prev.dtype)
    return ratio.sqrt() * x_prev + (1 - ratio).sqrt() * draw_noise(x_prev, generator)


@torch.no_grad()
def inpaint(model: EpsModel, x0: Tensor, known, schedule: NoiseSchedule, steps: int = 50, eta: float = 1.0,
            jump_length: int = 5, resamplings: int = 1, generator: torch.Generator | None = None,
            progress: bool = True) -> Tensor:
    """Fill the pixels of x0 where `known` is 0 so that they fit the kept ones (RePaint, module docstring).

    x0: (B, ...) in [-1, 1]; known: 0/1 (or bool) of x0's shape or of one image's shape. The DDIM grid
    has `steps` steps and `eta` sets its fresh noise (1: DDPM-like, as in RePaint); `resamplings` > 1
    adds RePaint's jumps back by `jump_length` grid steps (about `resamplings` times the model calls).
    The kept pixels come back exactly as in x0.
    """
    _check_image(x0, "x0", schedule)
    known = _check_mask(known, x0)
    eta = _check_eta(eta)
    path = repaint_timesteps(schedule.T, steps, jump_length, resamplings)
    x = _start(tuple(x0.shape), schedule, generator, None)
    for t, t_next in tqdm(list(zip(path, path[1:])), desc="inpainting", disable=not progress):
        if t_next > t:                                     # resampling: back up with the forward process
            x = _renoise(x, t, t_next, schedule, generator)
            continue
        x_unknown, _ = _ddim_step(model, x, t, t_next, schedule, eta, None, False, generator)
        x_known = q_sample(x0, t_next, schedule, generator=generator) if t_next >= 0 else x0
        x = known * x_known + (1 - known) * x_unknown
    return x


def sdedit(model: EpsModel, guide: Tensor, t0: int, schedule: NoiseSchedule, steps: int | None = None,
           eta: float = 1.0, generator: torch.Generator | None = None, progress: bool = True) -> Tensor:
    """SDEdit (Meng et al. 2022): x_{t0} = q_sample(guide, t0), then DDIM over ddim_timesteps(t0 + 1, steps).

    guide: (B, ...) in [-1, 1], e.g. a rough drawing or a blurred digit; t0: the code timestep to start
    from, 0 ... T-1 (Meng et al.'s t0 in [0, 1] is about (t0 + 1) / T). steps defaults to the density of a
    50-step DDIM run, round(50 (t0 + 1) / T) and at least 1. eta = 1 adds fresh noise at every step, like
    the stochastic sampler of the paper; eta = 0 is deterministic after the first noising.
    """
    _check_image(guide, "guide", schedule)
    t0 = _check_int(t0, "t0", 0)
    if t0 > schedule.T - 1:
        raise ValueError(f"t0 must be a code timestep in 0 ... {schedule.T - 1} (the noise level to start from; "
                         f"SDEdit's t0 in [0, 1] is about (t0 + 1) / T), got {t0}.")
    if steps is None:
        steps = max(1, round(SDEDIT_STEP_DENSITY * (t0 + 1) / schedule.T))
    if _check_int(steps, "steps", 1) > t0 + 1:
        raise ValueError(f"steps must be at most t0 + 1 = {t0 + 1} (one per timestep from t0 down to 0), got {steps}.")
    ts = ddim_timesteps(t0 + 1, steps)
    eta = _check_eta(eta)
    x = q_sample(guide, t0, schedule, generator=generator)
    return _run(_ddim_steps(model, x, schedule, ts, eta, generator, False, progress))
