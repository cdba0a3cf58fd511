"""The score view of a noise predictor, and the ideal denoiser of a finite training set.

For q(x_t | x0) = N(sqrt(a) x0, (1 - a) I), a = alpha_bar_t, the score of the noisy marginal p_t is
the average of the conditional scores -(x_t - sqrt(a) x0) / (1 - a) = -eps / sqrt(1 - a), hence

    grad log p_t(x_t) = -E[eps | x_t] / sqrt(1 - a)        and the best eps-model is
    eps*(x_t, t)      = E[eps | x_t] = -sqrt(1 - a) grad log p_t(x_t)      (Vincent 2011; Song et al. 2021b)

When the data are a finite set {x0_1, ..., x0_N} (a training set), p_t is a mixture of N Gaussians and
everything is exact, the "ideal denoiser" (the minimiser of L_simple over all functions):

    w_i(x_t)     = softmax_i( -||x_t - sqrt(a) x0_i||^2 / (2 (1 - a)) )        (posterior of "which point")
    E[x0 | x_t]  = sum_i w_i x0_i
    eps*(x_t, t) = (x_t - sqrt(a) E[x0 | x_t]) / sqrt(1 - a)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .diffusion import EpsModel, _coef, check_data, check_x
from .schedules import NoiseSchedule

CHUNK_ENTRIES = 2**22       # rows of x_t per chunk are chosen so that a chunk's (rows, N) matrix stays ~32 MB


def ideal_x0(x_t: Tensor, t, data: Tensor, schedule: NoiseSchedule) -> Tensor:
    """E[x0 | x_t] when x0 is one of the N rows of `data` (N, ...), each with probability 1/N.

    A softmax-weighted average of the data points, computed in float64 in chunks of x_t; the result has
    x_t's shape and dtype. At small t it is (nearly) the data point closest to x_t / sqrt(alpha_bar_t).
    """
    points = data.double().flatten(1)
    weights = (torch.softmax(logits, dim=1) for logits in _logit_chunks(x_t, t, data, schedule))
    return torch.cat([w @ points for w in weights]).reshape(x_t.shape).to(x_t.dtype)


def ideal_log_density(x_t: Tensor, t, data: Tensor, schedule: NoiseSchedule) -> Tensor:
    """log p_t(x_t), shape (B,), for the mixture p_t = 1/N sum_i N(sqrt(a) x0_i, (1 - a) I), in float64.
    Differentiable in x_t: its gradient is the exact score, which `ideal_eps` rescales."""
    mixture = torch.cat([torch.logsumexp(logits, dim=1) for logits in _logit_chunks(x_t, t, data, schedule)])
    a = _alpha_bar(x_t, t, schedule).flatten()
    n, d = data.shape[0], data[0].numel()
    return mixture - math.log(n) - 0.5 * d * torch.log(2 * math.pi * (1 - a))


def ideal_eps(data: Tensor, schedule: NoiseSchedule) -> EpsModel:
    """The exact minimiser of L_simple over a finite training set `data` (N, ...), as an eps_model:
    eps*(x_t, t) = (x_t - sqrt(a) E[x0 | x_t]) / sqrt(1 - a). Samplers driven by it return (nearly)
    training points: it knows the training set, not the distribution the set was drawn from."""
    check_x(data, "data", schedule)
    check_data(data, "data")

    def eps_model(x_t: Tensor, t: Tensor) -> Tensor:
        a = _alpha_bar(x_t, t, schedule).to(x_t.dtype)
        return (x_t - a.sqrt() * ideal_x0(x_t, t, data, schedule)) / (1 - a).sqrt()

    return eps_model


def score_from_eps(eps: Tensor, t, schedule: NoiseSchedule) -> Tensor:
    """The score an eps-prediction stands for: grad log p_t(x_t) = -eps / sqrt(1 - alpha_bar_t)."""
    check_x(eps, "eps", schedule)
    return -eps / (1 - _alpha_bar(eps, t, schedule).to(eps.dtype)).sqrt()


def _alpha_bar(x: Tensor, t, schedule: NoiseSchedule) -> Tensor:
    """alpha_bar_t per sample as float64 of shape (B, 1, ..., 1)."""
    t = schedule.check_timesteps(t, batch=x.shape[0])
    return NoiseSchedule.gather(schedule.alpha_bars, t, x.ndim).double()


def _logit_chunks(x_t: Tensor, t, data: Tensor, schedule: NoiseSchedule):
    """Yield the (rows, N) float64 logits -||x_t - sqrt(a) x0_i||^2 / (2 (1 - a)) for chunks of rows of x_t."""
    check_x(x_t, "x_t", schedule)
    check_x(data, "data", schedule)
    if data.shape[1:] != x_t.shape[1:]:
        raise ValueError(f"data must hold points of x_t's shape {tuple(x_t.shape[1:])}, got {tuple(data.shape[1:])}.")
    a = _alpha_bar(x_t, t, schedule).reshape(-1, 1)
    x, points = x_t.double().flatten(1), data.double().flatten(1)
    points_sq = points.square().sum(dim=1)
    rows = max(1, CHUNK_ENTRIES // points.shape[0])
    for start in range(0, x.shape[0], rows):
        xs, a_s = x[start:start + rows], a[start:start + rows]
        # ||x - sqrt(a) p||^2 = ||x||^2 + a ||p||^2 - 2 sqrt(a) x.p, without a (rows, N, D) tensor
        dist = xs.square().sum(dim=1, keepdim=True) + a_s * points_sq - 2 * a_s.sqrt() * xs @ points.T
        yield -dist / (2 * (1 - a_s))
