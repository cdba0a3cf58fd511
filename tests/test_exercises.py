"""The exercise checks: a genuine solution passes, an unimplemented function says so, a function
that only calls the package's answer is caught, each classic mistake gets its own diagnosis, and
nothing a student writes produces a traceback; the training loop is checked on a few steps."""
import math

import pytest
import torch
import torch.nn.functional as F

import ddpm_helpers
from ddpm_helpers import SinusoidalEmbedding, ddim_step, naive_skip_timesteps, optimal_eps_point, predict_x0, q_sample
from ddpm_helpers import exercises as ex
from ddpm_helpers.diffusion import q_posterior
from ddpm_helpers.exercises.forward import posterior_of_jump
from ddpm_helpers.exercises.verdicts import alpha_bar_at
from ddpm_helpers.schedules import NoiseSchedule

torch.set_num_threads(1)


# ---------------------------------------------------------------------- genuine solutions
def _abar(schedule, s):
    """ᾱ_s as float32 for an int or a LongTensor s >= -1 (ᾱ_{-1} = 1)."""
    return torch.cat([torch.ones(1), schedule.alpha_bars])[torch.as_tensor(s) + 1]


def jump_ok(x_s, s, t, schedule, noise, a_s=None):
    r = (_abar(schedule, t) / (_abar(schedule, s) if a_s is None else a_s)).reshape(-1, *[1] * (x_s.ndim - 1))
    return r.sqrt() * x_s + (1 - r).sqrt() * noise


def embedding_ok(t, dim, divisor="half", layout="sin_cos", base=math.log(10_000), sign=-1.0):
    half = dim // 2
    div = {"half": half, "half-1": half - 1, "dim": dim}[divisor]
    w = torch.exp(sign * base * torch.arange(half) / div)
    a = t.float()[:, None] * w[None, :]
    if layout == "interleaved":
        e = torch.stack([a.sin(), a.cos()], dim=2).flatten(1)
    else:
        e = torch.cat([a.sin(), a.cos()] if layout == "sin_cos" else [a.cos(), a.sin()], dim=1)
    return torch.cat([e, torch.zeros(len(t), dim % 2)], dim=1)


def loss_ok(model, x0, t, noise, schedule, table="alpha_bars", target="eps", reduce="mean", feed="x_t"):
    a = getattr(schedule, table)[t].reshape(-1, *[1] * (x0.ndim - 1))
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise if feed == "x_t" else x0
    err = (model(x_t, t) - (noise if target == "eps" else x0)) ** 2
    dims = tuple(range(1, x0.ndim))
    return {"mean": err.mean(dim=dims), "sum": err.sum(dim=dims), "all": err.mean(), "none": err}[reduce]


def posterior_ok(x0, x_t, t, s, schedule, negative_index=False, one_step=False, std=False):
    a_t = schedule.alpha_bars[t]
    a_s = schedule.alpha_bars[s] if (s >= 0 or negative_index) else torch.tensor(1.0)
    if one_step:
        a_s = schedule.alpha_bars_prev[t]
    r = a_t / a_s
    var = (1 - a_s) / (1 - a_t) * (1 - r)
    return a_s.sqrt() * (1 - r) / (1 - a_t) * x0 + r.sqrt() * (1 - a_s) / (1 - a_t) * x_t, var.sqrt() if std else var


def ancestral_ok(model, x_t, t, schedule, noise, clip=True, variance="posterior", noise_at_0=False):
    eps = model(x_t, torch.full((x_t.shape[0],), t))
    x0 = predict_x0(x_t, t, eps, schedule)
    mean, var = posterior_ok(x0.clamp(-1, 1) if clip else x0, x_t, t, t - 1, schedule)
    if variance == "beta":
        var = schedule.betas[t]
    return mean + var.sqrt() * noise if (t > 0 or noise_at_0) else mean


