"""Checks for the exercise notebook (06): each runs a student's function on small seeded cases
against the package's reference, prints ONE friendly verdict line and returns True or False.

Verdicts, in the order they are tried:
    "not implemented yet"                     the function still raises NotImplementedError
    "your function raised ValueError: ..."    any other exception, in one line (never a traceback)
    "returned list, expected a tensor ..."    wrong type; "shape is (B, 2), expected (B, 1, 28, 28)"
    "values differ at t = 999: did you use ᾱ_t or α_t? ..."   the result equals a known wrong
                                              variant (α_t for ᾱ_t, ᾱ_{t-1}, no square roots, the
                                              whole ε̂ subtracted, noise at t = 0, DDIM pairs off by one)
    "values differ at t = 500 (largest error 0.3): ..."       any other wrong value
    "passed"
Graders use the returned bool (or nbgrader's hidden `assert`s in the solutions notebook).
Notation as in `diffusion.py`: code t = 0 ... T-1 is the paper's 1 ... T; a = ᾱ_t = alpha_bars[t].
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .diffusion import loss_simple, optimal_eps_gaussian
from .models.embeddings import SinusoidalEmbedding, check_timesteps
from .samplers import ancestral_sample_progressive, ddim_step, naive_skip_timesteps, p_sample
from .schedules import NoiseSchedule

ATOL, RTOL = 1e-4, 1e-4
ALPHA = "did you use ᾱ_t or α_t? ᾱ_t = schedule.alpha_bars[t] is the product of all α_s up to t"
ROOTS = "did you forget the square roots? The coefficients are √ᾱ and √(1 − ᾱ), not ᾱ and 1 − ᾱ"


class _Verdict(Exception):
    """Raised inside a check to end it with one message."""


def _run(name: str, body) -> bool:
    """Run one check body, print `name: verdict` and return whether it passed."""
    try:
        message = body()
    except _Verdict as verdict:
        print(f"{name}: {verdict}")
        return False
    except Exception as err:  # a bug in the check itself, or a result it cannot handle
        print(f"{name}: could not check your result ({_one_line(err)})")
        return False
    print(f"{name}: {message}")
    return True


def _one_line(err: Exception, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}" if text else type(err).__name__


def _call(fn, *args):
    """Call the student's function; turn its exceptions into verdicts."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _Verdict("not implemented yet") from None
    except Exception as err:
        hint = ""
        if "must match the size of tensor" in str(err):
            hint = " (a per-sample coefficient of shape (B,) needs reshaping to (B, 1, ...) to broadcast)"
        raise _Verdict(f"your function raised {_one_line(err)}{hint}") from None


def _shape(shape, batch: int | None) -> str:
    dims = [str(d) for d in shape]
    if batch is not None and dims and shape[0] == batch:
        dims[0] = "B"
    return "()" if not dims else f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _expect_tensor(out, like: Tensor, batch: int | None, what: str = "a tensor") -> Tensor:
    """Type, shape and finiteness of a result; returns it as float32 on the CPU, detached."""
    if not isinstance(out, Tensor):
        raise _Verdict(f"returned {type(out).__name__}, expected {what} of shape {_shape(like.shape, batch)}")
    if out.shape != like.shape:
        raise _Verdict(f"shape is {_shape(out.shape, batch)}, expected {_shape(like.shape, batch)}")
    if not out.is_floating_point():
        raise _Verdict(f"dtype is {out.dtype}, expected a floating-point tensor")
    if not bool(torch.isfinite(out).all()):
        raise _Verdict("returned NaN or infinite values")
    return out.detach().float().cpu()


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), atol=ATOL, rtol=RTOL))


def _worst(out: Tensor, ref: Tensor, ts) -> tuple[int, float]:
    """The timestep of the sample (row) where out and ref differ most, and that difference."""
    err = (out - ref).abs().reshape(len(ts), -1).max(dim=1).values
    i = int(err.argmax())
    return int(ts[i]), float(err[i])


def _first_wrong(wrong: Tensor, ref: Tensor, ts) -> int:
    """The largest timestep (the first a sampler meets) at which a wrong variant differs from ref."""
    rows = [i for i in range(len(ts)) if not _close(wrong[i], ref[i])]
    return max(int(ts[i]) for i in rows) if rows else int(ts[0])


