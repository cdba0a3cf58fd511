"""The forward (noising) process, its posterior, and the training loss L_simple.

Notation (Ho et al. 2020); code t = 0 ... T-1 is the paper's t = 1 ... T:

    q(x_t | x_{t-1})     = N(sqrt(alpha_t) x_{t-1}, beta_t I)                         (2)
    q(x_t | x_0)         = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)              (4)
    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t(x_t, x_0), beta_tilde_t I)                    (6), (7)
    x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)                       (15)
    L_simple = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2                         (14), Algorithm 1

A model is any callable `eps_model(x_t, t) -> eps`, called with t as a LongTensor of shape (B,).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .schedules import NoiseSchedule

EpsModel = Callable[[Tensor, Tensor], Tensor]

# Data live in [-1, 1]; noisy data overshoot a little (two moons with noise reach |x| ~ 1.2), so only
# |x0| > DATA_BOUND is taken for data that were never scaled (0-255 pixels, raw coordinates).
DATA_BOUND = 5.0


def check_x(x, name: str, schedule: NoiseSchedule) -> None:
    """Raise unless x is a floating-point batch (B, ...) on the schedule's device."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, ...), got {got}.")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have a batch dimension, shape (B, ...), got shape {tuple(x.shape)}; "
            f"use {name}[None] for a single sample."
        )
    schedule.check_device(x, name)


def check_data(x0: Tensor, name: str = "x0") -> None:
    """Raise unless x0 looks like data scaled to [-1, 1]: finite, and |x0| <= DATA_BOUND everywhere.

    Only clean data are checked: x_t, x_T and predicted x0 are unbounded and never pass through here.
    """
    if bool((x0.abs() <= DATA_BOUND).all()):           # one reduction; False for NaN and inf as well
        return
    bad = int((~torch.isfinite(x0)).sum())
    if bad:
        raise ValueError(f"{name} holds {bad} NaN or infinite values; find where they come from (the data "
                         f"loading, a division by zero) before adding noise.")
    raise ValueError(
        f"{name} must be data scaled to [-1, 1] (|{name}| up to {DATA_BOUND:g} is accepted), got values in "
        f"[{x0.min().item():.4g}, {x0.max().item():.4g}]. Rescale it first: x / 127.5 - 1 for 0-255 "
        f"pixels, 2 * x - 1 for data in [0, 1]."
    )


def check_model_schedule(model: EpsModel, schedule: NoiseSchedule) -> None:
    """Raise unless a model that converts its output with a schedule (UNet(prediction="x0")) was built
    with this one: with another, the eps it returns would belong to a different forward process."""
    config = getattr(model, "config", None)
    own = config.get("schedule") if isinstance(config, dict) else None
    if own is not None and own != schedule.config:
        raise ValueError(f"the model converts x0 to eps with the schedule {own}, but the schedule here is "
                         f"{schedule.config}; build the model with schedule=this schedule (or use the schedule "
                         "that load_checkpoint returns with it)")


def check_like(other, x: Tensor, name: str) -> None:
    """Raise unless `other` (noise, eps, a model output) is a tensor of x's shape and device."""
    if not isinstance(other, Tensor):
        raise TypeError(f"{name} must be a tensor of shape {tuple(x.shape)}, got {type(other).__name__}.")
    if other.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x, {tuple(x.shape)}, got {tuple(other.shape)}.")
    if other.device != x.device:
        raise ValueError(f"{name} is on {other.device} but x is on {x.device}; move it with .to(x.device).")