def ddim_ok(x0_model, x_t, t, t_prev, schedule, negative_index=False, output_as_eps=False, no_direction=False):
    x0 = x0_model(x_t, torch.full((x_t.shape[0],), t))
    a_t = schedule.alpha_bars[t]
    a_p = schedule.alpha_bars[t_prev] if (t_prev >= 0 or negative_index) else torch.tensor(1.0)
    eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    if output_as_eps:
        eps, x0 = x0, (x_t - (1 - a_t).sqrt() * x0) / a_t.sqrt()
    return a_p.sqrt() * x0 + (0 if no_direction else (1 - a_p).sqrt() * eps)


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
    ex.check_forward_jump: jump_ok, ex.check_time_embedding: embedding_ok, ex.check_loss_per_sample: loss_ok,
    ex.check_posterior: posterior_ok, ex.check_ancestral_step: ancestral_ok, ex.check_ddim_step: ddim_ok,
    ex.check_filmstrip: filmstrip_ok, ex.check_signal_loss: signal_loss_ok, ex.check_noisy_copies: noisy_copies_ok,
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
def test_genuine_solution_passes_with_one_line(check, capsys):
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


def test_a_not_implemented_error_from_torch_is_not_mistaken_for_the_stub(capsys):
    def bool_arithmetic(x_s, s, t, schedule, noise):
        return x_s - (s < 0)  # torch: "Subtraction, the `-` operator, with a bool tensor is not supported"

    ok, line = _verdict(ex.check_forward_jump, bool_arithmetic, capsys)
    assert ok is False and "your function raised NotImplementedError: Subtraction" in line, line


def test_the_check_leaves_no_trace_function_behind(capsys):
    before = __import__("sys").gettrace()
    ex.check_forward_jump(lambda x, s, t, sc, n: q_sample(x, t, sc, noise=n))
    ex.check_forward_jump(jump_ok)
    assert __import__("sys").gettrace() is before


# ---------------------------------------------------------------------- delegation to the package
def _via_module(x_s, s, t, schedule, noise):
    return ddpm_helpers.diffusion.q_sample(x_s, t, schedule, noise=noise)


def _make_closure():
    alias = ddpm_helpers.q_sample

    def jump(x_s, s, t, schedule, noise):
        return alias(x_s, t, schedule, noise=noise)
    return jump


def _swallowing(x_s, s, t, schedule, noise):
    try:
        q_sample(x_s, t, schedule, noise=noise)
    except:  # noqa: E722 - a student's bare except must not hide the delegation
        pass
    return jump_ok(x_s, s, t, schedule, noise)


def _partly_delegating(x_s, s, t, schedule, noise):  # right values: the package for s = -1 rows
    out = jump_ok(x_s, s, t, schedule, noise)
    fresh = s < 0
    out[fresh] = q_sample(x_s[fresh], t[fresh], schedule, noise=noise[fresh])
    return out


@pytest.mark.parametrize("fn", [
    lambda x_s, s, t, schedule, noise: q_sample(x_s, t, schedule, noise=noise), _via_module, _make_closure(),
    _swallowing, _partly_delegating,
], ids=["imported name", "module attribute", "alias in a closure", "bare except", "partly"])
def test_a_function_that_calls_the_packages_answer_is_told_to_call_its_own_math(fn, capsys):
    ok, line = _verdict(ex.check_forward_jump, fn, capsys)
    assert ok is False and line == "forward_jump: call your own math: this function calls ddpm_helpers.q_sample", line