def _compare(out: Tensor, ref: Tensor, ts, variants, hint: str) -> None:
    """Raise a verdict unless out equals ref: name the first wrong variant that out equals.
    `ts` holds the timestep of each row (sample) of out, or is None (whole-run results)."""
    if _close(out, ref):
        return
    for wrong, message in variants:
        if wrong is not None and _close(out, wrong):
            where = "" if ts is None else f" at t = {_first_wrong(wrong, ref, ts)}"
            raise _Verdict(f"values differ{where}: {message}")
    if ts is None:
        raise _Verdict(f"values differ (largest error {(out - ref).abs().max():.3g}); {hint}")
    t, err = _worst(out, ref, ts)
    raise _Verdict(f"values differ at t = {t} (largest error {err:.3g}); {hint}")


def _randn(*shape, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _coefs(schedule: NoiseSchedule, t: Tensor, ndim: int) -> dict[str, Tensor]:
    names = ("alpha_bars", "alphas", "alpha_bars_prev", "betas", "posterior_variance")
    return {n: NoiseSchedule.gather(getattr(schedule, n), t, ndim) for n in names}


def _eps_model(schedule: NoiseSchedule, sigma: float = 0.5):
    """A model as strict as the real ones (t must be a tensor of shape (B,)), with exact outputs."""
    oracle = optimal_eps_gaussian(sigma, schedule)

    def eps_model(x_t: Tensor, t: Tensor) -> Tensor:
        return oracle(x_t, check_timesteps(t, batch=x_t.shape[0]))

    return eps_model


def _batches() -> list[tuple[Tensor, Tensor]]:
    """(x, t) cases: 4 points at t = 999, 500, 10, 0 and 2 images at t = 999, 50."""
    return [(_randn(4, 2, seed=1), torch.tensor([999, 500, 10, 0])),
            (_randn(2, 1, 28, 28, seed=2).clamp(-1, 1), torch.tensor([999, 50]))]


# ---------------------------------------------------------------------- 1 · q_sample
def check_q_sample(fn) -> bool:
    """fn(x0, t, schedule, noise) -> x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε   (eq. 4 of Ho et al. 2020)."""
    schedule = NoiseSchedule.linear(1000)

    def body():
        for x0, t in _batches():
            noise = _randn(*x0.shape, seed=3)
            ref = (c := _coefs(schedule, t, x0.ndim))["alpha_bars"].sqrt() * x0
            ref = ref + (1 - c["alpha_bars"]).sqrt() * noise
            out = _expect_tensor(_call(fn, x0.clone(), t.clone(), schedule, noise.clone()), ref, len(t))
            a, al, ap = c["alpha_bars"], c["alphas"], c["alpha_bars_prev"]
            _compare(out, ref, t, [
                (al.sqrt() * x0 + (1 - al).sqrt() * noise, ALPHA),
                (ap.sqrt() * x0 + (1 - ap).sqrt() * noise, "off by one: you used ᾱ_{t-1} (alpha_bars_prev); "
                 "code t already is the paper's t + 1, so take alpha_bars[t]"),
                (a * x0 + (1 - a) * noise, ROOTS), (a.sqrt() * x0 + (1 - a) * noise, ROOTS),
                (a * x0 + (1 - a).sqrt() * noise, ROOTS),
                ((1 - a).sqrt() * x0 + a.sqrt() * noise, "x0 and ε are swapped: the data get √ᾱ_t"),
            ], "compare with x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε")
        return "passed"

    return _run("q_sample", body)


# ---------------------------------------------------------------------- 2 · time embedding
def check_time_embedding(fn) -> bool:
    """fn(t, dim) -> (B, dim): [sin(t w_0) ... sin(t w_{h-1}), cos(t w_0) ... cos(t w_{h-1})],
    w_i = 10000^(-i/h), h = dim/2 (the package's SinusoidalEmbedding)."""

    def body():
        for t, dim in ((torch.tensor([1, 2, 3]), 4), (torch.tensor([0, 1, 17, 500, 999]), 16)):
            ref = SinusoidalEmbedding(dim)(t)
            out = _expect_tensor(_call(fn, t.clone(), dim), ref, len(t))
            half = dim // 2
            i = torch.arange(half, dtype=torch.float32)

            def angles(div, sign=-1.0):
                return t.float()[:, None] * torch.exp(sign * math.log(10_000) * i / div)[None, :]

            a = angles(half)
            _compare(out, ref, t, [
                (torch.cat([a.cos(), a.sin()], 1), "sines and cosines swapped: the first half is sin(t·w_i)"),
                (torch.stack([a.sin(), a.cos()], 2).flatten(1), "sines and cosines interleaved: put all "
                 "sines first, then all cosines (torch.cat along dim 1)"),
                (torch.cat([angles(dim).sin(), angles(dim).cos()], 1), "the exponent is -i / (dim/2), "
                 "not -i / dim: the slowest frequency must reach 1/10000"),
                (torch.cat([angles(half, 1.0).sin(), angles(half, 1.0).cos()], 1) if dim == 4 else None,
                 "the frequencies must fall, w_i = 10000^(-i/half): the exponent's sign is negative"),
            ], "compare with e(t) = [sin(t·w_i), cos(t·w_i)], w_i = 10000^(-i/half)")
        return "passed"

    return _run("time_embedding", body)


# ---------------------------------------------------------------------- 3 · training loss
class _TinyEps(nn.Module):
    """A fixed linear noise predictor for points that looks at t: eps = W [x_t, t/1000]."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        with torch.no_grad():
            self.lin.weight.copy_(_randn(2, 3, seed=4))
            self.lin.bias.copy_(_randn(2, seed=5))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = check_timesteps(t, batch=x_t.shape[0])
        return self.lin(torch.cat([x_t, t.float()[:, None] / 1000], dim=1))


def check_loss(fn) -> bool:
    """fn(model, x0, t, noise, schedule) -> the scalar mean of (ε − ε_θ(x_t, t))² (L_simple)."""
    schedule, model = NoiseSchedule.linear(1000), _TinyEps()
    x0, noise = _randn(8, 2, seed=6), _randn(8, 2, seed=7)
    t = torch.tensor([999, 700, 500, 300, 100, 50, 10, 0])

    def body():
        out = _call(fn, model, x0.clone(), t.clone(), noise.clone(), schedule)
        if not isinstance(out, Tensor):
            raise _Verdict(f"returned {type(out).__name__}, expected a scalar tensor that keeps the graph "
                           "(do not call .item(): training needs loss.backward())")
        if out.ndim != 0:
            raise _Verdict(f"shape is {_shape(out.shape, 8)}, expected a scalar (): average over the batch "
                           "and all dimensions (F.mse_loss does)")
        if not out.requires_grad:
            raise _Verdict("the loss has no gradient: do not detach it or build it from .item() values")
        with torch.no_grad():
            ref = loss_simple(model, x0, schedule, t=t, noise=noise)
            c = _coefs(schedule, t, 2)
            jump = lambda a, b: model(a * x0 + b * noise, t)  # noqa: E731
            a, al = c["alpha_bars"], c["alphas"]
            pred = jump(a.sqrt(), (1 - a).sqrt())
            variants = [
                (F.mse_loss(pred, x0), "you compared the prediction with x0: L_simple compares it with the noise ε"),
                (F.mse_loss(model(x0, t), noise), "you fed x0 to the model: it must see the noisy x_t"),
                (((pred - noise) ** 2).sum(), "that is the sum of the squares: take the mean (F.mse_loss)"),
                (((pred - noise) ** 2).sum(1).mean(), "you summed over the dimensions: take the mean over all entries"),
                (F.mse_loss(jump(al.sqrt(), (1 - al).sqrt()), noise), ALPHA),
                (F.mse_loss(jump(a, 1 - a), noise), ROOTS),
            ]
        value = out.detach().float()
        if _close(value, ref):
            return "passed"
        for wrong, message in variants:
            if _close(value, wrong):
                raise _Verdict(message)
        raise _Verdict(f"the loss is {value.item():.5g}, expected {ref.item():.5g}; compare with "
                       "mean((ε − ε_θ(√ᾱ_t x0 + √(1 − ᾱ_t) ε, t))²)")

    return _run("loss", body)


# ---------------------------------------------------------------------- 4 · ancestral step
def check_ancestral_step(fn) -> bool:
    """fn(model, x_t, t, schedule, noise) -> x_{t-1} = (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t + σ_t z, with
    σ_t² = β̃_t (or β_t), and no noise at t = 0   (Algorithm 2 and eq. 11 of Ho et al. 2020)."""
    schedule = NoiseSchedule.linear(1000)
    model = _eps_model(schedule)
    cases = [(_randn(4, 2, seed=8), t) for t in (999, 500, 10, 0)] + [(_randn(2, 1, 28, 28, seed=9), 300)]
    whole = ("you subtract the whole predicted noise ε̂: one step removes only β_t / √(1 − ᾱ_t) · ε̂ "
             "of it (see the hint)")

    def body():
        beta_variance = True
        for x_t, t in cases:
            noise = _randn(*x_t.shape, seed=10 + t)
            ts = [t] * x_t.shape[0]
            ref = p_sample(model, x_t, t, schedule, noise=noise)
            out = _expect_tensor(_call(fn, model, x_t.clone(), t, schedule, noise.clone()), ref, len(x_t))
            c = _coefs(schedule, torch.full((len(x_t),), t), x_t.ndim)
            a, al, b, var = c["alpha_bars"], c["alphas"], c["betas"], c["posterior_variance"]
            eps = model(x_t, torch.full((len(x_t),), t))
            mean = (x_t - b / (1 - a).sqrt() * eps) / al.sqrt()
            beta_ref = mean + (b.sqrt() * noise if t > 0 else 0)
            beta_variance = beta_variance and _close(out, beta_ref)
            if beta_variance:
                continue
            _compare(out, ref, ts, [
                ((x_t - eps) / al.sqrt() + var.sqrt() * noise, whole), (x_t - eps + var.sqrt() * noise, whole),
                ((x_t - b / (1 - a).sqrt() * eps) / a.sqrt() + var.sqrt() * noise, ALPHA),
                ((x_t - b / (1 - al).sqrt() * eps) / al.sqrt() + var.sqrt() * noise, ALPHA),
                ((x_t - b / (1 - a) * eps) / al.sqrt() + var.sqrt() * noise, ROOTS),
                (mean + var * noise, "σ_t is the square root of the variance: add √β̃_t · z"),
                (mean + b.sqrt() * noise if t == 0 else None,
                 "noise was added at the last step: at t = 0 (paper t = 1) return the mean"),
                (mean if t > 0 else None, "you added no noise: x_{t-1} = mean + σ_t z for t > 0"),
            ], "compare with eq. (11): x_{t-1} = (x_t − β_t/√(1 − ᾱ_t) ε̂)/√α_t + σ_t z")
        if beta_variance:
            return "passed (with σ_t² = β_t, the paper's other choice; the package uses β̃_t)"
        return "passed"

    return _run("ancestral_step", body)


# ---------------------------------------------------------------------- 5 · DDIM step
def check_ddim_step(fn) -> bool:
    """fn(model, x_t, t, t_prev, schedule) -> x_{t_prev} = √ᾱ_prev x̂0 + √(1 − ᾱ_prev) ε̂ with
    x̂0 = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t and ᾱ_prev = 1 at t_prev = −1
    (eq. 12 of Song et al. 2021, η = 0)."""
    schedule = NoiseSchedule.linear(1000)
    model = _eps_model(schedule)
    pairs = [(999, 749), (500, 250), (10, 0), (0, -1), (200, 199)]
    cases = [(_randn(4, 2, seed=20 + i), t, tp) for i, (t, tp) in enumerate(pairs)]
    cases.append((_randn(2, 1, 28, 28, seed=30), 999, 499))
    A = schedule.alpha_bars

    def step(x_t, t, a_t, a_p, t_model=None, roots=True):
        eps = model(x_t, torch.full((len(x_t),), t if t_model is None else t_model))
        if not roots:
            return a_p * (x_t - (1 - a_t) * eps) / a_t + (1 - a_p) * eps
        return a_p.sqrt() * (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt() + (1 - a_p).sqrt() * eps

    def body():
        for x_t, t, t_prev in cases:
            ref = ddim_step(model, x_t, t, t_prev, schedule, eta=0.0)
            out = _expect_tensor(_call(fn, model, x_t.clone(), t, t_prev, schedule), ref, len(x_t))
            a_t, a_p = A[t], A[t_prev] if t_prev >= 0 else torch.tensor(1.0)
            _compare(out, ref, [t] * len(x_t), [
                (step(x_t, t, a_t, A[t_prev]) if t_prev < 0 else None, "at t_prev = −1 (the end) ᾱ_prev is 1: "
                 "alpha_bars[-1] is the LAST entry ᾱ_{T-1} ≈ 0, Python's negative indexing"),
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

    return _run("ddim_step", body)


# ---------------------------------------------------------------------- 6 · filmstrip
def check_filmstrip(fn) -> bool:
    """fn(steps, ts) -> {t: x_t} for each t in ts, from an iterable of SamplerStep(t, x_t, x0_pred, x_prev)."""
    schedule = NoiseSchedule.linear(20, 1e-3, 0.3)
    steps = list(ancestral_sample_progressive(_eps_model(schedule), (3, 2), schedule, progress=False,
                                              generator=torch.Generator().manual_seed(11)))
    ts = [19, 12, 5, 0]

    def body():
        out = _call(fn, iter(steps), list(ts))
        if not isinstance(out, Mapping):
            raise _Verdict(f"returned {type(out).__name__}, expected a dict {{t: x_t}}")
        got = {int(k): v for k, v in out.items()}
        missing, extra = [t for t in ts if t not in got], sorted(set(got) - set(ts), reverse=True)
        if missing:
            raise _Verdict(f"t = {missing[0]} is missing: keep x_t of every step whose step.t is in ts")
        if extra:
            raise _Verdict(f"holds t = {extra[0]}, which was not asked for: keep only the timesteps in ts")
        by_t = {s.t: s for s in steps}
        for t in ts:
            x = _expect_tensor(got[t], by_t[t].x_t, 3)
            if _close(x, by_t[t].x_t):
                continue
            if _close(x, by_t[t].x_prev):
                raise _Verdict(f"frame t = {t} is step.x_prev, the sample after the step; the column "
                               "'t' shows step.x_t, the sample the model saw at t")
            if _close(x, by_t[t].x0_pred):
                raise _Verdict(f"frame t = {t} is step.x0_pred, the model's guess of x0; show step.x_t")
            raise _Verdict(f"frame t = {t} is not the x_t of the step with step.t == {t}")
        return "passed"

    return _run("filmstrip", body)


# ---------------------------------------------------------------------- 7 · signal lost per step
def check_signal_loss(fn) -> bool:
    """fn(schedule) -> (T,): r_t = √ᾱ_{t-1} − √ᾱ_t, the share of x0 lost at step t (ᾱ_{-1} = 1)."""

    def body():
        for schedule in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(50)):
            a, ap = schedule.alpha_bars, schedule.alpha_bars_prev
            ref = ap.sqrt() - a.sqrt()
            out = _call(fn, schedule)
            if isinstance(out, Tensor) and out.shape == (schedule.T - 1,):
                raise _Verdict(f"shape is ({schedule.T - 1},), expected ({schedule.T},): step t = 0 loses "
                               "1 − √ᾱ_0 too (ᾱ before the first step is 1: schedule.alpha_bars_prev)")
            out = _expect_tensor(out, ref, None)
            ts = list(range(schedule.T))
            _compare(out[:, None], ref[:, None], ts, [
                ((ap - a)[:, None], "did you forget the square roots? The signal is √ᾱ_t · x0: "
                 "measure the drop of √ᾱ_t"),
                ((a.sqrt() - ap.sqrt())[:, None], "the sign is flipped: the signal LOST is "
                 "√ᾱ_{t-1} − √ᾱ_t ≥ 0"),
                ((1 - a.sqrt())[:, None], "that is the signal lost from 0 up to t; asked is the loss of step t alone"),
                (schedule.betas[:, None], "that is β_t, the noise variance added at step t, not the signal lost"),
            ], "compare with r_t = √ᾱ_{t-1} − √ᾱ_t")
        return "passed"

    return _run("signal_loss", body)


# ---------------------------------------------------------------------- 8 · noisy copies of one image
def check_noisy_copies(fn) -> bool:
    """fn(x0, ts, schedule, n_draws, generator) -> (len(ts), n_draws, C, H, W): n_draws independent
    samples of q(x_t | x0) for each t; checked through their statistics (mean √ᾱ_t x0, variance 1 − ᾱ_t)."""
    schedule, ts, n = NoiseSchedule.linear(1000), [0, 50, 200, 500, 999], 200
    grid = torch.linspace(-1, 1, 28)
    x0 = (torch.sin(3 * grid)[:, None] * torch.cos(2 * grid)[None, :]).reshape(1, 1, 28, 28)
    # statistics cannot tell ᾱ_{t-1} from ᾱ_t (they differ by a factor α_t ≈ 0.99): check_q_sample does
    candidates = [("alpha_bars", True, None), ("alphas", True, ALPHA), ("alpha_bars", False, ROOTS)]

    def body():
        out = _call(fn, x0.clone(), list(ts), schedule, n, torch.Generator().manual_seed(12))
        out = _expect_tensor(out, torch.empty(len(ts), n, 1, 28, 28), None)
        if bool((out.std(dim=1) < 1e-6).all()):
            raise _Verdict("all draws are identical: draw fresh noise for every copy")
        flat, target = out.reshape(len(ts), n, -1), x0.reshape(-1)
        signal = flat.mean(dim=1) @ target / (target @ target)     # fitted coefficient of x0, per t
        variance = flat.var(dim=1).mean(dim=1)                      # mean over pixels, per t
        for name, roots, message in candidates:
            a = getattr(schedule, name)[ts]
            want_signal, want_var = (a.sqrt(), 1 - a) if roots else (a, (1 - a) ** 2)
            fits = ((signal - want_signal).abs() < 0.03) & ((variance - want_var).abs() < 0.02 + 0.05 * want_var)
            if bool(fits.all()):
                if message is None:
                    return "passed"
                bad = int((want_var - (1 - schedule.alpha_bars[ts])).abs().argmax())
                raise _Verdict(f"values differ at t = {ts[bad]}: {message}")
        a = schedule.alpha_bars[ts]
        bad = int(((variance - (1 - a)).abs() + (signal - a.sqrt()).abs()).argmax())
        raise _Verdict(f"at t = {ts[bad]} the copies have mean {signal[bad]:.3f}·x0 and variance "
                       f"{variance[bad]:.3f}, expected {a[bad].sqrt():.3f}·x0 and {1 - a[bad]:.3f}")

    return _run("noisy_copies", body)


# ---------------------------------------------------------------------- 9 · DDIM with k-step skips
def check_skip_ddim(fn) -> bool:
    """fn(model, x_T, schedule, k) -> x_0 by deterministic DDIM over the pairs (t, next t) of
    naive_skip_timesteps(T, k) = T-1, T-1-k, ..., 0, the last pair (0, -1)."""
    schedule = NoiseSchedule.linear(1000)
    model = _eps_model(schedule)
    x_T = _randn(4, 2, seed=13)

    def run(ts, pairs=None):
        x = x_T
        for t, t_prev in pairs or zip(ts, ts[1:] + [-1]):
            x = ddim_step(model, x, t, t_prev, schedule)
        return x

    def body():
        for k in (300, 100):
            ts = naive_skip_timesteps(schedule.T, k)
            ref = run(ts)
            out = _expect_tensor(_call(fn, model, x_T.clone(), schedule, k), ref, 4)
            no_zero = list(range(schedule.T - 1, -1, -k))
            _compare(out, ref, None, [
                (run(ts, zip(ts[:-1], ts[1:])), "the last pair (0, −1) is missing: without it the sample "
                 "keeps the noise of ᾱ_0; step from t = 0 to t_prev = −1 (ᾱ = 1)"),
                (run(ts, [(t, t - 1) for t in ts]), "t off by one in the DDIM pairs: step from each visited t "
                 "to the NEXT visited one (t − k), not to t − 1 (that is the naive skipping)"),
                (run(no_zero) if no_zero[-1] != 0 else None, "visit t = 0 last, as naive_skip_timesteps(T, k) "
                 "does: range(T - 1, -1, -k) can stop short of it"),
            ], "compare with x = ddim_step(model, x, t, t_prev, schedule) over the pairs of naive_skip_timesteps(T, k)")
        return "passed"

    return _run("skip_ddim", body)
