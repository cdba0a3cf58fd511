"""The exercise checks: the reference passes, an unimplemented function says so, each classic
mistake gets its own diagnosis, and nothing a student writes produces a traceback."""
import math

import pytest
import torch
import torch.nn.functional as F

from ddpm_helpers import ddim_step, naive_skip_timesteps, q_sample
from ddpm_helpers import exercises as ex

torch.set_num_threads(1)


# ---------------------------------------------------------------------- correct solutions
def q_sample_ok(x0, t, schedule, noise):
    a = schedule.alpha_bars[t].reshape(-1, *[1] * (x0.ndim - 1))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def embedding_ok(t, dim):
    half = dim // 2
    w = torch.exp(-math.log(10_000) * torch.arange(half) / half)
    angles = t.float()[:, None] * w[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def loss_ok(model, x0, t, noise, schedule):
    return F.mse_loss(model(q_sample_ok(x0, t, schedule, noise), t), noise)


def _coef(values, t, x):
    return values[t].reshape(1, *[1] * (x.ndim - 1))


def ancestral_ok(model, x_t, t, schedule, noise, variance="posterior", noise_at_0=False, whole=False):
    eps = model(x_t, torch.full((x_t.shape[0],), t))
    a, al, b = (_coef(v, t, x_t) for v in (schedule.alpha_bars, schedule.alphas, schedule.betas))
    coef = 1.0 if whole else b / (1 - a).sqrt()
    mean = (x_t - coef * eps) / al.sqrt()
    var = b if variance == "beta" else _coef(schedule.posterior_variance, t, x_t)
    return mean + var.sqrt() * noise if (t > 0 or noise_at_0) else mean


def ddim_ok(model, x_t, t, t_prev, schedule, negative_index=False, alphas=False):
    table = schedule.alphas if alphas else schedule.alpha_bars
    eps = model(x_t, torch.full((x_t.shape[0],), t))
    a_t = table[t]
    a_p = table[t_prev] if (t_prev >= 0 or negative_index) else torch.tensor(1.0)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps


def filmstrip_ok(steps, ts):
    return {step.t: step.x_t for step in steps if step.t in ts}


def signal_loss_ok(schedule):
    return schedule.alpha_bars_prev.sqrt() - schedule.alpha_bars.sqrt()


def noisy_copies_ok(x0, ts, schedule, n_draws, generator, table="alpha_bars"):
    out = []
    for t in ts:
        noise = torch.randn((n_draws, *x0.shape[1:]), generator=generator)
        a = getattr(schedule, table)[t]
        out.append(a.sqrt() * x0 + (1 - a).sqrt() * noise)
    return torch.stack(out)


def skip_ddim_ok(model, x_T, schedule, k, pairs="right"):
    ts = naive_skip_timesteps(schedule.T, k)
    if pairs == "right":
        pairs = list(zip(ts, ts[1:] + [-1]))
    elif pairs == "no_end":
        pairs = list(zip(ts[:-1], ts[1:]))
    else:
        pairs = [(t, t - 1) for t in ts]
    x = x_T
    for t, t_prev in pairs:
        x = ddim_step(model, x, t, t_prev, schedule)
    return x


def not_implemented(*args):
    raise NotImplementedError()


CHECKS = {
    ex.check_q_sample: q_sample_ok, ex.check_time_embedding: embedding_ok, ex.check_loss: loss_ok,
    ex.check_ancestral_step: ancestral_ok, ex.check_ddim_step: ddim_ok, ex.check_filmstrip: filmstrip_ok,
    ex.check_signal_loss: signal_loss_ok, ex.check_noisy_copies: noisy_copies_ok,
    ex.check_skip_ddim: skip_ddim_ok,
}


def _verdict(check, fn, capsys):
    ok = check(fn)
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 1, out.out
    assert out.err == ""
    assert "Traceback" not in out.out
    return ok, lines[0]


# ---------------------------------------------------------------------- every check
@pytest.mark.parametrize("check", list(CHECKS), ids=lambda c: c.__name__)
def test_reference_solution_passes_with_one_line(check, capsys):
    ok, line = _verdict(check, CHECKS[check], capsys)
    assert ok is True and line.endswith("passed"), line


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda c: c.__name__)
def test_unimplemented_function_says_not_implemented_yet(check, capsys):
    ok, line = _verdict(check, not_implemented, capsys)
    assert ok is False and line.endswith(": not implemented yet"), line


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda c: c.__name__)
def test_exception_in_student_code_is_one_line_without_traceback(check, capsys):
    def broken(*args):
        return {}["no such key"]

    ok, line = _verdict(check, broken, capsys)
    assert ok is False and "your function raised KeyError: 'no such key'" in line, line