@pytest.mark.parametrize("check, fn, name", [
    (ex.check_time_embedding, lambda t, dim: SinusoidalEmbedding(dim)(t), "SinusoidalEmbedding"),
    (ex.check_time_embedding, lambda t, dim: ddpm_helpers.MLPDenoiser(time_dim=dim).time_embedding(t),
     "SinusoidalEmbedding"),
    (ex.check_loss_per_sample, lambda m, x0, t, n, s: ddpm_helpers.loss_simple(m, x0, s, t=t, noise=n).expand(len(t)),
     "loss_simple"),
    (ex.check_posterior, lambda x0, x_t, t, s, sc: q_posterior(x0, x_t, t, sc), "q_posterior"),
    (ex.check_posterior, lambda x0, x_t, t, s, sc: (ddim_step(optimal_eps_point(x0, sc), x_t, t, s, sc, eta=1.0,
                                                              noise=torch.zeros_like(x_t)), 0.0), "ddim_step"),
    (ex.check_ancestral_step, lambda m, x, t, s, z: ddpm_helpers.p_sample(m, x, t, s, noise=z, clip_x0=True), "p_sample"),
    (ex.check_ancestral_step, lambda m, x, t, s, z: ddim_step(m, x, t, t - 1, s, eta=1.0, noise=z, clip_x0=True)
     if t > 0 else ddim_step(m, x, 0, -1, s), "ddim_step"),
    (ex.check_ddim_step, lambda m, x, t, tp, s: ddim_step(lambda x_t, tt: (x_t - s.alpha_bars[tt][:, None].sqrt()
     * m(x_t, tt)) / (1 - s.alpha_bars[tt][:, None]).sqrt(), x, t, tp, s), "ddim_step"),
    (ex.check_filmstrip, lambda steps, ts: ddpm_helpers.collect_trajectory(steps, keep=ts), "collect_trajectory"),
    (ex.check_skip_ddim, lambda m, x, s, k: ddpm_helpers.ddim_sample(m, None, s, steps=len(naive_skip_timesteps(
        s.T, k)), x_T=x, progress=False), "ddim_sample"),
])
def test_every_check_names_the_package_function_it_was_handed_to(check, fn, name, capsys):
    ok, line = _verdict(check, fn, capsys)
    assert ok is False and line.endswith(f": call your own math: this function calls ddpm_helpers.{name}"), line


def test_package_helpers_that_are_not_the_answer_stay_allowed(capsys):
    def loss_via_q_sample(model, x0, t, noise, schedule):  # exercise 1's package version, inside exercise 3
        return ((model(q_sample(x0, t, schedule, noise=noise), t) - noise) ** 2).mean(dim=tuple(range(1, x0.ndim)))

    ok, line = _verdict(ex.check_loss_per_sample, loss_via_q_sample, capsys)
    assert ok is True, line
    ok, line = _verdict(ex.check_ancestral_step, lambda m, x, t, s, z: _ancestral_via_q_posterior(m, x, t, s, z), capsys)
    assert ok is True, line


def _ancestral_via_q_posterior(model, x_t, t, schedule, noise):
    x0 = predict_x0(x_t, t, model(x_t, torch.full((len(x_t),), t)), schedule).clamp(-1, 1)
    mean, var = q_posterior(x0, x_t, t, schedule)
    return mean + var.sqrt() * noise


# ---------------------------------------------------------------------- 1 · forward jump
@pytest.mark.parametrize("fn, expected", [
    (lambda x, s, t, sc, n: jump_ok(x, s, t, sc, n, a_s=torch.where(s < 0, sc.alpha_bars[-1], _abar(sc, s))),
     "at s = −1 (the clean data) ᾱ is 1: alpha_bars[-1] is the LAST entry"),
    (lambda x, s, t, sc, n: jump_ok(x, s, t, sc, n, a_s=torch.ones(len(s))), "you jumped as if x_s were the clean x0"),
    (lambda x, s, t, sc, n: sc.alphas[t].reshape(-1, *[1] * (x.ndim - 1)).sqrt() * x
     + (1 - sc.alphas[t].reshape(-1, *[1] * (x.ndim - 1))).sqrt() * n, "that is one forward step t − 1 → t"),
    (lambda x, s, t, sc, n: jump_ok(n, s, t, sc, x), "x_s and ε are swapped"),
    (lambda x, s, t, sc, n: jump_ok(x, t, s, sc, n), "returned NaN or infinite values at s → t = "),
    (lambda x, s, t, sc, n: x[..., :1], "shape is (B, 1), expected (B, 2)"),
    (lambda x, s, t, sc, n: jump_ok(x, s, t, sc, n).tolist(), "returned list, expected a tensor of shape (B, 2)"),
    (lambda x, s, t, sc, n: (_abar(sc, t) / _abar(sc, s)).sqrt() * x + n, "(a per-sample coefficient of shape (B,) needs reshaping"),
    (lambda x, s, t, sc, n: jump_ok(x, s, t, sc, n) + 0.1, "(largest error 0.1); compare with x_t = √(ᾱ_t/ᾱ_s) x_s"),
])
def test_forward_jump_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_forward_jump, fn, capsys)
    assert ok is False and expected in line, line


