"""Checks of the sampling exercises: one ancestral step with x̂0 clipped, one DDIM step driven by
an x0-predicting model, a filmstrip from a progressive run, DDIM over k-step skips.

The models here are exact oracles (`optimal_eps_gaussian`: the best possible noise predictor for
Gaussian data), as strict about t as the real networks, so every expected value is exact.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..diffusion import optimal_eps_gaussian
from ..models.embeddings import check_timesteps
from ..samplers import (_ddim_step, _ddim_steps, _p_step, ancestral_sample_progressive, ddim_sample,
                        ddim_sample_progressive, ddim_step, naive_skip_timesteps, p_sample)
from ..schedules import NoiseSchedule
from ..viz import as_trajectory, collect_trajectory
from .verdicts import ALPHA, ROOTS, Verdict, call, close, code_objects, coefs, compare, expect_tensor, randn, run_check

STEP_CODE = code_objects({"ddpm_helpers.p_sample": [p_sample, _p_step], "ddpm_helpers.ddim_step": [ddim_step, _ddim_step]})


def _eps_model(schedule: NoiseSchedule, sigma: float):
    """The exact noise predictor for data x0 ~ N(0, sigma² I), strict about t: a tensor (B,)."""
    oracle = optimal_eps_gaussian(sigma, schedule)

    def eps_model(x_t: Tensor, t: Tensor) -> Tensor:
        return oracle(x_t, check_timesteps(t, batch=x_t.shape[0]))

    return eps_model


def _x0_model(schedule: NoiseSchedule, sigma: float):
    """The exact x0 predictor for the same data: E[x0 | x_t] = √a σ² x_t / (a σ² + 1 − a)."""

    def x0_model(x_t: Tensor, t: Tensor) -> Tensor:
        t = check_timesteps(t, batch=x_t.shape[0])
        a = NoiseSchedule.gather(schedule.alpha_bars, t, x_t.ndim)
        return a.sqrt() * sigma**2 * x_t / (a * sigma**2 + 1 - a)

    return x0_model


# ---------------------------------------------------------------------- 6 · ancestral step, x̂0 clipped
def check_ancestral_step(fn) -> bool:
    """fn(model, x_t, t, schedule, noise) -> x_{t-1} = μ̃_t(x_t, x̂0) + σ_t z with x̂0 from eq. (15)
    clipped to [-1, 1], μ̃ of eq. (7), σ_t² = β̃_t (or β_t) and no noise at t = 0 (p_sample, clip_x0=True)."""
    schedule = NoiseSchedule.linear(1000)
    model = _eps_model(schedule, sigma=2.0)  # wide data: x̂0 often leaves [-1, 1] below t ≈ 600
    cases = [(1.5 * randn(6, 2, seed=8), t) for t in (999, 500, 10, 0)] + [(randn(2, 1, 28, 28, seed=9), 300)]

    def body():
        beta_variance = True
        for x_t, t in cases:
            noise, b = randn(*x_t.shape, seed=10 + t), len(x_t)
            ref = p_sample(model, x_t, t, schedule, noise=noise, clip_x0=True)
            out = expect_tensor(call(fn, model, x_t.clone(), t, schedule, noise.clone(), delegates=STEP_CODE), ref, b)
            beta_variance = beta_variance and close(out, p_sample(model, x_t, t, schedule, noise=noise, clip_x0=True,
                                                                   variance="beta"))
            if beta_variance:
                continue
            c = coefs(schedule, torch.full((b,), t), x_t.ndim)
            a, al, bt, var = c["alpha_bars"], c["alphas"], c["betas"], c["posterior_variance"]
            eps = model(x_t, torch.full((b,), t))
            x0 = ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            mean = (c["alpha_bars_prev"].sqrt() * bt * x0 + al.sqrt() * (1 - c["alpha_bars_prev"]) * x_t) / (1 - a)
            compare(out, ref, [t] * b, [
                (p_sample(model, x_t, t, schedule, noise=noise), "x̂0 was not clipped: clamp it to [−1, 1] "
                 "(the data range) before it enters the posterior mean"),
                (p_sample(model, x_t, t, schedule, noise=noise).clamp(-1, 1), "you clipped x_{t−1}; clip x̂0, "
                 "the estimate of the data, and leave the noisy sample as it is"),
                ((x_t - eps) / al.sqrt() + var.sqrt() * noise, "you subtract the whole predicted noise ε̂: go "
                 "through x̂0 and the posterior mean (see the hint)"),
                (mean + var * noise, "σ_t is the square root of the variance: add √β̃_t · z"),
                (mean + bt.sqrt() * noise if t == 0 else None,
                 "noise was added at the last step: at t = 0 (paper t = 1) return the mean"),
                (mean if t > 0 else None, "you added no noise: x_{t-1} = mean + σ_t z for t > 0"),
                (((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1) if t > 0 else None,
                 "you returned the clipped x̂0: the step goes to the posterior mean between x̂0 and x_t"),
            ], "compare with x_{t-1} = μ̃_t(x_t, clip(x̂0)) + σ_t z, μ̃ of eq. (7)")
        if beta_variance:
            return "passed (with σ_t² = β_t, the paper's other choice; the package uses β̃_t)"
        return "passed"

    return run_check("ancestral_step", body)


# ---------------------------------------------------------------------- 7 · DDIM step, x0-predicting model
def check_ddim_step(fn) -> bool:
    """fn(x0_model, x_t, t, t_prev, schedule) -> x_{t_prev} = √ᾱ_prev x̂0 + √(1 − ᾱ_prev) ε̂ with
    x̂0 = x0_model(x_t, t), ε̂ = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t) and ᾱ_prev = 1 at t_prev = −1
    (eq. 12 of Song et al. 2021, η = 0)."""
    schedule = NoiseSchedule.linear(1000)
    eps_model, x0_model = _eps_model(schedule, 0.5), _x0_model(schedule, 0.5)
    pairs = [(999, 749), (500, 250), (10, 0), (0, -1), (200, 199)]
    cases = [(randn(4, 2, seed=20 + i), t, tp) for i, (t, tp) in enumerate(pairs)]
    cases.append((randn(2, 1, 28, 28, seed=30), 999, 499))
    A = schedule.alpha_bars
    delegates = code_objects({"ddpm_helpers.ddim_step": [ddim_step, _ddim_step]})

    def step(x_t, t, a_t, a_p, t_model=None, roots=True, eps_is_output=False, direction=True):
        x0 = x0_model(x_t, torch.full((len(x_t),), t if t_model is None else t_model))
        eps = x0 if eps_is_output else (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        if eps_is_output:
            x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if not roots:
            return a_p * x0 + (1 - a_p) * eps
        return a_p.sqrt() * x0 + ((1 - a_p).sqrt() * eps if direction else 0)

    def body():
        for x_t, t, t_prev in cases:
            ref = ddim_step(eps_model, x_t, t, t_prev, schedule, eta=0.0)
            out = expect_tensor(call(fn, x0_model, x_t.clone(), t, t_prev, schedule, delegates=delegates), ref, len(x_t))
            a_t, a_p = A[t], A[t_prev] if t_prev >= 0 else torch.tensor(1.0)
            compare(out, ref, [t] * len(x_t), [
                (step(x_t, t, a_t, a_p, eps_is_output=True), "this model predicts x̂0, not ε̂: get ε̂ from "
                 "eq. (4), ε̂ = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t)"),
                (step(x_t, t, a_t, A[t_prev]) if t_prev < 0 else None, "at t_prev = −1 (the end) ᾱ_prev is 1: "
                 "alpha_bars[-1] is the LAST entry ᾱ_{T-1} ≈ 0, Python's negative indexing"),
                (step(x_t, t, a_t, a_p, direction=False) if t_prev >= 0 else None, "the noise part √(1 − ᾱ_prev) ε̂ "
                 "is missing: DDIM puts x̂0 back at the noise level of t_prev"),
                (step(x_t, t, a_t, schedule.alpha_bars_prev[t]) if t_prev != t - 1 else None, "t off by one "
                 "in the DDIM pair: you stepped to t − 1; use ᾱ of t_prev, the next timestep of the pair"),
                (step(x_t, t, a_t, schedule.alpha_bars_prev[t_prev]) if t_prev >= 0 else None, "t off by one "
                 "in the DDIM pair: ᾱ_prev is alpha_bars[t_prev], not alpha_bars_prev[t_prev]"),
                (step(x_t, t, a_t, a_p, t_model=t_prev) if t_prev >= 0 else None, "t off by one in the DDIM "
                 "pair: evaluate the model at t (where x_t lives), not at t_prev"),
                (step(x_t, t, schedule.alphas[t], schedule.alphas[t_prev] if t_prev >= 0 else a_p), ALPHA),
                (step(x_t, t, a_t, a_p, roots=False), ROOTS),
            ], "compare with eq. (12): x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev) ε̂")
        return "passed"

    return run_check("ddim_step", body)


# ---------------------------------------------------------------------- 8 · filmstrip
def check_filmstrip(fn) -> bool:
    """fn(steps, ts) -> {t: x_t} for each t in ts, from an iterable of SamplerStep(t, x_t, x0_pred, x_prev)."""
    schedule = NoiseSchedule.linear(20, 1e-3, 0.3)
    steps = list(ancestral_sample_progressive(_eps_model(schedule, 0.5), (3, 2), schedule, progress=False,
                                              generator=torch.Generator().manual_seed(11)))
    ts = [19, 12, 5, 0]
    delegates = code_objects({"ddpm_helpers.collect_trajectory": [collect_trajectory, as_trajectory]})

    def body():
        out = call(fn, iter(steps), list(ts), delegates=delegates)
        if not isinstance(out, Mapping):
            raise Verdict(f"returned {type(out).__name__}, expected a dict {{t: x_t}}")
        got = {int(k): v for k, v in out.items()}
        missing, extra = [t for t in ts if t not in got], sorted(set(got) - set(ts), reverse=True)
        if missing:
            raise Verdict(f"t = {missing[0]} is missing: keep x_t of every step whose step.t is in ts")
        if extra:
            raise Verdict(f"holds t = {extra[0]}, which was not asked for: keep only the timesteps in ts")
        by_t = {s.t: s for s in steps}
        for t in ts:
            x = expect_tensor(got[t], by_t[t].x_t, 3)
            if close(x, by_t[t].x_t):
                continue
            if close(x, by_t[t].x_prev):
                raise Verdict(f"frame t = {t} is step.x_prev, the sample after the step; the column "
                              "'t' shows step.x_t, the sample the model saw at t")
            if close(x, by_t[t].x0_pred):
                raise Verdict(f"frame t = {t} is step.x0_pred, the model's guess of x0; show step.x_t")
            raise Verdict(f"frame t = {t} is not the x_t of the step with step.t == {t}")
        return "passed"

    return run_check("filmstrip", body)


# ---------------------------------------------------------------------- 11 · DDIM with k-step skips
def check_skip_ddim(fn) -> bool:
    """fn(model, x_T, schedule, k) -> x_0 by deterministic DDIM over the pairs (t, next t) of
    naive_skip_timesteps(T, k) = T-1, T-1-k, ..., 0, the last pair (0, -1)."""
    schedule = NoiseSchedule.linear(1000)
    model = _eps_model(schedule, 0.5)
    x_T = randn(4, 2, seed=13)
    delegates = code_objects({"ddpm_helpers.ddim_sample": [ddim_sample, ddim_sample_progressive, _ddim_steps]})

    def run(ts, pairs=None):
        x = x_T
        for t, t_prev in pairs or zip(ts, ts[1:] + [-1]):
            x = ddim_step(model, x, t, t_prev, schedule)
        return x

    def body():
        for k in (300, 100):
            ts = naive_skip_timesteps(schedule.T, k)
            ref = run(ts)
            out = expect_tensor(call(fn, model, x_T.clone(), schedule, k, delegates=delegates), ref, 4)
            no_zero = list(range(schedule.T - 1, -1, -k))
            compare(out, ref, None, [
                (run(ts, zip(ts[:-1], ts[1:])), "the last pair (0, −1) is missing: without it the sample "
                 "keeps the noise of ᾱ_0; step from t = 0 to t_prev = −1 (ᾱ = 1)"),
                (run(ts, [(t, t - 1) for t in ts]), "t off by one in the DDIM pairs: step from each visited t "
                 "to the NEXT visited one (t − k), not to t − 1 (that is the naive skipping)"),
                (run(no_zero) if no_zero[-1] != 0 else None, "visit t = 0 last, as naive_skip_timesteps(T, k) "
                 "does: range(T - 1, -1, -k) can stop short of it"),
            ], "compare with x = ddim_step(model, x, t, t_prev, schedule) over the pairs of naive_skip_timesteps(T, k)")
        return "passed"

    return run_check("skip_ddim", body)