# ---------------------------------------------------------------------- diagnosed mistakes
def _wrong_table(table):
    def fn(x0, t, schedule, noise):
        a = getattr(schedule, table)[t].reshape(-1, *[1] * (x0.ndim - 1))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise
    return fn


@pytest.mark.parametrize("fn, expected", [
    (_wrong_table("alphas"), "values differ at t = 999: did you use ᾱ_t or α_t?"),
    (_wrong_table("alpha_bars_prev"), "off by one: you used ᾱ_{t-1}"),
    (lambda x0, t, s, n: s.alpha_bars[t].reshape(-1, *[1] * (x0.ndim - 1)) * x0
     + (1 - s.alpha_bars[t].reshape(-1, *[1] * (x0.ndim - 1))) * n, "did you forget the square roots?"),
    (lambda x0, t, s, n: x0[..., :1], "shape is (B, 1), expected (B, 2)"),
    (lambda x0, t, s, n: x0.tolist(), "returned list, expected a tensor of shape (B, 2)"),
    (lambda x0, t, s, n: s.alpha_bars[t].sqrt() * x0 + n, "(a per-sample coefficient of shape (B,) needs reshaping"),
    (lambda x0, t, s, n: q_sample_ok(x0, t, s, n) + 0.1, "values differ at t = "),
])
def test_q_sample_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_q_sample, fn, capsys)
    assert ok is False and expected in line, line


def test_q_sample_wrong_image_shape_is_reported_with_b(capsys):
    def fn(x0, t, schedule, noise):
        return q_sample_ok(x0, t, schedule, noise) if x0.ndim == 2 else x0.flatten(1)[:, :2]
    ok, line = _verdict(ex.check_q_sample, fn, capsys)
    assert ok is False and "shape is (B, 2), expected (B, 1, 28, 28)" in line, line


def _embedding(order="sin_cos", divide="half", sign=-1.0):
    def fn(t, dim):
        half = dim // 2
        w = torch.exp(sign * math.log(10_000) * torch.arange(half) / (half if divide == "half" else dim))
        a = t.float()[:, None] * w[None, :]
        if order == "interleaved":
            return torch.stack([a.sin(), a.cos()], dim=2).flatten(1)
        return torch.cat([a.sin(), a.cos()] if order == "sin_cos" else [a.cos(), a.sin()], dim=1)
    return fn


@pytest.mark.parametrize("fn, expected", [
    (_embedding(order="cos_sin"), "sines and cosines swapped"),
    (_embedding(order="interleaved"), "interleaved"),
    (_embedding(divide="dim"), "not -i / dim"),
    (_embedding(sign=1.0), "the exponent's sign is negative"),
    (lambda t, dim: embedding_ok(t, dim).T, "shape is (4, 3), expected (B, 4)"),
])
def test_time_embedding_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_time_embedding, fn, capsys)
    assert ok is False and expected in line, line


@pytest.mark.parametrize("fn, expected", [
    (lambda m, x0, t, n, s: F.mse_loss(m(q_sample_ok(x0, t, s, n), t), x0), "compared the prediction with x0"),
    (lambda m, x0, t, n, s: F.mse_loss(m(x0, t), n), "you fed x0 to the model"),
    (lambda m, x0, t, n, s: ((m(q_sample_ok(x0, t, s, n), t) - n) ** 2).sum(), "sum of the squares"),
    (lambda m, x0, t, n, s: F.mse_loss(m(_wrong_table("alphas")(x0, t, s, n), t), n), "ᾱ_t or α_t"),
    (lambda m, x0, t, n, s: ((m(q_sample_ok(x0, t, s, n), t) - n) ** 2).mean(1), "expected a scalar ()"),
    (lambda m, x0, t, n, s: loss_ok(m, x0, t, n, s).item(), "returned float"),
    (lambda m, x0, t, n, s: loss_ok(m, x0, t, n, s).detach(), "has no gradient"),
])
def test_loss_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_loss, fn, capsys)
    assert ok is False and expected in line, line