def test_forward_jump_wrong_image_shape_is_reported_with_b(capsys):
    def fn(x_s, s, t, schedule, noise):
        return jump_ok(x_s, s, t, schedule, noise) if x_s.ndim == 2 else x_s.flatten(1)[:, :2]
    ok, line = _verdict(ex.check_forward_jump, fn, capsys)
    assert ok is False and "shape is (B, 2), expected (B, 1, 28, 28)" in line, line


# ---------------------------------------------------------------------- 2 · time embedding
def test_time_embedding_accepts_ho_et_als_division_by_h_minus_one(capsys):
    ok, line = _verdict(ex.check_time_embedding, lambda t, dim: embedding_ok(t, dim, divisor="half-1"), capsys)
    assert ok is True and "passed (with w_i = 10000^(−i/(h − 1))" in line, line


@pytest.mark.parametrize("kwargs, expected", [
    (dict(layout="cos_sin"), "sines and cosines swapped"),
    (dict(layout="cos_sin", divisor="half-1"), "sines and cosines swapped"),
    (dict(layout="interleaved"), "interleaved (the layout of Vaswani et al.)"),
    (dict(divisor="dim"), "you divided i by dim: your slowest frequency is 0.1, not w_{h-1} = 10000^(−(h−1)/h) = 0.01"),
    (dict(sign=1.0), "with a positive exponent they grow"),
    (dict(base=math.log10(10_000)), "natural logarithm"),
])
def test_time_embedding_mistakes_are_named(kwargs, expected, capsys):
    ok, line = _verdict(ex.check_time_embedding, lambda t, dim: embedding_ok(t, dim, **kwargs), capsys)
    assert ok is False and expected in line, line


