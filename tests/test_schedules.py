"""NoiseSchedule: golden values from the definitions (float64), cosine properties, indexing, errors."""
import json
import math

import pytest
import torch

from ddpm_helpers.schedules import NoiseSchedule

torch.set_num_threads(1)

T = 1000
CHECK_TS = [0, 1, 2, 499, 998, 999]


def linear_beta(t, T=T, start=1e-4, end=0.02):
    return start + (end - start) * t / (T - 1)


def linear_alpha_bar(t):
    """prod_{s=0}^{t} (1 - beta_s); alpha_bar_{-1} = 1 (empty product)."""
    return math.prod(1 - linear_beta(s) for s in range(t + 1))


def cosine_alpha_bar(t, T=T, s=0.008):
    """Nichol & Dhariwal eq. 17 at paper step t (= code step t-1)."""
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    return f(t) / f(0)


@pytest.fixture(scope="module")
def linear():
    return NoiseSchedule.linear(T=T)


@pytest.fixture(scope="module")
def cosine():
    return NoiseSchedule.cosine(T=T)


@pytest.mark.parametrize("t", CHECK_TS)
def test_linear_schedule_matches_definition_at_golden_timesteps(linear, t):
    beta, a_bar, a_bar_prev = linear_beta(t), linear_alpha_bar(t), linear_alpha_bar(t - 1)
    close = lambda got, want: pytest.approx(want, rel=2e-6, abs=1e-12) == got.item()
    assert close(linear.betas[t], beta)
    assert close(linear.alphas[t], 1 - beta)
    # rel 2e-6 separates alpha_bar_t from alpha_bar_{t-1}: they differ by a factor (1 - beta_t) <= 1 - 1e-4
    assert close(linear.alpha_bars[t], a_bar)
    assert close(linear.alpha_bars_prev[t], a_bar_prev)
    assert close(linear.posterior_variance[t], beta * (1 - a_bar_prev) / (1 - a_bar))
    assert close(linear.snr[t], a_bar / (1 - a_bar))
    assert close(linear.log_snr[t], math.log(a_bar / (1 - a_bar)))


def test_linear_schedule_last_alpha_bar_is_the_well_known_value(linear):
    # alpha_bar_T of the DDPM schedule (T=1000, 1e-4 ... 0.02), as printed by most implementations
    assert linear.alpha_bars[-1].item() == pytest.approx(4.0358e-05, rel=1e-3)
    assert linear.alpha_bars[0].item() == pytest.approx(1 - 1e-4, rel=1e-7)


def test_all_tensors_are_float32_of_length_T(linear, cosine):
    names = ["betas", "alphas", "alpha_bars", "alpha_bars_prev", "posterior_variance", "snr", "log_snr"]
    for schedule in (linear, cosine):
        assert schedule.T == T
        for name in names:
            value = getattr(schedule, name)
            assert value.dtype == torch.float32 and value.shape == (T,), name


def test_alpha_bars_prev_is_alpha_bars_shifted_by_one_with_one_first(linear, cosine):
    for schedule in (linear, cosine):
        assert schedule.alpha_bars_prev[0].item() == 1.0
        torch.testing.assert_close(schedule.alpha_bars_prev[1:], schedule.alpha_bars[:-1], rtol=0, atol=0)


def test_posterior_variance_is_zero_at_t0_and_between_zero_and_beta(linear, cosine):
    for schedule in (linear, cosine):
        assert schedule.posterior_variance[0].item() == 0.0
        assert bool((schedule.posterior_variance[1:] > 0).all())
        assert bool((schedule.posterior_variance <= schedule.betas).all())


@pytest.mark.parametrize("t", [0, 1, 100, 500, 900])
def test_cosine_alpha_bars_match_nichol_dhariwal_definition(cosine, t):
    # code step t is paper step t+1; the 0.999 clip does not bite before the last steps
    assert cosine.alpha_bars[t].item() == pytest.approx(cosine_alpha_bar(t + 1), rel=2e-6)
    assert cosine.alpha_bars_prev[t].item() == pytest.approx(cosine_alpha_bar(t), rel=2e-6)
    want_beta = 1 - cosine_alpha_bar(t + 1) / cosine_alpha_bar(t)
    assert cosine.betas[t].item() == pytest.approx(want_beta, rel=1e-5)


def test_cosine_schedule_properties(cosine):
    assert bool((cosine.alpha_bars[1:] < cosine.alpha_bars[:-1]).all())   # strictly decreasing
    assert bool((cosine.betas > 0).all()) and bool((cosine.betas <= 0.999).all())
    assert cosine.betas[-1].item() == pytest.approx(0.999)               # the clip bites at the end
    assert cosine.alpha_bars[0].item() > 0.9999
    assert cosine.alpha_bars[-1].item() < 1e-6
    torch.testing.assert_close(cosine.alpha_bars, torch.cumprod(1 - cosine.betas.double(), 0).float())


def test_snr_decreases_and_log_snr_is_its_log(linear, cosine):
    for schedule in (linear, cosine):
        assert bool((schedule.snr[1:] < schedule.snr[:-1]).all())
        torch.testing.assert_close(schedule.log_snr, schedule.snr.log(), rtol=1e-5, atol=1e-5)