@pytest.mark.parametrize("kwargs, expected", [
    (dict(whole=True), "you subtract the whole predicted noise"),
    (dict(variance="beta", noise_at_0=True), "values differ at t = 0: noise was added at the last step"),
])
def test_ancestral_step_mistakes_are_named(kwargs, expected, capsys):
    ok, line = _verdict(ex.check_ancestral_step, lambda *a: ancestral_ok(*a, **kwargs), capsys)
    assert ok is False and expected in line, line


def test_ancestral_step_with_beta_variance_passes_with_a_note(capsys):
    ok, line = _verdict(ex.check_ancestral_step, lambda *a: ancestral_ok(*a, variance="beta"), capsys)
    assert ok is True and "passed (with σ_t² = β_t" in line, line


def test_ancestral_step_passing_an_int_t_to_the_model_gets_the_models_message(capsys):
    def fn(model, x_t, t, schedule, noise):
        model(x_t, t)
    ok, line = _verdict(ex.check_ancestral_step, fn, capsys)
    assert ok is False and "TypeError: t must be a tensor of shape (B,), got int" in line, line


@pytest.mark.parametrize("kwargs, expected", [
    (dict(negative_index=True), "values differ at t = 0: at t_prev = −1 (the end) ᾱ_prev is 1"),
    (dict(alphas=True), "ᾱ_t or α_t"),
])
def test_ddim_step_mistakes_are_named(kwargs, expected, capsys):
    ok, line = _verdict(ex.check_ddim_step, lambda *a: ddim_ok(*a, **kwargs), capsys)
    assert ok is False and expected in line, line


def test_ddim_step_to_t_minus_one_is_an_off_by_one_in_the_pair(capsys):
    def fn(model, x_t, t, t_prev, schedule):
        return ddim_ok(model, x_t, t, t - 1, schedule)
    ok, line = _verdict(ex.check_ddim_step, fn, capsys)
    assert ok is False and "t off by one in the DDIM pair: you stepped to t − 1" in line, line


@pytest.mark.parametrize("fn, expected", [
    (lambda steps, ts: {s.t: s.x_prev for s in steps if s.t in ts}, "is step.x_prev"),
    (lambda steps, ts: {s.t: s.x0_pred for s in steps if s.t in ts}, "is step.x0_pred"),
    (lambda steps, ts: {s.t: s.x_t for s in steps if s.t in ts[:-1]}, "t = 0 is missing"),
    (lambda steps, ts: [s.x_t for s in steps if s.t in ts], "expected a dict"),
])
def test_filmstrip_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_filmstrip, fn, capsys)
    assert ok is False and expected in line, line


@pytest.mark.parametrize("fn, expected", [
    (lambda s: s.alpha_bars_prev - s.alpha_bars, "forget the square roots"),
    (lambda s: -signal_loss_ok(s), "the sign is flipped"),
    (lambda s: -torch.diff(s.alpha_bars.sqrt()), "shape is (999,), expected (1000,)"),
    (lambda s: s.betas, "that is β_t"),
])
def test_signal_loss_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_signal_loss, fn, capsys)
    assert ok is False and expected in line, line


@pytest.mark.parametrize("fn, expected", [
    (lambda *a: noisy_copies_ok(*a, table="alphas"), "values differ at t = 999: did you use ᾱ_t or α_t?"),
    (lambda x0, ts, s, n, g: torch.stack([s.alpha_bars[t] * x0 + (1 - s.alpha_bars[t]) * torch.randn(
        (n, *x0.shape[1:]), generator=g) for t in ts]), "did you forget the square roots?"),
    (lambda x0, ts, s, n, g: torch.stack([q_sample(x0.expand(n, -1, -1, -1), t, s, noise=torch.ones(
        n, *x0.shape[1:])) for t in ts]), "all draws are identical"),
    (lambda x0, ts, s, n, g: noisy_copies_ok(x0, ts, s, n, g)[:, 0], "shape is (5, 1, 28, 28), expected (5, 200, 1, 28, 28)"),
])
def test_noisy_copies_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_noisy_copies, fn, capsys)
    assert ok is False and expected in line, line


@pytest.mark.parametrize("pairs, expected", [
    ("no_end", "the last pair (0, −1) is missing"),
    ("minus_one", "t off by one in the DDIM pairs"),
])
def test_skip_ddim_mistakes_are_named(pairs, expected, capsys):
    ok, line = _verdict(ex.check_skip_ddim, lambda *a: skip_ddim_ok(*a, pairs=pairs), capsys)
    assert ok is False and expected in line, line


