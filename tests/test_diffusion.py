"""Forward process, posterior, x0 prediction, L_simple and the Gaussian oracle, against exact
expectations; statistical checks use a fixed generator and tolerances derived in the comments."""
import math

import pytest
import torch

from ddpm_helpers.diffusion import (
    loss_simple, optimal_eps_gaussian, optimal_eps_point, predict_x0, q_posterior, q_sample, q_step,
)
from ddpm_helpers.schedules import NoiseSchedule

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def linear():
    return NoiseSchedule.linear(T=1000)


@pytest.fixture(scope="module")
def big_steps():
    """Few, large betas: an off-by-one in the number of Markov steps changes the moments a lot."""
    return NoiseSchedule.from_betas(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64))


def image_x0(n):
    """n copies of one 1x4x4 'image' with pixel values spread over [-1, 1]."""
    return torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4).expand(n, 1, 4, 4).contiguous()


def iterate_chain(x0, t, schedule, generator):
    """x_t by t+1 Markov steps q_step(., 0), ..., q_step(., t) (code t = paper t+1)."""
    x = x0
    for s in range(t + 1):
        x = q_step(x, s, schedule, generator=generator)
    return x


def test_q_sample_is_equation_4_with_given_noise(linear):
    x0, noise = torch.randn(3, 1, 5, 5), torch.randn(3, 1, 5, 5)
    t = torch.tensor([0, 250, 999])
    a = linear.alpha_bars[t].reshape(3, 1, 1, 1)
    torch.testing.assert_close(q_sample(x0, t, linear, noise=noise), a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert q_sample(x0, 7, linear, noise=noise).equal(q_sample(x0, torch.full((3,), 7), linear, noise=noise))


@pytest.mark.parametrize("t", [100, 500, 999])
def test_noiseless_chain_mean_equals_sqrt_alpha_bar_times_x0_exactly(linear, t):
    # Mean of the iterated chain is prod sqrt(alpha_s) x0 = sqrt(alpha_bar_t) x0. One step too few or
    # too many changes it by a factor sqrt(1 - beta_t), i.e. by >= 1e-3 relative here, far above rtol.
    x0 = image_x0(2)
    x = x0
    for s in range(t + 1):
        x = q_step(x, s, linear, noise=torch.zeros_like(x0))
    torch.testing.assert_close(x, q_sample(x0, t, linear, noise=torch.zeros_like(x0)), rtol=2e-5, atol=1e-8)


@pytest.mark.parametrize("schedule_name, t", [("big_steps", 0), ("big_steps", 2), ("big_steps", 5),
                                              ("linear", 30)])
def test_closed_form_matches_iterated_chain_in_distribution(request, schedule_name, t):
    # Both sides are N(sqrt(a) x0, (1 - a) I), a = alpha_bar_t. With n draws per pixel, the sample mean
    # has standard error sqrt((1-a)/n) and the sample variance sqrt(2/n) (1-a). We check each against
    # the exact value with 5 standard errors (per pixel and for the 2-D point cloud) -- with 16 pixels
    # the chance of a false alarm is < 1e-4. On `big_steps` an extra/missing step shifts the mean by
    # >= 5 % of x0 and the variance by >= 0.06, i.e. > 10 standard errors: the test would fail.
    schedule = request.getfixturevalue(schedule_name)
    g = torch.Generator().manual_seed(1234 + t)
    n = 20_000
    a = schedule.alpha_bars[t].double().item()
    for x0 in (image_x0(n), torch.tensor([[0.8, -0.5]]).expand(n, 2).contiguous()):
        for x_t in (iterate_chain(x0, t, schedule, g), q_sample(x0, t, schedule, generator=g)):
            mean, var = x_t.double().mean(0), x_t.double().var(0)
            mean_tol, var_tol = 5 * math.sqrt((1 - a) / n), 5 * math.sqrt(2 / n) * (1 - a)
            assert (mean - math.sqrt(a) * x0[0]).abs().max().item() < mean_tol
            assert (var - (1 - a)).abs().max().item() < var_tol


@pytest.mark.parametrize("t", [0, 1, 2, 5])
def test_q_posterior_equals_bayes_rule_for_gaussians(big_steps, t):
    # Bayes: q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0); multiply the two Gaussians
    # (precision form), all in float64, independently of the closed form (7).
    b = big_steps.betas.double()
    a_bar = torch.cumprod(1 - b, 0)
    a_prev = 1.0 if t == 0 else a_bar[t - 1].item()
    x0, x_t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    mean, var = q_posterior(x0.float(), x_t.float(), t, big_steps)
    if t == 0:            # x_{-1} is x0 itself: a point mass
        want_mean, want_var = x0, 0.0
    else:
        precision = 1 / (1 - a_prev) + (1 - b[t].item()) / b[t].item()
        want_var = 1 / precision
        want_mean = want_var * (math.sqrt(a_prev) * x0 / (1 - a_prev) + math.sqrt(1 - b[t].item()) * x_t / b[t].item())
    torch.testing.assert_close(mean.double(), want_mean, rtol=1e-5, atol=1e-6)
    assert var.shape == (4, 1)
    torch.testing.assert_close(var.double(), torch.full((4, 1), float(want_var), dtype=torch.float64), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_predict_x0_inverts_q_sample(kind):
    schedule = getattr(NoiseSchedule, kind)(T=1000)
    x0, noise = torch.rand(6, 1, 4, 4) * 2 - 1, torch.randn(6, 1, 4, 4)
    t = torch.tensor([0, 1, 10, 300, 700, 900])
    x_t = q_sample(x0, t, schedule, noise=noise)
    torch.testing.assert_close(predict_x0(x_t, t, noise, schedule), x0, rtol=1e-4, atol=1e-4)


def test_loss_simple_is_zero_for_the_exact_noise_and_mean_square_noise_for_zero_model(linear):
    x0, noise = torch.randn(8, 2), torch.randn(8, 2)
    exact = optimal_eps_point(x0, linear)           # knows x0, so recovers the noise from x_t
    assert loss_simple(exact, x0, linear, noise=noise).item() < 1e-8
    zero = lambda x_t, t: torch.zeros_like(x_t)
    assert loss_simple(zero, x0, linear, t=5, noise=noise).item() == pytest.approx(noise.pow(2).mean().item())


def test_loss_simple_of_gaussian_oracle_equals_its_analytic_minimum(linear):
    # For x0 ~ N(0, sigma^2), the minimum of E||eps - eps*(x_t)||^2 is a sigma^2 / (a sigma^2 + 1 - a).
    # With n = 200,000 numbers the mean of the squared residual has standard error <= sqrt(2/n) * value.
    sigma, n, t = 0.5, 200_000, 300
    g = torch.Generator().manual_seed(0)
    x0 = sigma * torch.randn(n, 1, generator=g)
    a = linear.alpha_bars[t].double().item()
    want = a * sigma**2 / (a * sigma**2 + 1 - a)
    got = loss_simple(optimal_eps_gaussian(sigma, linear), x0, linear, t=t, generator=g).item()
    assert got == pytest.approx(want, rel=5 * math.sqrt(2 / n))


def test_loss_simple_draws_uniform_timesteps_and_is_seeded():
    schedule = NoiseSchedule.linear(T=5)
    seen = []

    def spy(x_t, t):
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        seen.append(t)
        return torch.zeros_like(x_t)

    x0 = torch.rand(5000, 2) * 2 - 1
    first = loss_simple(spy, x0, schedule, generator=torch.Generator().manual_seed(3))
    again = loss_simple(spy, x0, schedule, generator=torch.Generator().manual_seed(3))
    assert first.item() == again.item() and seen[0].equal(seen[1])
    counts = torch.bincount(seen[0], minlength=5).double()
    # uniform over 0..4: each count ~ Binomial(5000, 0.2), sd ~ 28; allow 5 sd
    assert counts.shape == (5,) and (counts - 1000).abs().max().item() < 5 * 28.3


def test_loss_simple_backpropagates_into_the_model(linear):
    model = torch.nn.Linear(2, 2)
    loss = loss_simple(lambda x_t, t: model(x_t), torch.randn(16, 2), linear, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and model.weight.grad is not None and model.weight.grad.abs().sum() > 0


def test_optimal_eps_gaussian_is_the_regression_of_eps_on_x_t(linear):
    # E[eps | x_t] is linear in x_t; the least-squares slope from 100,000 draws must match the oracle
    # (standard error of the slope ~ sqrt(residual var / (n var x_t)) < 0.004; tolerance 0.02).
    sigma, n, t = 0.3, 100_000, 400
    g = torch.Generator().manual_seed(1)
    x0, eps = sigma * torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)
    x_t = q_sample(x0, t, linear, noise=eps)
    slope = ((eps * x_t).sum() / (x_t * x_t).sum()).item()
    oracle_slope = (optimal_eps_gaussian(sigma, linear)(torch.ones(1, 1), torch.tensor([t]))).item()
    assert slope == pytest.approx(oracle_slope, abs=0.02)


def test_q_step_and_q_sample_shapes_for_points_and_images(linear):
    for shape in [(7, 2), (3, 1, 28, 28), (2, 3, 8, 8)]:
        x = torch.rand(shape) * 2 - 1
        assert q_step(x, 10, linear).shape == shape
        assert q_sample(x, torch.randint(0, 1000, (shape[0],)), linear).shape == shape


def test_generator_makes_forward_noise_reproducible(linear):
    x0 = torch.randn(4, 2)
    first = q_sample(x0, 500, linear, generator=torch.Generator().manual_seed(9))
    again = q_sample(x0, 500, linear, generator=torch.Generator().manual_seed(9))
    other = q_sample(x0, 500, linear, generator=torch.Generator().manual_seed(10))
    assert first.equal(again) and not first.equal(other)


@pytest.mark.parametrize("call, error, message", [
    (lambda s: q_sample(torch.randn(4, 2), 1000, s), ValueError, "0 ... 999"),
    (lambda s: q_sample(torch.randn(4, 2), -1, s), ValueError, "0 ... 999"),
    (lambda s: q_sample(torch.randn(4, 2), torch.tensor([1, 2]), s), ValueError, r"shape \(4,\)"),
    (lambda s: q_sample(torch.randn(4, 2), 1.5, s), TypeError, "int"),
    (lambda s: q_sample(torch.randn(4, 2), 3, s, noise=torch.randn(4, 3)), ValueError, "noise must have the shape"),
    (lambda s: q_step(torch.randn(4, 2), 3, s, noise=torch.randn(2)), ValueError, "noise must have the shape"),
    (lambda s: q_sample(torch.randn(2), 3, s), ValueError, "batch dimension"),
    (lambda s: q_sample(torch.ones(4, 2, dtype=torch.long), 3, s), TypeError, "floating-point"),
    (lambda s: q_posterior(torch.randn(4, 2), torch.randn(4, 3), 3, s), ValueError, "x0 must have the shape"),
    (lambda s: predict_x0(torch.randn(4, 2), 3, torch.randn(4, 1), s), ValueError, "eps must have the shape"),
    (lambda s: loss_simple(lambda x, t: x[:, :1], torch.randn(4, 2), s), ValueError, "model output"),
    (lambda s: optimal_eps_gaussian(-1.0, s), ValueError, "sigma"),
])
def test_bad_input_raises_clear_errors(linear, call, error, message):
    with pytest.raises(error, match=message):
        call(linear)


@pytest.mark.parametrize("make_x0, message", [
    (lambda: 255 * torch.rand(4, 1, 8, 8), r"x / 127\.5 - 1"),                  # 0-255 pixels, never scaled
    (lambda: torch.full((4, 2), 5.01), r"\[5\.01, 5\.01\].*2 \* x - 1"),
    (lambda: torch.tensor([[0.5, float("nan")], [0.1, 0.2]]), "1 NaN or infinite"),
    (lambda: torch.tensor([[0.5, float("inf")], [-float("inf"), 0.2]]), "2 NaN or infinite"),
])
def test_data_outside_the_data_range_or_not_finite_raises_naming_the_fix(linear, make_x0, message):
    x0 = make_x0()
    calls = []

    def model(x_t, t):
        calls.append(t)
        return torch.zeros_like(x_t)

    with pytest.raises(ValueError, match=message):
        q_sample(x0, 10, linear)
    with pytest.raises(ValueError, match=message):
        loss_simple(model, x0, linear)
    assert not calls  # rejected before the model ran


def test_noisy_data_slightly_beyond_one_pass_and_only_x0_is_checked(linear):
    # Two moons with noise reach |x| ~ 1.2; anything up to DATA_BOUND = 5 passes, both signs.
    x0 = torch.tensor([[1.2, -0.7], [5.0, -5.0]])
    assert torch.isfinite(q_sample(x0, 3, linear)).all()
    assert torch.isfinite(loss_simple(lambda x_t, t: torch.zeros_like(x_t), x0, linear))
    # x_t and a predicted x0 are not data: far outside [-1, 1] is normal for them (x0_pred at t = 999).
    x_t, far = 40 * torch.ones(2, 2), -300 * torch.ones(2, 2)
    assert torch.isfinite(predict_x0(x_t, 999, torch.zeros_like(x_t), linear)).all()
    assert torch.isfinite(q_posterior(far, x_t, 999, linear)[0]).all()
    assert torch.isfinite(q_step(x_t, 5, linear)).all()


def test_schedule_on_another_device_names_the_fix(linear):
    on_meta = linear.to("meta")
    for call in (lambda: q_sample(torch.randn(4, 2), 3, on_meta), lambda: q_step(torch.randn(4, 2), 3, on_meta),
                 lambda: loss_simple(lambda x, t: x, torch.randn(4, 2), on_meta)):
        with pytest.raises(ValueError, match=r"schedule = schedule\.to\(x0?(_prev)?\.device\)"):
            call()