def test_from_config_rebuilds_the_same_schedule_and_config_is_plain_json(linear, cosine):
    for schedule in (linear, cosine, NoiseSchedule.linear(T=50, beta_start=1e-3, beta_end=0.05)):
        config = json.loads(json.dumps(schedule.config))
        rebuilt = NoiseSchedule.from_config(config)
        assert rebuilt.kind == schedule.kind and rebuilt.config == schedule.config
        torch.testing.assert_close(rebuilt.betas, schedule.betas, rtol=0, atol=0)
    assert linear.config == {"kind": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert cosine.config == {"kind": "cosine", "T": 1000, "s": 0.008}


def test_from_betas_matches_linear_and_rejects_betas_outside_open_unit_interval(linear):
    custom = NoiseSchedule.from_betas(torch.linspace(1e-4, 0.02, T, dtype=torch.float64))
    torch.testing.assert_close(custom.alpha_bars, linear.alpha_bars, rtol=0, atol=0)
    for bad in ([0.1, 0.0], [0.1, 1.0], [0.5, -0.1], [0.2, float("nan")]):
        with pytest.raises(ValueError, match="open interval"):
            NoiseSchedule.from_betas(torch.tensor(bad))
    with pytest.raises(TypeError, match="1-D"):
        NoiseSchedule.from_betas(torch.full((2, 3), 0.1))
    with pytest.raises(TypeError, match="floating"):
        NoiseSchedule.from_betas(torch.tensor([1, 2]))


@pytest.mark.parametrize("kwargs, error", [
    ({"T": 0}, ValueError), ({"T": -5}, ValueError), ({"T": 10.0}, TypeError), ({"T": True}, TypeError),
    ({"beta_start": 0.0}, ValueError), ({"beta_start": 0.03}, ValueError), ({"beta_end": 1.0}, ValueError),
    ({"beta_end": "0.02"}, TypeError), ({"beta_start": float("inf")}, TypeError),
])
def test_linear_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        NoiseSchedule.linear(**kwargs)


def test_cosine_and_from_config_reject_bad_arguments():
    with pytest.raises(ValueError, match="s must be >= 0"):
        NoiseSchedule.cosine(T=10, s=-0.1)
    with pytest.raises(ValueError, match="T must be >= 1"):
        NoiseSchedule.cosine(T=0)
    with pytest.raises(ValueError, match="unknown schedule kind"):
        NoiseSchedule.from_config({"kind": "sigmoid", "T": 10})
    with pytest.raises(ValueError, match="does not take"):
        NoiseSchedule.from_config({"kind": "cosine", "T": 10, "beta_end": 0.02})
    with pytest.raises(TypeError, match="'kind'"):
        NoiseSchedule.from_config({"T": 10})


def test_check_timesteps_accepts_int_and_tensor_and_returns_long_batch():
    schedule = NoiseSchedule.linear(T=10)
    assert schedule.check_timesteps(3, batch=4).tolist() == [3, 3, 3, 3]
    t = schedule.check_timesteps(torch.tensor([0, 9, 5], dtype=torch.int32), batch=3)
    assert t.dtype == torch.long and t.tolist() == [0, 9, 5]
    assert schedule.check_timesteps(torch.tensor(7), batch=2).tolist() == [7, 7]
    assert schedule.check_timesteps(-1, batch=1, allow_end=True).tolist() == [-1]


@pytest.mark.parametrize("t, error, message", [
    (10, ValueError, "0 ... 9"), (-1, ValueError, "0 ... 9"), (torch.tensor([0, 10]), ValueError, "0 ... 9"),
    (torch.tensor([1, 2, 3]), ValueError, r"shape \(2,\)"), (torch.zeros(2, 1, dtype=torch.long), ValueError, "shape"),
    (torch.tensor([1.0, 2.0]), TypeError, "integer"), (2.0, TypeError, "int"), (True, TypeError, "int"),
])
def test_check_timesteps_rejects_bad_timesteps(t, error, message):
    with pytest.raises(error, match=message):
        NoiseSchedule.linear(T=10).check_timesteps(t, batch=2)


def test_gather_shapes_for_broadcasting():
    schedule = NoiseSchedule.linear(T=10)
    t = schedule.check_timesteps(torch.tensor([1, 4]), batch=2)
    out = schedule.gather(schedule.alpha_bars, t, ndim=4)
    assert out.shape == (2, 1, 1, 1)
    assert out.flatten().tolist() == [schedule.alpha_bars[1].item(), schedule.alpha_bars[4].item()]
    assert schedule.gather(schedule.betas, t, ndim=2).shape == (2, 1)


def test_to_returns_a_new_schedule_and_device_mismatch_names_the_fix():
    schedule = NoiseSchedule.linear(T=10)
    moved = schedule.to("meta")                      # a device without data: enough to test moves
    assert moved.device.type == "meta" and moved.betas.device.type == "meta"
    assert schedule.device.type == "cpu" and moved.config == schedule.config and moved.T == 10
    with pytest.raises(ValueError, match=r"schedule\.to\(x\.device\)"):
        moved.check_device(torch.zeros(2, 2))
    assert "meta" in repr(moved)


def test_repr_is_helpful():
    text = repr(NoiseSchedule.cosine(T=100))
    assert "cosine" in text and "T=100" in text and "alpha_bar" in text