def draw_noise(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device (the CPU by default)
    and then moved to x's device, so that a seed gives the same numbers on CPU and GPU."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(x.shape, generator=generator, device=source, dtype=x.dtype).to(x.device)


def _coef(values: Tensor, t: Tensor, x: Tensor) -> Tensor:
    return NoiseSchedule.gather(values, t, x.ndim).to(x.dtype)


def q_step(x_prev: Tensor, t, schedule: NoiseSchedule, noise: Tensor | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """One Markov step of the forward process: sample q(x_t | x_{t-1}).

    x_t = sqrt(1 - beta_t) * x_{t-1} + sqrt(beta_t) * eps                      (2) in Ho et al. 2020
    With t = 0, x_prev is the clean data x_0 (paper step 1).
    """
    check_x(x_prev, "x_prev", schedule)
    t = schedule.check_timesteps(t, batch=x_prev.shape[0])
    noise = draw_noise(x_prev, generator) if noise is None else noise
    check_like(noise, x_prev, "noise")
    beta = _coef(schedule.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def q_sample(x0: Tensor, t, schedule: NoiseSchedule, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Jump straight to step t of the forward process: sample q(x_t | x_0).

    x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps                  (4) in Ho et al. 2020
    x0 must be data in [-1, 1]: NaN, inf or |x0| > DATA_BOUND raise a ValueError naming the fix.
    """
    check_x(x0, "x0", schedule)
    check_data(x0)
    t = schedule.check_timesteps(t, batch=x0.shape[0])
    noise = draw_noise(x0, generator) if noise is None else noise
    check_like(noise, x0, "noise")
    a = _coef(schedule.alpha_bars, t, x0)                  # (B, 1, ...) for broadcasting
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def q_posterior(x0: Tensor, x_t: Tensor, t, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """Mean and variance of the forward-process posterior q(x_{t-1} | x_t, x_0).

    mu_tilde_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) * x0
                 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * x_t  (7) in Ho et al. 2020
    beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)               (7)
    The variance comes back with shape (B, 1, ..., 1); at t = 0 the mean is x0 and the variance 0.
    """
    check_x(x_t, "x_t", schedule)
    check_like(x0, x_t, "x0")
    t = schedule.check_timesteps(t, batch=x_t.shape[0])
    mean = _coef(schedule.posterior_mean_coef_x0, t, x_t) * x0 \
        + _coef(schedule.posterior_mean_coef_xt, t, x_t) * x_t
    return mean, _coef(schedule.posterior_variance, t, x_t)


def predict_x0(x_t: Tensor, t, eps: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The x0 implied by x_t and a noise estimate: eq. (4) solved for x0.

    x0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)                 (15) in Ho et al. 2020
    """
    check_x(x_t, "x_t", schedule)
    check_like(eps, x_t, "eps")
    t = schedule.check_timesteps(t, batch=x_t.shape[0])
    a = _coef(schedule.alpha_bars, t, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def loss_simple(model: EpsModel, x0: Tensor, schedule: NoiseSchedule, t=None,
                noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """L_simple, Algorithm 1 of Ho et al. 2020: the mean squared error between the noise and the
    model's estimate of it, || eps - eps_theta(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ||^2.

    t ~ Uniform{0, ..., T-1} per sample and eps ~ N(0, I) unless given; returns a scalar tensor
    (mean over the batch and all dimensions) that keeps the graph for backward(). x0 is checked
    by q_sample: data in [-1, 1], or a ValueError naming the fix.
    """
    check_x(x0, "x0", schedule)
    check_model_schedule(model, schedule)
    batch = x0.shape[0]
    if t is None:
        source = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, schedule.T, (batch,), generator=generator, device=source)
    t = schedule.check_timesteps(t, batch=batch)
    noise = draw_noise(x0, generator) if noise is None else noise
    check_like(noise, x0, "noise")
    x_t = q_sample(x0, t, schedule, noise=noise)
    eps_pred = model(x_t, t)
    check_like(eps_pred, x0, "the model output")
    return F.mse_loss(eps_pred, noise)


def optimal_eps_gaussian(sigma: float, schedule: NoiseSchedule) -> EpsModel:
    """The exact minimiser of L_simple when the data are x0 ~ N(0, sigma^2 I): an oracle eps_model.

    x_t = sqrt(a) x0 + sqrt(1 - a) eps (a = alpha_bar_t) is Gaussian with variance a sigma^2 + 1 - a,
    and Cov(eps, x_t) = sqrt(1 - a), so the best estimate (the posterior mean) is linear:
        eps*(x_t, t) = E[eps | x_t] = sqrt(1 - a) x_t / (a sigma^2 + 1 - a).
    Sampling with it should return samples with standard deviation sigma: no training needed.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}.")
    sigma = float(sigma)

    def eps_model(x_t: Tensor, t: Tensor) -> Tensor:
        t = schedule.check_timesteps(t, batch=x_t.shape[0])
        a = _coef(schedule.alpha_bars, t, x_t)
        return (1 - a).sqrt() * x_t / (a * sigma**2 + 1 - a)

    return eps_model


def optimal_eps_point(x0: Tensor, schedule: NoiseSchedule) -> EpsModel:
    """The exact noise oracle when the whole data set is the single point x0 (shape (1, ...) or
    (B, ...) to match the batch): eps*(x_t, t) = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t).
    Deterministic samplers driven by it must return x0 exactly (up to rounding)."""
    check_x(x0, "x0", schedule)

    def eps_model(x_t: Tensor, t: Tensor) -> Tensor:
        t = schedule.check_timesteps(t, batch=x_t.shape[0])
        a = _coef(schedule.alpha_bars, t, x_t)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    return eps_model
