"""Checks of the forward-process exercises: the jump q(x_t | x_s), the time embedding, the loss of
each sample, the posterior of a jump q(x_s | x_t, x0), the signal lost per step, noisy copies.

Notation: code t = 0 ... T-1 is the paper's 1 ... T; s < t; s = -1 means "the clean data"
(ᾱ_{-1} = 1); a_t = ᾱ_t. References are computed here in float64, never by the student's code.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..diffusion import loss_simple, q_posterior, q_sample, q_step
from ..models.embeddings import SinusoidalEmbedding, check_timesteps
from ..samplers import _ddim_step, _p_step, ddim_step, p_sample
from ..schedules import NoiseSchedule
from .verdicts import (ALPHA, END, ROOTS, Verdict, alpha_bar_at, call, close, code_objects, coefs, compare,
                       expect_tensor, randn, run_check, shape_text)

POSTERIOR_CODE = code_objects({"ddpm_helpers.q_posterior": [q_posterior], "ddpm_helpers.p_sample": [p_sample, _p_step],
                               "ddpm_helpers.ddim_step": [ddim_step, _ddim_step]})


def _per_sample(values: Tensor, ndim: int) -> Tensor:
    return values.reshape(-1, *[1] * (ndim - 1))


# ---------------------------------------------------------------------- 1 · the jump q(x_t | x_s)
def check_forward_jump(fn) -> bool:
    """fn(x_s, s, t, schedule, noise) -> x_t = √(ᾱ_t/ᾱ_s) x_s + √(1 − ᾱ_t/ᾱ_s) ε, a sample of
    q(x_t | x_s) for s < t, s and t LongTensors (B,); s = −1 means x_s is the clean x0."""
    schedule = NoiseSchedule.linear(1000)
    cases = [(randn(5, 2, seed=1), torch.tensor([998, 100, -1, 499, -1]), torch.tensor([999, 900, 999, 500, 0])),
             (randn(2, 1, 28, 28, seed=2).clamp(-1, 1), torch.tensor([200, -1]), torch.tensor([999, 50]))]
    delegates = code_objects({"ddpm_helpers.q_sample": [q_sample], "ddpm_helpers.q_step": [q_step]})

    def jump(x, noise, a_t, a_s, roots=True):
        r = _per_sample(a_t / a_s, x.ndim)
        return ((r.sqrt() * x + (1 - r).sqrt() * noise) if roots else (r * x + (1 - r) * noise)).float()

    def body():
        for x_s, s, t, in cases:
            noise = randn(*x_s.shape, seed=3)
            a_t, a_s = alpha_bar_at(schedule, t), alpha_bar_at(schedule, s)
            ref = jump(x_s.double(), noise.double(), a_t, a_s)
            out = call(fn, x_s.clone(), s.clone(), t.clone(), schedule, noise.clone(), delegates=delegates)
            out = expect_tensor(out, ref, len(t))
            al, ap = schedule.alphas.double(), schedule.alpha_bars_prev.double()
            one = torch.ones_like(a_t)
            x, z = x_s.double(), noise.double()
            compare(out, ref, [f"{int(a)} → {int(b)}" for a, b in zip(s, t)], [
                (jump(x, z, a_t, torch.where(s < 0, schedule.alpha_bars.double()[-1], a_s)), END),
                (jump(x, z, a_t, one), "you jumped as if x_s were the clean x0: from step s the signal "
                 "only shrinks by √(ᾱ_t/ᾱ_s), and the noise variance grows by 1 − ᾱ_t/ᾱ_s"),
                (jump(x, z, al[t], one), "that is one forward step t − 1 → t; a jump from s multiplies the "
                 "α of every step s + 1 … t: ᾱ_t/ᾱ_s"),
                (jump(x, z, al[t], torch.where(s < 0, 1.0, al[s.clamp(min=0)])), ALPHA),
                (jump(x, z, ap[t], alpha_bar_at(schedule, s - 1).where(s >= 0, one)), "off by one: you used "
                 "ᾱ_{t-1} (alpha_bars_prev); code t already is the paper's t + 1, so take alpha_bars[t]"),
                (jump(x, z, a_t, a_s, roots=False), ROOTS),
                (jump(z, x, a_t, a_s), "x_s and ε are swapped: the data get √(ᾱ_t/ᾱ_s)"),
            ], "compare with x_t = √(ᾱ_t/ᾱ_s) x_s + √(1 − ᾱ_t/ᾱ_s) ε; a NaN often is √ of a negative "
               "number: ᾱ_t/ᾱ_s ≤ 1 for s < t", where="s → t = ")
        return "passed"

    return run_check("forward_jump", body)


# ---------------------------------------------------------------------- 2 · time embedding
def _embedding(t: Tensor, dim: int, divisor: float, layout: str = "sin_cos", log_base: float = math.log(10_000),
               sign: float = -1.0) -> Tensor:
    """sin/cos of t·w_i, w_i = exp(sign · log_base · i / divisor), i < dim // 2, in one of three
    layouts; an odd dim gets a last column of zeros (as in Ho et al.'s code)."""
    half = dim // 2
    w = torch.exp(sign * log_base * torch.arange(half, dtype=torch.float64) / divisor)
    a = t.double()[:, None] * w[None, :]
    if layout == "interleaved":
        e = torch.stack([a.sin(), a.cos()], dim=2).flatten(1)
    else:
        e = torch.cat([a.sin(), a.cos()] if layout == "sin_cos" else [a.cos(), a.sin()], dim=1)
    return torch.cat([e, torch.zeros(len(t), dim % 2, dtype=e.dtype)], dim=1).float()


def check_time_embedding(fn) -> bool:
    """fn(t, dim) -> (B, dim): [sin(t w_0) ... sin(t w_{h-1}), cos(t w_0) ... cos(t w_{h-1})] (+ one
    zero column for an odd dim), h = dim // 2, with w_i = 10000^(-i/h) (the package) or
    10000^(-i/(h-1)) (Ho et al.'s code): both pass."""
    delegates = code_objects({"ddpm_helpers.SinusoidalEmbedding": [SinusoidalEmbedding.forward]})

    def body():
        ho = False
        for t, dim in ((torch.tensor([1, 2, 3]), 4), (torch.tensor([0, 1, 17, 500, 999]), 16),
                       (torch.tensor([0, 5, 999]), 7)):
            half = dim // 2
            ref = _embedding(t, dim, half)
            out = call(fn, t.clone(), dim, delegates=delegates)
            pad = f": for an odd dim add one column of zeros at the end" if dim % 2 and out.shape[-1] == dim - 1 else ""
            out = expect_tensor(out, ref, len(t), hint=pad)
            if close(out, _embedding(t, dim, half - 1)) and not close(out, ref):
                ho = True
                continue
            slowest = 10_000 ** (-(half - 1) / dim)
            wrong = []
            for divisor in (half, half - 1):
                wrong += [
                    (_embedding(t, dim, divisor, "cos_sin"), "sines and cosines swapped: this exercise (like the "
                     "package and Ho et al.) puts all sines first, then all cosines"),
                    (_embedding(t, dim, divisor, "interleaved"), "sines and cosines interleaved (the layout of "
                     "Vaswani et al.): this exercise puts all sines first, then all cosines (torch.cat along dim 1)"),
                    (_embedding(t, dim, divisor, log_base=math.log10(10_000)), "torch.exp needs the natural "
                     "logarithm: w_i = exp(−ln(10000) · i / h), math.log(10_000), not math.log10"),
                    (_embedding(t, dim, divisor, sign=1.0) if dim == 4 else None, "the frequencies must fall, "
                     "w_i = 10000^(−i/h): with a positive exponent they grow"),
                ]
            wrong.append((_embedding(t, dim, dim), f"you divided i by dim: your slowest frequency is {slowest:.2g}, "
                          f"not w_{{h-1}} = 10000^(−(h−1)/h) = {10_000 ** (-(half - 1) / half):.2g}; divide by "
                          "h = dim // 2 (or h − 1, as Ho et al.)"))
            compare(out, ref, t.tolist(), wrong, "compare with e(t) = [sin(t·w_i), cos(t·w_i)], "
                    "w_i = 10000^(−i/h), h = dim // 2")
        if ho:
            return "passed (with w_i = 10000^(−i/(h − 1)), as in Ho et al.'s code; the package divides by h)"
        return "passed"

    return run_check("time_embedding", body)


# ---------------------------------------------------------------------- 3 · the loss of each sample
class _TinyEps(nn.Module):
    """A fixed linear noise predictor that looks at t: eps = W [x_t, t/1000] for points,
    eps = w x_t + v t/1000 + b pixel by pixel for images; strict about t like the real models."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.pixel = nn.Parameter(torch.tensor([0.7, -0.4, 0.1]))
        with torch.no_grad():
            self.lin.weight.copy_(randn(2, 3, seed=4))
            self.lin.bias.copy_(randn(2, seed=5))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = check_timesteps(t, batch=x_t.shape[0]).float() / 1000
        if x_t.ndim == 2:
            return self.lin(torch.cat([x_t, t[:, None]], dim=1))
        w, v, b = self.pixel
        return w * x_t + v * _per_sample(t, x_t.ndim) + b


def check_loss_per_sample(fn) -> bool:
    """fn(model, x0, t, noise, schedule) -> (B,): the loss of each sample, the mean over its entries
    of (ε − ε_θ(√ᾱ_t x0 + √(1 − ᾱ_t) ε, t))²; its mean over the batch is L_simple (eq. 14)."""
    schedule, model = NoiseSchedule.linear(1000), _TinyEps()
    cases = [(randn(8, 2, seed=6).clamp(-1, 1), torch.tensor([999, 700, 500, 300, 100, 50, 10, 0])),
             (randn(2, 1, 28, 28, seed=8).clamp(-1, 1), torch.tensor([600, 3]))]
    delegates = code_objects({"ddpm_helpers.loss_simple": [loss_simple]})

    def body():
        for x0, t in cases:
            noise, dims = randn(*x0.shape, seed=7), tuple(range(1, x0.ndim))
            out = call(fn, model, x0.clone(), t.clone(), noise.clone(), schedule, delegates=delegates)
            if isinstance(out, Tensor) and out.ndim == 0:
                raise Verdict("shape is (), expected (B,): keep one loss per sample (average over each "
                              "sample's entries, not over the batch)")
            hint = ": average over every dimension but the batch" if isinstance(out, Tensor) and len(out) == len(t) else ""
            value = expect_tensor(out, t.float(), len(t), what="a tensor (one loss per sample)", hint=hint)
            if not out.requires_grad:
                raise Verdict("the loss has no gradient: do not detach it or build it from .item() values")
            with torch.no_grad():
                c = coefs(schedule, t, x0.ndim)
                a, al = c["alpha_bars"], c["alphas"]
                err = lambda pred, target: ((pred - target) ** 2).mean(dim=dims)  # noqa: E731
                pred = model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t)
                compare(value, err(pred, noise), t.tolist(), [
                    (err(pred, x0), "you compared the prediction with x0: L_simple compares it with the noise ε"),
                    (err(model(x0, t), noise), "you fed x0 to the model: it must see the noisy x_t"),
                    (((pred - noise) ** 2).sum(dim=dims), "that is the sum over each sample's entries: take the mean"),
                    (err(model(al.sqrt() * x0 + (1 - al).sqrt() * noise, t), noise), ALPHA),
                    (err(model(a * x0 + (1 - a) * noise, t), noise), ROOTS),
                ], "compare with mean over the entries of (ε − ε_θ(√ᾱ_t x0 + √(1 − ᾱ_t) ε, t))²")
        return "passed"

    return run_check("loss_per_sample", body)


# ---------------------------------------------------------------------- 5 · the posterior of a jump
def posterior_of_jump(x0: Tensor, x_t: Tensor, a_t: Tensor, a_s: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_s | x_t, x0) in float64 from a_t = ᾱ_t and a_s = ᾱ_s (s < t):
    eq. (7) of Ho et al. 2020 with α_t -> ᾱ_t/ᾱ_s, β_t -> 1 - ᾱ_t/ᾱ_s and ᾱ_{t-1} -> ᾱ_s."""
    r = a_t / a_s
    mean = a_s.sqrt() * (1 - r) / (1 - a_t) * x0.double() + r.sqrt() * (1 - a_s) / (1 - a_t) * x_t.double()
    return mean, (1 - a_s) / (1 - a_t) * (1 - r)


def check_posterior(fn) -> bool:
    """fn(x0, x_t, t, s, schedule) -> (mean, variance) of q(x_s | x_t, x0) for ints s < t; s = t − 1
    is eq. (6)-(7) of Ho et al. 2020, s = −1 the clean data (mean x0, variance 0)."""
    schedule = NoiseSchedule.linear(1000)
    pairs = [(999, 998), (999, 749), (600, 0), (500, 499), (300, -1), (0, -1)]
    cases = [(randn(4, 2, seed=40 + i).clamp(-1, 1), randn(4, 2, seed=50 + i), t, s) for i, (t, s) in enumerate(pairs)]
    cases.append((randn(2, 1, 28, 28, seed=60).clamp(-1, 1), randn(2, 1, 28, 28, seed=61), 250, 50))
    jump = "; for a jump t → s, α_t becomes ᾱ_t/ᾱ_s, β_t becomes 1 − ᾱ_t/ᾱ_s and ᾱ_{t-1} becomes ᾱ_s"

    def body():
        for x0, x_t, t, s in cases:
            out = call(fn, x0.clone(), x_t.clone(), t, s, schedule, delegates=POSTERIOR_CODE)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise Verdict(f"returned {type(out).__name__}, expected a pair (mean, variance)")
            mean = expect_tensor(out[0], x_t, len(x_t), what="a mean (a tensor)")
            var = torch.as_tensor(out[1]).detach().double().cpu()
            try:
                var = var.broadcast_to(x_t.shape).float()
            except RuntimeError:
                raise Verdict(f"the variance has shape {shape_text(var.shape, len(x_t))}: return one number "
                              "(a 0-d tensor) or a tensor that broadcasts to x_t") from None
            a_t, a_s = alpha_bar_at(schedule, t), alpha_bar_at(schedule, s)
            ref_mean, ref_var = posterior_of_jump(x0, x_t, a_t, a_s)
            end_mean, end_var = posterior_of_jump(x0, x_t, a_t, schedule.alpha_bars.double()[s])  # index -1
            one_mean, one_var = posterior_of_jump(x0, x_t, a_t, alpha_bar_at(schedule, t - 1))  # s ignored
            r = a_t / a_s
            w_x0, w_xt = a_s.sqrt() * (1 - r) / (1 - a_t), r.sqrt() * (1 - a_s) / (1 - a_t)
            label, like = [f"{t} → {s}"] * len(x0), lambda v: v.float().broadcast_to(x_t.shape)  # noqa: E731
            compare(mean, ref_mean.float(), label, [
                (end_mean.float() if s < 0 else None, END),
                (one_mean.float() if s != t - 1 else None, "you used the one-step posterior (β_t, α_t)" + jump),
                ((w_xt * x0 + w_x0 * x_t).float(), "the weights of x0 and x_t are swapped: x0 gets "
                 "√ᾱ_s (1 − ᾱ_t/ᾱ_s)/(1 − ᾱ_t)"),
                ((w_x0 * x0 + a_t.sqrt() * (1 - a_s) / (1 - a_t) * x_t).float(), "the weight of x_t holds "
                 "√(ᾱ_t/ᾱ_s), the signal factor of the jump s → t (√α_t for one step), not √ᾱ_t"),
            ], "compare with μ̃ = √ᾱ_s (1 − ᾱ_t/ᾱ_s)/(1 − ᾱ_t) · x0 + √(ᾱ_t/ᾱ_s) (1 − ᾱ_s)/(1 − ᾱ_t) · x_t",
                where="t → s = ")
            compare(var, like(ref_var), label, [
                (like(end_var) if s < 0 else None, END),
                (like(one_var) if s != t - 1 else None, "the variance is that of one step, β̃_t" + jump),
                (like(ref_var.sqrt()) if ref_var > 0 else None, "that is the standard deviation; return the variance"),
                (like(1 - r) if s >= 0 else None, "that is the variance of the forward jump q(x_t | x_s), "
                 "1 − ᾱ_t/ᾱ_s; the posterior's is smaller by the factor (1 − ᾱ_s)/(1 − ᾱ_t)"),
            ], "compare with β̃ = (1 − ᾱ_s)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_s)", where="t → s = ")
        return "passed"

    return run_check("posterior", body)


# ---------------------------------------------------------------------- 9 · signal lost per step
def check_signal_loss(fn) -> bool:
    """fn(schedule) -> (T,): r_t = √ᾱ_{t-1} − √ᾱ_t, the share of x0 lost at step t (ᾱ_{-1} = 1)."""

    def body():
        for schedule in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(50)):
            a, ap = schedule.alpha_bars, schedule.alpha_bars_prev
            ref = ap.sqrt() - a.sqrt()
            out = call(fn, schedule)
            if isinstance(out, Tensor) and out.shape == (schedule.T - 1,):
                raise Verdict(f"shape is ({schedule.T - 1},), expected ({schedule.T},): step t = 0 loses "
                              "1 − √ᾱ_0 too (ᾱ before the first step is 1: schedule.alpha_bars_prev)")
            out = expect_tensor(out, ref, None)
            compare(out[:, None], ref[:, None], list(range(schedule.T)), [
                ((ap - a)[:, None], "did you forget the square roots? The signal is √ᾱ_t · x0: "
                 "measure the drop of √ᾱ_t"),
                ((a.sqrt() - ap.sqrt())[:, None], "the sign is flipped: the signal LOST is √ᾱ_{t-1} − √ᾱ_t ≥ 0"),
                ((1 - a.sqrt())[:, None], "that is the signal lost from 0 up to t; asked is the loss of step t alone"),
                (schedule.betas[:, None], "that is β_t, the noise variance added at step t, not the signal lost"),
            ], "compare with r_t = √ᾱ_{t-1} − √ᾱ_t")
        return "passed"

    return run_check("signal_loss", body)


