"""Samplers: exact one-step identities, analytic oracles, step bookkeeping, determinism, errors."""
import math

import pytest
import torch

from ddpm_helpers.diffusion import optimal_eps_gaussian, optimal_eps_point, q_posterior, q_sample
from ddpm_helpers.samplers import (
    SamplerStep, ancestral_sample, ancestral_sample_progressive, ddim_sample, ddim_sample_progressive,
    ddim_step, ddim_timesteps, naive_skip_sample, naive_skip_sample_progressive, naive_skip_timesteps, p_sample,
)
from ddpm_helpers.schedules import NoiseSchedule

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def linear():
    return NoiseSchedule.linear(T=1000)


@pytest.fixture(scope="module")
def small():
    return NoiseSchedule.linear(T=20, beta_start=1e-3, beta_end=0.2)


def point_setup(schedule, t, shape=(5, 2), seed=0):
    """A data set that is one point x0, x_t drawn from q(x_t | x0), and the exact noise oracle."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g) * 2 - 1
    eps = torch.randn(shape, generator=g)
    return x0, eps, q_sample(x0, t, schedule, noise=eps), optimal_eps_point(x0, schedule)


# ------------------------------------------------------------------ p_sample
@pytest.mark.parametrize("t", [1, 2, 10, 500, 999])
def test_p_sample_mean_is_posterior_mean_when_model_returns_true_noise(linear, t):
    x0, eps, x_t, oracle = point_setup(linear, t)
    got = p_sample(oracle, x_t, t, linear, noise=torch.zeros_like(x_t))
    torch.testing.assert_close(got, q_posterior(x0, x_t, t, linear)[0], rtol=1e-4, atol=1e-4)
    # the same mean written as eq. 11 of Ho et al., from the float64 definitions
    b = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    a_bar = torch.cumprod(1 - b, 0)[t]
    eq11 = (x_t.double() - b[t] / (1 - a_bar).sqrt() * eps.double()) / (1 - b[t]).sqrt()
    torch.testing.assert_close(got.double(), eq11, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variance, name", [("posterior", "posterior_variance"), ("beta", "betas")])
def test_p_sample_adds_sigma_times_noise(small, variance, name):
    x0, eps, x_t, oracle = point_setup(small, 7, shape=(3, 1, 4, 4))
    z = torch.randn(3, 1, 4, 4)
    mean = p_sample(oracle, x_t, 7, small, noise=torch.zeros_like(z), variance=variance)
    got = p_sample(oracle, x_t, 7, small, noise=z, variance=variance)
    torch.testing.assert_close(got, mean + getattr(small, name)[7].sqrt() * z)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_p_sample_adds_no_noise_at_t0_and_returns_x0_prediction(small, variance):
    x0, eps, x_t, oracle = point_setup(small, 0)
    got = p_sample(oracle, x_t, 0, small, noise=100 * torch.randn(5, 2), variance=variance)
    torch.testing.assert_close(got, x0, rtol=1e-5, atol=1e-5)
    # a mixed batch: only the row at t = 0 stays noise-free
    t = torch.tensor([0, 5, 0, 5, 5])
    z = torch.randn(5, 2)
    noisy = p_sample(oracle, x_t, t, small, noise=z, variance=variance)
    quiet = p_sample(oracle, x_t, t, small, noise=torch.zeros_like(z), variance=variance)
    assert noisy[[0, 2]].equal(quiet[[0, 2]]) and not noisy[[1, 3, 4]].equal(quiet[[1, 3, 4]])


def test_p_sample_calls_model_with_long_timesteps_on_the_data_device(small):
    calls = []

    def spy(x_t, t):
        calls.append(t)
        return torch.zeros_like(x_t)

    p_sample(spy, torch.randn(4, 2), 3, small, generator=torch.Generator().manual_seed(0))
    (t,) = calls
    assert t.dtype == torch.long and t.shape == (4,) and t.device.type == "cpu" and t.tolist() == [3] * 4


def test_clip_x0_clamps_the_prediction_to_the_data_range(small):
    far = optimal_eps_point(torch.full((2, 2), 5.0), small)        # data outside [-1, 1]
    x_t = torch.randn(2, 2)
    assert p_sample(far, x_t, 0, small, clip_x0=True).abs().max().item() == pytest.approx(1.0)
    assert p_sample(far, x_t, 0, small, clip_x0=False).abs().max().item() > 4


# ------------------------------------------------------------------ DDIM
@pytest.mark.parametrize("t", [0, 1, 2, 7, 19])
@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta1_consecutive_step_equals_p_sample_with_posterior_variance(small, t, clip_x0):
    g = torch.Generator().manual_seed(t)
    x_t, z = torch.randn(6, 1, 3, 3, generator=g), torch.randn(6, 1, 3, 3, generator=g)
    model = optimal_eps_gaussian(0.7, small)
    ddim = ddim_step(model, x_t, t, t - 1, small, eta=1.0, noise=z, clip_x0=clip_x0)
    ddpm = p_sample(model, x_t, t, small, noise=z, variance="posterior", clip_x0=clip_x0)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t, t_prev", [(999, 979), (500, 499), (500, 0), (10, -1), (0, -1), (999, -1)])
def test_ddim_eta0_with_exact_oracle_moves_along_the_same_noise(linear, t, t_prev):
    # For a one-point data set, eta = 0 maps sqrt(a_t) x0 + sqrt(1-a_t) eps to sqrt(a_prev) x0 + sqrt(1-a_prev) eps
    # exactly; using alpha_bar_t (or alpha_bar_{t_prev+1}) in place of alpha_bar_{t_prev} would break it.
    x0, eps, x_t, oracle = point_setup(linear, t)
    got = ddim_step(oracle, x_t, t, t_prev, linear, eta=0.0)
    want = x0 if t_prev == -1 else q_sample(x0, t_prev, linear, noise=eps)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)


def test_ddim_step_sigma_follows_equation_16(linear):
    t, t_prev, eta = 600, 400, 0.5
    x0, eps, x_t, oracle = point_setup(linear, t)
    z = torch.randn(5, 2)
    b = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    a_bar = torch.cumprod(1 - b, 0)
    a_t, a_prev = a_bar[t], a_bar[t_prev]
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    want = a_prev.sqrt() * x0.double() + (1 - a_prev - sigma**2).sqrt() * eps.double() + sigma * z.double()
    torch.testing.assert_close(ddim_step(oracle, x_t, t, t_prev, linear, eta=eta, noise=z).double(), want,
                               rtol=1e-4, atol=1e-4)


def test_ddim_step_accepts_per_sample_tensor_pairs(linear):
    x0, eps, x_t, oracle = point_setup(linear, 300, shape=(3, 2))
    x_t = q_sample(x0, torch.tensor([300, 200, 5]), linear, noise=eps)
    got = ddim_step(oracle, x_t, torch.tensor([300, 200, 5]), torch.tensor([100, -1, 4]), linear)
    want = torch.stack([q_sample(x0, 100, linear, noise=eps)[0], x0[1], q_sample(x0, 4, linear, noise=eps)[2]])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("steps", [1, 10, 50])
def test_ddim_eta0_is_deterministic_and_recovers_a_single_point(linear, steps):
    x0 = torch.tensor([[0.3, -0.8]])
    oracle = optimal_eps_point(x0, linear)
    a = ddim_sample(oracle, (64, 2), linear, steps=steps, generator=torch.Generator().manual_seed(0), progress=False)
    b = ddim_sample(oracle, (64, 2), linear, steps=steps, generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(a, x0.expand(64, 2), rtol=0, atol=1e-4)
    x_T = torch.randn(8, 2)
    assert ddim_sample(oracle, (8, 2), linear, steps=steps, x_T=x_T, progress=False).equal(
        ddim_sample(oracle, (8, 2), linear, steps=steps, x_T=x_T, progress=False))
    assert b.shape == (64, 2)


def test_ddim_timesteps_examples_and_properties():
    assert ddim_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    assert ddim_timesteps(1000, 1) == [999] and ddim_timesteps(1, 1) == [0]
    for T in (2, 7, 100, 1000):
        for steps in sorted({min(T, max(2, n)) for n in (2, 3, T // 3, T // 2, T - 1, T)}):
            ts = ddim_timesteps(T, steps)
            assert len(ts) == steps and ts[0] == T - 1 and ts[-1] == 0 and all(type(t) is int for t in ts)
            assert all(a > b for a, b in zip(ts, ts[1:])), (T, steps, ts)
            gaps = [a - b for a, b in zip(ts, ts[1:])]
            assert max(gaps) - min(gaps) <= 1                  # evenly spaced up to rounding


@pytest.mark.parametrize("T, steps, error", [(10, 0, ValueError), (10, 11, ValueError), (10, 2.0, TypeError),
                                             (0, 1, ValueError), (10, True, TypeError)])
def test_ddim_timesteps_rejects_bad_step_counts(T, steps, error):
    with pytest.raises(error):
        ddim_timesteps(T, steps)


# ------------------------------------------------------------------ analytic oracle, full sampling
def exact_chain_std(schedule, pairs, sigma, eta):
    """The exact output std of a sampler driven by the Gaussian oracle, from x_T ~ N(0, 1).

    Every step is linear, x_prev = c x_t + s z, so the variance obeys v <- c^2 v + s^2 (float64).
    Ancestral sampling is DDIM with eta = 1 over consecutive pairs (tested above)."""
    a_bars = torch.cumprod(1 - schedule.betas.double(), 0).tolist()
    v = 1.0
    for t, t_prev in pairs:
        a, a_prev = a_bars[t], 1.0 if t_prev < 0 else a_bars[t_prev]
        k = math.sqrt(1 - a) / (a * sigma**2 + 1 - a)             # eps* = k x_t
        x0_coef = (1 - math.sqrt(1 - a) * k) / math.sqrt(a)
        s2 = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        c = math.sqrt(a_prev) * x0_coef + math.sqrt(max(1 - a_prev - s2, 0.0)) * k
        v = c * c * v + s2
    return math.sqrt(v)


@pytest.mark.parametrize("sampler, n_points, sigma, rel_bias_bound", [
    ("ancestral", 4_000, 0.5, 0.01),
    ("ddim", 100_000, 0.5, 0.06),
    ("ddim", 100_000, 1.5, 0.035),
])
def test_samplers_driven_by_the_gaussian_oracle_return_std_sigma(linear, sampler, n_points, sigma, rel_bias_bound):
    # Data N(0, sigma^2 I) have the analytic optimal eps (no training). The sample std of N = 2 n_points
    # numbers has standard error ~ sigma / sqrt(2N) (0.0040 for 4,000 2-D points at sigma = 0.5); we
    # allow 4 of them (false alarm ~ 6e-5). A sampler with finitely many steps also has a small
    # deterministic bias, which exact_chain_std computes exactly: with the linear schedule, 1000
    # ancestral steps give std/sigma = 0.992 at sigma = 0.5; 50 DDIM steps (eta = 0) give 0.944 at
    # sigma = 0.5 and 0.968 at 1.5 (the few large steps under-disperse; 0.985 at 200 steps). So we check
    # |std - exact| < 4 SE (the code is the exact chain) and |exact - sigma| < rel_bias_bound * sigma.
    model = optimal_eps_gaussian(sigma, linear)
    g = torch.Generator().manual_seed(2024)
    if sampler == "ancestral":
        x = ancestral_sample(model, (n_points, 2), linear, generator=g, progress=False)
        pairs = [(t, t - 1) for t in range(999, -1, -1)]
    else:
        x = ddim_sample(model, (n_points, 2), linear, steps=50, generator=g, progress=False)
        ts = ddim_timesteps(1000, 50)
        pairs = list(zip(ts, ts[1:] + [-1]))
    exact = exact_chain_std(linear, pairs, sigma, eta=1.0 if sampler == "ancestral" else 0.0)
    se = sigma / math.sqrt(2 * x.numel())
    assert abs(x.std().item() - exact) < 4 * se, (x.std().item(), exact)
    assert abs(exact - sigma) < rel_bias_bound * sigma
    assert abs(x.mean().item()) < 4 * sigma / math.sqrt(x.numel())


# ------------------------------------------------------------------ progressive variants, bookkeeping
def test_ancestral_progressive_visits_every_timestep_once_in_order(small):
    calls = []
    model = optimal_eps_gaussian(0.5, small)

    def spy(x_t, t):
        calls.append(t.tolist())
        return model(x_t, t)

    x_T = torch.randn(3, 2)
    steps = list(ancestral_sample_progressive(spy, (3, 2), small, generator=torch.Generator().manual_seed(0),
                                              progress=False, x_T=x_T))
    assert [s.t for s in steps] == list(range(19, -1, -1)) and calls == [[t] * 3 for t in range(19, -1, -1)]
    assert all(isinstance(s, SamplerStep) and type(s.t) is int for s in steps)
    assert steps[0].x_t.equal(x_T)
    assert all(a.x_prev.equal(b.x_t) for a, b in zip(steps, steps[1:]))
    final = ancestral_sample(model, (3, 2), small, generator=torch.Generator().manual_seed(0), progress=False, x_T=x_T)
    assert steps[-1].x_prev.equal(final)


def test_ddim_progressive_pairs_and_final_step(linear):
    x0 = torch.tensor([[0.5, -0.5]])
    steps = list(ddim_sample_progressive(optimal_eps_point(x0, linear), (2, 2), linear, steps=4, progress=False,
                                         generator=torch.Generator().manual_seed(0)))
    assert [s.t for s in steps] == [999, 666, 333, 0]
    assert all(a.x_prev.equal(b.x_t) for a, b in zip(steps, steps[1:]))
    torch.testing.assert_close(steps[-1].x_prev, steps[-1].x0_pred)      # last step: t_prev = -1, a = 1
    torch.testing.assert_close(steps[1].x0_pred, x0.expand(2, 2), rtol=0, atol=1e-4)


def test_sampling_is_seeded_and_x_T_comes_from_the_cpu_generator(small):
    model = optimal_eps_gaussian(0.5, small)
    for sample in (lambda g: ancestral_sample(model, (4, 1, 3, 3), small, generator=g, progress=False),
                   lambda g: ddim_sample(model, (4, 1, 3, 3), small, steps=5, eta=0.5, generator=g, progress=False),
                   lambda g: naive_skip_sample(model, (4, 1, 3, 3), small, k=3, generator=g, progress=False)):
        a, b, c = (sample(torch.Generator().manual_seed(s)) for s in (7, 7, 8))
        assert a.shape == (4, 1, 3, 3) and a.equal(b) and not a.equal(c)
    first = next(iter(ancestral_sample_progressive(model, (4, 2), small, generator=torch.Generator().manual_seed(5),
                                                   progress=False)))
    assert first.x_t.equal(torch.randn(4, 2, generator=torch.Generator().manual_seed(5)))


def test_progressive_samplers_leave_grad_mode_on_between_steps(small):
    model = optimal_eps_gaussian(0.5, small)
    for step in ddim_sample_progressive(model, (2, 2), small, steps=3, progress=False):
        assert torch.is_grad_enabled() and not step.x_prev.requires_grad


# ------------------------------------------------------------------ the wrong way
def test_naive_skip_visits_every_kth_step_and_equals_ancestral_for_k1(small):
    assert naive_skip_timesteps(20, 5) == [19, 14, 9, 4, 0] and naive_skip_timesteps(20, 19) == [19, 0]
    assert naive_skip_timesteps(21, 5) == [20, 15, 10, 5, 0] and naive_skip_timesteps(20, 1) == list(range(19, -1, -1))
    model = optimal_eps_gaussian(0.5, small)
    steps = list(naive_skip_sample_progressive(model, (3, 2), small, k=5, progress=False))
    assert [s.t for s in steps] == [19, 14, 9, 4, 0]
    x_T = torch.randn(3, 2)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert naive_skip_sample(model, (3, 2), small, k=1, generator=g1, x_T=x_T, progress=False).equal(
        ancestral_sample(model, (3, 2), small, generator=g2, x_T=x_T, progress=False))


def test_naive_skipping_leaves_noise_while_ddim_with_same_step_count_does_not(linear):
    sigma, model = 0.5, optimal_eps_gaussian(0.5, linear)
    g = torch.Generator().manual_seed(0)
    naive = naive_skip_sample(model, (4000, 2), linear, k=20, generator=g, progress=False)
    ddim = ddim_sample(model, (4000, 2), linear, steps=50, generator=g, progress=False)
    # 50 model calls each; exact stds: DDIM 0.944 sigma (see above), naive ~1.9 sigma
    assert naive.std().item() > 1.5 * sigma and abs(ddim.std().item() - sigma) < 0.1 * sigma


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, error, message", [
    (lambda s, m: p_sample(m, torch.randn(4, 2), 3, s, variance="fixed"), ValueError, "variance must be one of"),
    (lambda s, m: p_sample(m, torch.randn(4, 2), 20, s), ValueError, "0 ... 19"),
    (lambda s, m: p_sample(m, torch.randn(4, 2), torch.tensor([1, 2]), s), ValueError, r"shape \(4,\)"),
    (lambda s, m: p_sample(m, torch.randn(4, 2), 3, s, noise=torch.randn(4, 1)), ValueError, "noise must have"),
    (lambda s, m: p_sample(lambda x, t: x[:, :1], torch.randn(4, 2), 3, s), ValueError, "model output"),
    (lambda s, m: ddim_step(m, torch.randn(4, 2), 5, 3, s, eta=-0.1), ValueError, "eta must lie in"),
    (lambda s, m: ddim_step(m, torch.randn(4, 2), 5, 3, s, eta=1.5), ValueError, "eta must lie in"),
    (lambda s, m: ddim_step(m, torch.randn(4, 2), 5, 5, s), ValueError, "t_prev must be smaller"),
    (lambda s, m: ddim_step(m, torch.randn(4, 2), 5, -2, s), ValueError, "-1 ... 19"),
    (lambda s, m: ddim_step(m, torch.randn(4, 2), 5, 3, s, eta=0.5, noise=torch.randn(3, 2)), ValueError, "noise"),
    (lambda s, m: ddim_sample(m, (4, 2), s, steps=21), ValueError, "steps must be between"),
    (lambda s, m: ancestral_sample(m, (4, 2), s, x_T=torch.randn(4, 3)), ValueError, "x_T has shape"),
    (lambda s, m: ancestral_sample(m, (4,), s), ValueError, "shape must be"),
    (lambda s, m: ancestral_sample(m, (4, 2), s, variance="beta!"), ValueError, "variance"),
    (lambda s, m: naive_skip_sample(m, (4, 2), s, k=0), ValueError, "k must be"),
])
def test_bad_input_raises_clear_errors(small, call, error, message):
    with pytest.raises(error, match=message):
        call(small, optimal_eps_gaussian(0.5, small))


def test_schedule_on_another_device_names_the_fix(small):
    on_meta, model = small.to("meta"), optimal_eps_gaussian(0.5, small)
    for call in (lambda: p_sample(model, torch.randn(4, 2), 3, on_meta),
                 lambda: ddim_step(model, torch.randn(4, 2), 3, 1, on_meta),
                 lambda: ancestral_sample(model, (4, 2), small, x_T=torch.randn(4, 2, device="meta"))):
        with pytest.raises(ValueError, match=r"schedule = schedule\.to\((x_t|x_T)\.device\)"):
            call()


def test_progress_bar_can_be_on(small, capsys):
    ddim_sample(optimal_eps_gaussian(0.5, small), (2, 2), small, steps=4, progress=True)
    assert "DDIM sampling" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_seed_gives_the_same_samples_on_cpu_and_cuda(small):
    model, on_gpu = optimal_eps_gaussian(0.5, small), small.to("cuda")
    for sample in (ancestral_sample, lambda *a, **k: ddim_sample(*a, steps=5, eta=0.5, **k)):
        cpu = sample(model, (8, 2), small, generator=torch.Generator().manual_seed(3), progress=False)
        gpu = sample(optimal_eps_gaussian(0.5, on_gpu), (8, 2), on_gpu, generator=torch.Generator().manual_seed(3),
                     progress=False)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