def test_skip_ddim_stopping_short_of_t_zero_is_named(capsys):
    def fn(model, x_T, schedule, k):
        ts = list(range(schedule.T - 1, -1, -k))
        x = x_T
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            x = ddim_step(model, x, t, t_prev, schedule)
        return x
    ok, line = _verdict(ex.check_skip_ddim, fn, capsys)
    assert ok is False and "visit t = 0 last" in line, line


# ---------------------------------------------------------------------- the remaining diagnoses
def _ancestral_variant(kind):
    def fn(model, x_t, t, schedule, noise):
        eps = model(x_t, torch.full((x_t.shape[0],), t))
        a, al, b, var = (_coef(v, t, x_t) for v in (schedule.alpha_bars, schedule.alphas, schedule.betas,
                                                       schedule.posterior_variance))
        mean = (x_t - b / (1 - a).sqrt() * eps) / al.sqrt()
        if kind == "alpha_bar_scale":
            return (x_t - b / (1 - a).sqrt() * eps) / a.sqrt() + var.sqrt() * noise
        if kind == "no_roots":
            return (x_t - b / (1 - a) * eps) / al.sqrt() + var.sqrt() * noise
        if kind == "variance_not_std":
            return mean + var * noise
        return mean  # kind == "no_noise"
    return fn


@pytest.mark.parametrize("kind, expected", [
    ("alpha_bar_scale", "ᾱ_t or α_t"), ("no_roots", "forget the square roots"),
    ("variance_not_std", "σ_t is the square root of the variance"), ("no_noise", "you added no noise"),
])
def test_more_ancestral_step_mistakes_are_named(kind, expected, capsys):
    ok, line = _verdict(ex.check_ancestral_step, _ancestral_variant(kind), capsys)
    assert ok is False and expected in line, line


def _ddim_variant(kind):
    def fn(model, x_t, t, t_prev, schedule):
        t_model = t_prev if kind == "model_at_t_prev" and t_prev >= 0 else t
        eps = model(x_t, torch.full((x_t.shape[0],), t_model))
        a_t = schedule.alpha_bars[t]
        a_p = schedule.alpha_bars[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        if kind == "prev_table" and t_prev >= 0:
            a_p = schedule.alpha_bars_prev[t_prev]
        if kind == "no_roots":
            return a_p * (x_t - (1 - a_t) * eps) / a_t + (1 - a_p) * eps
        return a_p.sqrt() * (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt() + (1 - a_p).sqrt() * eps
    return fn


@pytest.mark.parametrize("kind, expected", [
    ("prev_table", "not alpha_bars_prev[t_prev]"), ("model_at_t_prev", "evaluate the model at t"),
    ("no_roots", "forget the square roots"),
])
def test_more_ddim_step_mistakes_are_named(kind, expected, capsys):
    ok, line = _verdict(ex.check_ddim_step, _ddim_variant(kind), capsys)
    assert ok is False and expected in line, line


@pytest.mark.parametrize("check, fn, expected", [
    (ex.check_q_sample, lambda x0, t, s, n: q_sample_ok(n, t, s, x0), "x0 and ε are swapped"),
    (ex.check_loss, lambda m, x0, t, n, s: ((m(q_sample_ok(x0, t, s, n), t) - n) ** 2).sum(1).mean(),
     "you summed over the dimensions"),
    (ex.check_loss, lambda m, x0, t, n, s: F.mse_loss(m(s.alpha_bars[t][:, None] * x0
                                                        + (1 - s.alpha_bars[t][:, None]) * n, t), n),
     "forget the square roots"),
    (ex.check_signal_loss, lambda s: 1 - s.alpha_bars.sqrt(), "the signal lost from 0 up to t"),
    (ex.check_filmstrip, lambda steps, ts: {s.t: s.x_t for s in steps}, "which was not asked for"),
])
def test_other_diagnoses_are_named(check, fn, expected, capsys):
    ok, line = _verdict(check, fn, capsys)
    assert ok is False and expected in line, line


def test_a_result_the_check_cannot_handle_is_one_line(capsys):
    class Weird(dict):
        def items(self):
            raise RuntimeError("boom")
    ok, line = _verdict(ex.check_filmstrip, lambda steps, ts: Weird(), capsys)
    assert ok is False and line == "filmstrip: could not check your result (RuntimeError: boom)", line