# ---------------------------------------------------------------------- 10 · noisy copies of one image
def check_noisy_copies(fn) -> bool:
    """fn(x0, ts, schedule, n_draws, generator) -> (len(ts), n_draws, C, H, W): n_draws independent
    samples of q(x_t | x0) for each t; checked through their statistics (mean √ᾱ_t x0, variance 1 − ᾱ_t)."""
    schedule, ts, n = NoiseSchedule.linear(1000), [0, 50, 200, 500, 999], 200
    grid = torch.linspace(-1, 1, 28)
    x0 = (torch.sin(3 * grid)[:, None] * torch.cos(2 * grid)[None, :]).reshape(1, 1, 28, 28)
    # statistics cannot tell ᾱ_{t-1} from ᾱ_t (they differ by a factor α_t ≈ 0.99): check_forward_jump does
    candidates = [("alpha_bars", True, None), ("alphas", True, ALPHA), ("alpha_bars", False, ROOTS)]

    def body():
        out = call(fn, x0.clone(), list(ts), schedule, n, torch.Generator().manual_seed(12))
        out = expect_tensor(out, torch.empty(len(ts), n, 1, 28, 28), None)
        if not bool(torch.isfinite(out).all()):
            raise Verdict("returned NaN or infinite values")
        if bool((out.std(dim=1) < 1e-6).all()):
            raise Verdict("all draws are identical: draw fresh noise for every copy")
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
                raise Verdict(f"values differ at t = {ts[bad]}: {message}")
        a = schedule.alpha_bars[ts]
        bad = int(((variance - (1 - a)).abs() + (signal - a.sqrt()).abs()).argmax())
        raise Verdict(f"at t = {ts[bad]} the copies have mean {signal[bad]:.3f}·x0 and variance "
                      f"{variance[bad]:.3f}, expected {a[bad].sqrt():.3f}·x0 and {1 - a[bad]:.3f}")

    return run_check("noisy_copies", body)