def test_time_embedding_slowest_frequency_in_the_diagnosis_is_true():
    # w_i = 10000^(-i/dim) for i = 0 ... dim/2 - 1 ends at 10000^(-(dim/2 - 1)/dim): at dim = 4, 10000^(-1/4) = 0.1
    assert 10_000 ** (-(4 // 2 - 1) / 4) == pytest.approx(0.1)
    assert embedding_ok(torch.tensor([1]), 4, divisor="dim")[0, 1] == pytest.approx(math.sin(0.1), abs=1e-6)


@pytest.mark.parametrize("fn, expected", [
    (lambda t, dim: embedding_ok(t, 2 * (dim // 2)), "shape is (B, 6), expected (B, 7): for an odd dim add one column"),
    (lambda t, dim: embedding_ok(t, dim).T, "shape is (4, 3), expected (B, 4)"),
])
def test_time_embedding_shape_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_time_embedding, fn, capsys)
    assert ok is False and expected in line, line


# ---------------------------------------------------------------------- 3 · loss of each sample
@pytest.mark.parametrize("kwargs, expected", [
    (dict(target="x0"), "you compared the prediction with x0"),
    (dict(feed="x0"), "you fed x0 to the model"),
    (dict(reduce="sum"), "that is the sum over each sample's entries: take the mean"),
    (dict(table="alphas"), "ᾱ_t or α_t"),
    (dict(reduce="all"), "shape is (), expected (B,): keep one loss per sample"),
    (dict(reduce="none"), "shape is (B, 2), expected (B,): average over every dimension but the batch"),
])
def test_loss_per_sample_mistakes_are_named(kwargs, expected, capsys):
    ok, line = _verdict(ex.check_loss_per_sample, lambda *a: loss_ok(*a, **kwargs), capsys)
    assert ok is False and expected in line, line


@pytest.mark.parametrize("fn, expected", [
    (lambda *a: loss_ok(*a).detach(), "has no gradient"),
    (lambda *a: loss_ok(*a).tolist(), "returned list"),
    (lambda m, x0, t, n, s: loss_ok(m, x0, t, n, s) if x0.ndim == 2 else ((m(q_sample(x0, t, s, noise=n), t) - n) ** 2)
     .mean(dim=(1, 2)), "shape is (B, 28), expected (B,)"),
])
def test_loss_per_sample_type_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_loss_per_sample, fn, capsys)
    assert ok is False and expected in line, line


# ---------------------------------------------------------------------- 5 · posterior of a jump
def test_the_posterior_reference_is_ddim_with_eta_one_given_the_true_x0():
    """DDIM's η = 1 step with the exact noise of a known x0 samples q(x_s | x_t, x0) (Song et al. 2021):
    its noise-free part is the posterior mean and its σ² the posterior variance, for any jump."""
    schedule = NoiseSchedule.linear(1000)
    x0, x_t = torch.rand(3, 2) * 2 - 1, torch.randn(3, 2)
    for t, s in [(999, 749), (600, 0), (500, 499), (300, -1)]:
        mean, var = posterior_of_jump(x0, x_t, alpha_bar_at(schedule, t), alpha_bar_at(schedule, s))
        model = optimal_eps_point(x0, schedule)
        torch.testing.assert_close(ddim_step(model, x_t, t, s, schedule, eta=1.0, noise=torch.zeros_like(x_t)),
                                   mean.float(), atol=2e-5, rtol=1e-4)
        z = torch.ones_like(x_t)
        torch.testing.assert_close(ddim_step(model, x_t, t, s, schedule, eta=1.0, noise=z) - mean.float(),
                                   var.sqrt().float() * z, atol=2e-5, rtol=1e-4)
    one = posterior_of_jump(x0, x_t, alpha_bar_at(schedule, 500), alpha_bar_at(schedule, 499))
    ref = q_posterior(x0, x_t, 500, schedule)
    torch.testing.assert_close(one[0].float(), ref[0])
    torch.testing.assert_close(one[1].float(), ref[1].flatten()[0])


@pytest.mark.parametrize("kwargs, expected", [
    (dict(negative_index=True), "values differ at t → s = 300 → -1: at s = −1 (the clean data) ᾱ is 1"),
    (dict(one_step=True), "values differ at t → s = 999 → 749: you used the one-step posterior (β_t, α_t); "
     "for a jump t → s, α_t becomes ᾱ_t/ᾱ_s"),
    (dict(std=True), "that is the standard deviation; return the variance"),
])
def test_posterior_mistakes_are_named(kwargs, expected, capsys):
    ok, line = _verdict(ex.check_posterior, lambda *a: posterior_ok(*a, **kwargs), capsys)
    assert ok is False and expected in line, line


def _posterior_variant(kind):
    def fn(x0, x_t, t, s, schedule):
        mean, var = posterior_ok(x0, x_t, t, s, schedule)
        a_t = schedule.alpha_bars[t]
        a_s = schedule.alpha_bars[s] if s >= 0 else torch.tensor(1.0)
        w_x0, w_xt = a_s.sqrt() * (1 - a_t / a_s) / (1 - a_t), (a_t / a_s).sqrt() * (1 - a_s) / (1 - a_t)
        if kind == "swapped":
            return w_xt * x0 + w_x0 * x_t, var
        if kind == "forward_variance":
            return mean, 1 - a_t / a_s
        if kind == "alpha_bar_weight":
            return w_x0 * x0 + a_t.sqrt() * (1 - a_s) / (1 - a_t) * x_t, var
        return mean, torch.full((len(x0),), float(var))  # kind == "per_sample_variance": (B,) does not broadcast
    return fn


@pytest.mark.parametrize("kind, expected", [
    ("swapped", "the weights of x0 and x_t are swapped"), ("forward_variance", "variance of the forward jump"),
    ("alpha_bar_weight", "the weight of x_t holds √(ᾱ_t/ᾱ_s)"), ("per_sample_variance", "the variance has shape (B,)"),
])
def test_more_posterior_mistakes_are_named(kind, expected, capsys):
    ok, line = _verdict(ex.check_posterior, _posterior_variant(kind), capsys)
    assert ok is False and expected in line, line


def test_posterior_must_return_a_pair(capsys):
    ok, line = _verdict(ex.check_posterior, lambda *a: posterior_ok(*a)[0], capsys)
    assert ok is False and "returned Tensor, expected a pair (mean, variance)" in line, line


# ---------------------------------------------------------------------- 6 · ancestral step
@pytest.mark.parametrize("kwargs, expected", [
    (dict(clip=False), "values differ at t = 500: x̂0 was not clipped"),
    (dict(variance="beta", noise_at_0=True), "values differ at t = 0: noise was added at the last step"),
])
def test_ancestral_step_mistakes_are_named(kwargs, expected, capsys):
    ok, line = _verdict(ex.check_ancestral_step, lambda *a: ancestral_ok(*a, **kwargs), capsys)
    assert ok is False and expected in line, line


def test_ancestral_step_with_beta_variance_passes_with_a_note(capsys):
    ok, line = _verdict(ex.check_ancestral_step, lambda *a: ancestral_ok(*a, variance="beta"), capsys)
    assert ok is True and "passed (with σ_t² = β_t" in line, line


def test_ancestral_step_of_notebook_03_without_clipping_is_told_to_clip(capsys):
    def eps_form(model, x_t, t, schedule, z):  # eq. (11): the form that cannot clip x̂0
        eps = model(x_t, torch.full((x_t.shape[0],), t))
        alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
        mean = (x_t - beta / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()
        return mean + schedule.posterior_variance[t].sqrt() * z if t > 0 else mean
    ok, line = _verdict(ex.check_ancestral_step, eps_form, capsys)
    assert ok is False and "x̂0 was not clipped" in line, line


def _ancestral_variant(kind):
    def fn(model, x_t, t, schedule, noise):
        eps = model(x_t, torch.full((x_t.shape[0],), t))
        mean, var = posterior_ok(predict_x0(x_t, t, eps, schedule).clamp(-1, 1), x_t, t, t - 1, schedule)
        if kind == "clip_result":
            return ancestral_ok(model, x_t, t, schedule, noise, clip=False).clamp(-1, 1)
        if kind == "whole_eps":
            return (x_t - eps) / schedule.alphas[t].sqrt() + var.sqrt() * noise
        if kind == "variance_not_std":
            return mean + var * noise
        return mean  # kind == "no_noise"
    return fn


@pytest.mark.parametrize("kind, expected", [
    ("clip_result", "you clipped x_{t−1}"), ("whole_eps", "you subtract the whole predicted noise"),
    ("variance_not_std", "σ_t is the square root of the variance"), ("no_noise", "you added no noise"),
])
def test_more_ancestral_step_mistakes_are_named(kind, expected, capsys):
    ok, line = _verdict(ex.check_ancestral_step, _ancestral_variant(kind), capsys)
    assert ok is False and expected in line, line


def test_ancestral_step_passing_an_int_t_to_the_model_gets_the_models_message(capsys):
    def fn(model, x_t, t, schedule, noise):
        model(x_t, t)
    ok, line = _verdict(ex.check_ancestral_step, fn, capsys)
    assert ok is False and "TypeError: t must be a tensor of shape (B,), got int" in line, line


# ---------------------------------------------------------------------- 7 · DDIM step with an x0-model
@pytest.mark.parametrize("kwargs, expected", [
    (dict(output_as_eps=True), "this model predicts x̂0, not ε̂"),
    (dict(negative_index=True), "values differ at t = 0: at t_prev = −1 (the end) ᾱ_prev is 1"),
    (dict(no_direction=True), "the noise part √(1 − ᾱ_prev) ε̂ is missing"),
])
def test_ddim_step_mistakes_are_named(kwargs, expected, capsys):
    ok, line = _verdict(ex.check_ddim_step, lambda *a: ddim_ok(*a, **kwargs), capsys)
    assert ok is False and expected in line, line


def _ddim_variant(kind):
    def fn(x0_model, x_t, t, t_prev, schedule):
        table = schedule.alphas if kind == "alphas" else schedule.alpha_bars
        t_model = t_prev if kind == "model_at_t_prev" and t_prev >= 0 else t
        x0 = x0_model(x_t, torch.full((x_t.shape[0],), t_model))
        a_t = table[t]
        a_p = table[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        if kind == "prev_table" and t_prev >= 0:
            a_p = schedule.alpha_bars_prev[t_prev]
        if kind == "to_t_minus_one":
            a_p = schedule.alpha_bars_prev[t]
        eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        if kind == "no_roots":
            return a_p * x0 + (1 - a_p) * eps
        return a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps
    return fn


@pytest.mark.parametrize("kind, expected", [
    ("prev_table", "not alpha_bars_prev[t_prev]"), ("model_at_t_prev", "evaluate the model at t"),
    ("to_t_minus_one", "you stepped to t − 1"), ("alphas", "ᾱ_t or α_t"), ("no_roots", "forget the square roots"),
])
def test_more_ddim_step_mistakes_are_named(kind, expected, capsys):
    ok, line = _verdict(ex.check_ddim_step, _ddim_variant(kind), capsys)
    assert ok is False and expected in line, line


# ---------------------------------------------------------------------- 8-11
@pytest.mark.parametrize("fn, expected", [
    (lambda steps, ts: {s.t: s.x_prev for s in steps if s.t in ts}, "is step.x_prev"),
    (lambda steps, ts: {s.t: s.x0_pred for s in steps if s.t in ts}, "is step.x0_pred"),
    (lambda steps, ts: {s.t: s.x_t for s in steps if s.t in ts[:-1]}, "t = 0 is missing"),
    (lambda steps, ts: [s.x_t for s in steps if s.t in ts], "expected a dict"),
    (lambda steps, ts: {s.t: s.x_t for s in steps}, "which was not asked for"),
])
def test_filmstrip_mistakes_are_named(fn, expected, capsys):
    ok, line = _verdict(ex.check_filmstrip, fn, capsys)
    assert ok is False and expected in line, line


@pytest.mark.parametrize("fn, expected", [
    (lambda s: s.alpha_bars_prev - s.alpha_bars, "forget the square roots"),
    (lambda s: -signal_loss_ok(s), "the sign is flipped"),
    (lambda s: -torch.diff(s.alpha_bars.sqrt()), "shape is (999,), expected (1000,)"),
    (lambda s: s.betas, "that is β_t"),
    (lambda s: 1 - s.alpha_bars.sqrt(), "the signal lost from 0 up to t"),
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


def test_a_result_the_check_cannot_handle_is_one_line(capsys):
    class Weird(dict):
        def items(self):
            raise RuntimeError("boom")
    ok, line = _verdict(ex.check_filmstrip, lambda steps, ts: Weird(), capsys)
    assert ok is False and line == "filmstrip: could not check your result (RuntimeError: boom)", line


# ---------------------------------------------------------------------- the training loop
def train_ok(model, ema_model, data, schedule, steps, batch_size=500, decay=0.995, lr=2e-3, zero_grad=True,
             timesteps="strata", target="eps", table="alpha_bars", ema="after", package_loss=False):
    """Algorithm 1 with stratified timesteps and an EMA, or one of its classic mistakes."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    width, T = schedule.T // batch_size, schedule.T
    slices = torch.arange(batch_size) * width

    def update_ema(weight_of_new):
        with torch.no_grad():
            for average, weight in zip(ema_model.parameters(), model.parameters()):
                average.lerp_(weight, weight_of_new)

    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (batch_size,))]
        t = {"strata": lambda: slices + torch.randint(0, width, (batch_size,)),
             "one_to_T": lambda: slices + torch.randint(1, width + 1, (batch_size,)),  # the paper's t
             "one_to_T_raw": lambda: slices + torch.randint(1, width + 1, (batch_size,)),
             "uniform": lambda: torch.randint(0, T, (batch_size,)),
             "float": lambda: (torch.arange(batch_size) + torch.rand(batch_size)) * width}[timesteps]()
        noise = torch.randn_like(x0)
        a = getattr(schedule, table)[t.long() - int(timesteps == "one_to_T")][:, None]  # paper t indexes t - 1
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        if package_loss:
            loss = ddpm_helpers.loss_simple(model, x0, schedule, t=t, noise=noise)
        else:
            loss = ((model(x_t, t) - (noise if target == "eps" else x0)) ** 2).mean()
        if zero_grad:
            optimizer.zero_grad()
        if ema == "before":
            update_ema(1 - decay)
        loss.backward()
        optimizer.step()
        if ema in ("after", "swapped"):
            update_ema(1 - decay if ema == "after" else decay)
    return []


def _train_verdict(fn, capsys, **kwargs):
    return _verdict(lambda f: ex.check_training_loop(f, **{"steps": 6, "n_points": 200, "seeds": (0,), **kwargs}),
                    fn, capsys)


def test_training_loop_genuine_solution_passes_and_reports_w2_against_the_floor(capsys):
    ok, line = _train_verdict(train_ok, capsys, max_ratio=1e9)
    assert ok is True and line.startswith("training_loop: passed: EMA model: W2 ") and "the real floor" in line, line


def test_training_loop_fails_a_model_far_from_the_moons(capsys):
    ok, line = _train_verdict(train_ok, capsys)  # 6 steps: noise, not moons
    assert ok is False and "the samples are too far from the moons" in line and "at most 2× passes" in line, line


@pytest.mark.parametrize("kwargs, expected", [
    ({"zero_grad": False}, "gradients pile up from step to step: call optimizer.zero_grad()"),
    ({"timesteps": "one_to_T"}, "the model was given t = 1000: code timesteps run 0 … T − 1"),
    ({"timesteps": "one_to_T_raw"}, "IndexError: index 1000 is out of bounds for dimension 0 with size 1000 "
                                    "(indices run 0 … 999: code timesteps t = 0 … T − 1"),
    ({"timesteps": "float"}, "the model was given t as torch.float32"),
    ({"timesteps": "uniform"}, "the timesteps of a batch are not stratified"),
    ({"target": "x0"}, "you trained the model to predict x0"),
    ({"table": "alphas"}, "did you use ᾱ_t or α_t?"),
    ({"batch_size": 250}, "the model was given a batch of 250 timesteps: the check asked for batch_size = 500"),
    ({"ema": "none"}, "the EMA model never changed"),
    ({"ema": "swapped"}, "your EMA model holds the latest weights, not an average of them"),
    ({"ema": "before"}, "your EMA is one step behind"),
    ({"package_loss": True}, "call your own math: this function calls ddpm_helpers.loss_simple"),
])
def test_training_loop_mistakes_are_named(kwargs, expected, capsys):
    def fn(model, ema_model, data, schedule, steps, batch_size=500, decay=0.995):
        return train_ok(model, ema_model, data, schedule, steps, **{"batch_size": batch_size, "decay": decay, **kwargs})
    ok, line = _train_verdict(fn, capsys, max_ratio=1e9)
    assert ok is False and expected in line, line


def test_training_loop_that_takes_other_steps_or_exceeds_the_budget_is_told(capsys):
    ok, line = _train_verdict(lambda m, e, d, s, steps, **kw: train_ok(m, e, d, s, steps + 1, **kw), capsys)
    assert ok is False and "your loop took 7 gradient steps; the check asked for steps = 6" in line, line
    ok, line = _train_verdict(train_ok, capsys, cpu_seconds=0.0)
    assert ok is False and "training used more than 0 CPU-seconds" in line, line
