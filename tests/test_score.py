"""The ideal denoiser of a finite data set against brute-force Bayes, the one-point oracle and autograd."""

import pytest
import torch

import ddpm_helpers.score as score_module
from ddpm_helpers.diffusion import optimal_eps_point, q_sample
from ddpm_helpers.samplers import ddim_sample
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.score import ideal_eps, ideal_log_density, ideal_x0, score_from_eps

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def linear():
    return NoiseSchedule.linear(T=1000)


def brute_force_x0(x_t, t, data, schedule):
    """E[x0 | x_t] by Bayes' rule, one sample and one data point at a time, with Gaussian densities."""
    out = []
    for x, s in zip(x_t.double(), t.tolist()):
        a = schedule.alpha_bars[s].double()
        likelihood = torch.stack([torch.exp(-(x - a.sqrt() * p.double()).square().sum() / (2 * (1 - a)))
                                  for p in data])
        w = likelihood / likelihood.sum()
        out.append(sum(w_i * p.double() for w_i, p in zip(w, data)))
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(2,), (1, 2, 3)])
def test_ideal_x0_is_the_posterior_mean_by_bayes_rule(linear, shape):
    g = torch.Generator().manual_seed(0)
    data = torch.rand(6, *shape, generator=g) * 2 - 1
    x_t = q_sample(data[[0, 1, 2, 3]], torch.tensor([5, 100, 400, 999]), linear, generator=g)
    t = torch.tensor([5, 100, 400, 999])
    got = ideal_x0(x_t, t, data, linear)
    assert got.shape == x_t.shape and got.dtype == x_t.dtype
    torch.testing.assert_close(got.double(), brute_force_x0(x_t, t, data, linear), rtol=1e-5, atol=1e-6)


def test_ideal_x0_picks_the_right_point_at_small_t_and_the_mean_at_large_t(linear):
    data = torch.tensor([[-0.8, 0.0], [0.8, 0.3], [0.0, -0.5]])
    x_t = q_sample(data, 0, linear, generator=torch.Generator().manual_seed(1))       # sigma = 0.01
    torch.testing.assert_close(ideal_x0(x_t, 0, data, linear), data)
    noise_only = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
    # at t = 999, sqrt(alpha_bar) = 0.006: x_t says almost nothing, weights ~1/3 each (to ~1e-2)
    torch.testing.assert_close(ideal_x0(noise_only, 999, data, linear), data.mean(0).expand(3, 2), atol=0.02, rtol=0)


def test_ideal_eps_of_one_point_is_the_one_point_oracle(linear):
    x0 = torch.tensor([[0.3, -0.7]])
    x_t = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 10, 300, 700, 999])
    torch.testing.assert_close(ideal_eps(x0, linear)(x_t, t), optimal_eps_point(x0, linear)(x_t, t),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("t", [3, 150, 600])
def test_ideal_eps_is_minus_sqrt_one_minus_alpha_bar_times_the_autograd_score(linear, t):
    # eps* = -sqrt(1 - a) grad log p_t: the ideal denoiser and the gradient of the mixture density agree.
    g = torch.Generator().manual_seed(t)
    data = torch.rand(7, 2, generator=g) * 2 - 1
    x_t = torch.randn(9, 2, generator=g).double().requires_grad_()
    grad, = torch.autograd.grad(ideal_log_density(x_t, t, data, linear).sum(), x_t)
    a = linear.alpha_bars[t].double()
    torch.testing.assert_close(ideal_eps(data, linear)(x_t.detach(), torch.full((9,), t)), -(1 - a).sqrt() * grad)
    torch.testing.assert_close(score_from_eps(-(1 - a).sqrt() * grad, t, linear), grad)


def test_ideal_log_density_is_normalised(linear):
    # 1-D mixture at t = 50: integrate exp(log p) on a fine grid (the Gaussians have std 0.18).
    data = torch.tensor([[-0.9], [0.2], [0.5]])
    grid = torch.linspace(-4, 4, 8001).reshape(-1, 1)
    density = ideal_log_density(grid, 50, data, linear).exp()
    assert torch.trapezoid(density, grid.flatten().double()).item() == pytest.approx(1.0, abs=1e-6)


def test_chunks_do_not_change_the_result(linear, monkeypatch):
    g = torch.Generator().manual_seed(4)
    data, x_t = torch.rand(50, 2, generator=g), torch.randn(33, 2, generator=g)
    whole = ideal_x0(x_t, 200, data, linear)
    monkeypatch.setattr(score_module, "CHUNK_ENTRIES", 50 * 4)      # 4 rows of x_t per chunk
    torch.testing.assert_close(ideal_x0(x_t, 200, data, linear), whole)
    assert ideal_log_density(x_t, 200, data, linear).shape == (33,)


def test_sampling_with_the_ideal_denoiser_returns_training_points(linear):
    # Five points far apart (>= 0.5) compared with the last noise level sqrt(1 - alpha_bar_0) = 0.01:
    # every deterministic DDIM sample lands on one of them.
    data = torch.tensor([[-0.9, -0.4], [-0.3, 0.6], [0.2, -0.2], [0.8, 0.5], [0.9, -0.8]])
    samples = ddim_sample(ideal_eps(data, linear), (64, 2), linear, steps=50,
                          generator=torch.Generator().manual_seed(5), progress=False)
    nearest = torch.cdist(samples, data).min(dim=1)
    assert nearest.values.max().item() < 1e-3
    assert len(nearest.indices.unique()) >= 4        # not all in one place


@pytest.mark.parametrize("call, message", [
    (lambda s: ideal_eps(torch.full((3, 2), 255.0), s), r"x / 127\.5 - 1"),
    (lambda s: ideal_x0(torch.randn(4, 2), 3, torch.rand(5, 3), s), "points of x_t's shape"),
    (lambda s: ideal_x0(torch.randn(4, 2), 1000, torch.rand(5, 2), s), "0 ... 999"),
])
def test_bad_input_raises_clear_errors(linear, call, message):
    with pytest.raises(ValueError, match=message):
        call(linear)
