"""Inpainting (RePaint) and SDEdit: exact where an oracle knows the answer, checked inputs everywhere."""
import pytest
import torch

from ddpm_helpers import NoiseSchedule, ddim_sample, ddim_timesteps, optimal_eps_gaussian, optimal_eps_point, q_sample
from ddpm_helpers.editing import inpaint, repaint_timesteps, sdedit
from ddpm_helpers.samplers import ddim_step


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.linear()


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def correlated_gaussian_oracle(cov: torch.Tensor, schedule: NoiseSchedule):
    """eps*(x_t, t) = E[eps | x_t] for data N(0, cov): sqrt(1 - a) (a cov + (1 - a) I)^-1 x_t."""
    def eps_model(x_t, t):
        a = schedule.alpha_bars[t].reshape(-1, 1, 1)
        precision = torch.linalg.inv(a * cov + (1 - a) * torch.eye(cov.shape[0]))
        return (1 - a).sqrt().reshape(-1, 1) * (precision @ x_t.unsqueeze(-1)).squeeze(-1)
    return eps_model


# ---------------------------------------------------------------------- RePaint's time schedule
def test_repaint_timesteps_without_resampling_is_the_ddim_grid():
    assert repaint_timesteps(1000, 50) == ddim_timesteps(1000, 50) + [-1]


def test_repaint_timesteps_jump_back_and_come_down_again():
    assert repaint_timesteps(1000, 4, jump_length=2, resamplings=2) == [999, 666, 333, 0, 333, 666, 333, 0, -1]
    path = repaint_timesteps(1000, 50, jump_length=5, resamplings=3)
    downs = sum(a > b for a, b in zip(path, path[1:]))
    ups = sum(a < b for a, b in zip(path, path[1:]))
    jumps = len(range(0, 50 - 5, 5))            # RePaint jumps at every jump_length-th position but the top
    assert ups == jumps * 2 * 5 and downs == 50 + ups
    assert all(abs(ddim_timesteps(1000, 50).index(a) - ddim_timesteps(1000, 50).index(b)) == 1
               for a, b in zip(path, path[1:]) if b >= 0)   # one grid step at a time


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=10, jump_length=10, resamplings=2), "must be smaller than steps=10"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(steps=10, resamplings=0), "resamplings must be >= 1"),
])
def test_repaint_timesteps_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        repaint_timesteps(1000, **kwargs)


# ---------------------------------------------------------------------- inpainting
def test_inpaint_returns_the_kept_pixels_exactly(schedule):
    x0 = torch.rand(3, 1, 8, 8, generator=seeded()) * 2 - 1
    known = torch.zeros(1, 8, 8, dtype=torch.bool)
    known[..., :4] = True
    out = inpaint(optimal_eps_gaussian(0.5, schedule), x0, known, schedule, steps=10, resamplings=2,
                  generator=seeded(), progress=False)
    assert torch.equal(out[..., :4], x0[..., :4])
    assert not torch.equal(out[..., 4:], x0[..., 4:])


def test_inpaint_with_nothing_known_is_ddim_sample(schedule):
    model = optimal_eps_gaussian(0.5, schedule)
    out = inpaint(model, torch.zeros(4, 6), torch.zeros(6), schedule, steps=20, eta=0.0, generator=seeded(),
                  progress=False)
    assert torch.equal(out, ddim_sample(model, (4, 6), schedule, steps=20, generator=seeded(), progress=False))


def test_inpaint_step_is_the_ddim_step_outside_and_the_noised_original_inside(schedule):
    """One step by hand with the same noises: x_T, z of the DDIM step, then the noise of q_sample."""
    model = optimal_eps_gaussian(0.5, schedule)
    x0 = torch.rand(2, 5, generator=seeded(7)) * 2 - 1
    known = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
    out = inpaint(model, x0, known, schedule, steps=1, eta=0.5, generator=seeded(), progress=False)
    g = seeded()
    x_T = torch.randn(2, 5, generator=g)
    by_hand = ddim_step(model, x_T, 999, -1, schedule, eta=0.5, generator=g)   # the end: no z, x_known = x0
    assert torch.equal(out, known * x0 + (1 - known) * by_hand)
    path = repaint_timesteps(1000, 2)
    out = inpaint(model, x0, known, schedule, steps=2, eta=1.0, generator=seeded(), progress=False)
    g = seeded()
    x = ddim_step(model, torch.randn(2, 5, generator=g), path[0], path[1], schedule, eta=1.0, generator=g)
    x = known * q_sample(x0, path[1], schedule, generator=g) + (1 - known) * x
    x = ddim_step(model, x, path[1], -1, schedule, eta=1.0, generator=g)
    torch.testing.assert_close(out, known * x0 + (1 - known) * x, rtol=0, atol=0)


def test_resampling_brings_the_completion_closer_to_the_exact_conditional(schedule):
    """Data N(0, cov) in 2-D with correlation 0.9: given x[0] = a, x[1] ~ N(0.9 a, 0.25 (1 - 0.81)).
    Without resampling RePaint under-uses the known part; its jumps move the mean toward 0.9 a."""
    rho, var, a = 0.9, 0.25, 0.75
    cov = var * torch.tensor([[1.0, rho], [rho, 1.0]])
    model = correlated_gaussian_oracle(cov, schedule)
    x0 = torch.tensor([[a, 0.0]]).repeat(4000, 1)
    known = torch.tensor([1.0, 0.0])
    mean = {r: inpaint(model, x0, known, schedule, steps=50, jump_length=2, resamplings=r, generator=seeded(),
                       progress=False)[:, 1].mean().item() for r in (1, 10)}
    exact = rho * a
    assert abs(mean[10] - exact) < 0.3 * abs(mean[1] - exact)
    assert abs(mean[10] - exact) < 0.1


@pytest.mark.parametrize("known, error, match", [
    (torch.ones(3, 5), ValueError, r"shape of x0, \(2, 3, 4\), or of one image, \(3, 4\), got \(3, 5\)"),
    (torch.full((3, 4), 0.5), ValueError, "only 0 and 1"),
    ([[1, 0]], TypeError, "bool or 0/1 tensor"),
    (torch.ones(3, 4, device="meta"), ValueError, "known is on meta"),
])
def test_inpaint_mask_is_checked(schedule, known, error, match):
    with pytest.raises(error, match=match):
        inpaint(optimal_eps_gaussian(1.0, schedule), torch.zeros(2, 3, 4), known, schedule, progress=False)


def test_inputs_outside_the_data_range_are_refused(schedule):
    model = optimal_eps_gaussian(1.0, schedule)
    with pytest.raises(ValueError, match=r"x0 must lie in the data range \[-1, 1\], got values up to 255"):
        inpaint(model, torch.full((1, 4), 255.0), torch.ones(4), schedule, progress=False)
    with pytest.raises(ValueError, match="guide / 127.5 - 1"):
        sdedit(model, torch.full((1, 4), 255.0), 100, schedule, progress=False)


# ---------------------------------------------------------------------- SDEdit
def test_sdedit_is_noising_to_t0_then_ddim_from_t0(schedule):
    model = optimal_eps_gaussian(0.5, schedule)
    guide = torch.rand(3, 4, generator=seeded(5)) * 2 - 1
    out = sdedit(model, guide, 300, schedule, steps=6, eta=1.0, generator=seeded(), progress=False)
    g = seeded()
    x = q_sample(guide, 300, schedule, generator=g)
    ts = ddim_timesteps(301, 6)
    assert ts[0] == 300 and ts[-1] == 0
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        x = ddim_step(model, x, t, t_prev, schedule, eta=1.0, generator=g)
    assert torch.equal(out, x)


def test_sdedit_with_a_one_point_data_set_returns_that_point(schedule):
    point = torch.tensor([[0.3, -0.7, 0.5]])
    guide = torch.tensor([[-0.9, 0.9, 0.0]])
    out = sdedit(optimal_eps_point(point, schedule), guide, 500, schedule, eta=0.0, generator=seeded(),
                 progress=False)
    torch.testing.assert_close(out, point, rtol=0, atol=1e-4)


def test_sdedit_trades_faithfulness_for_realism_as_t0_grows(schedule):
    """With the Gaussian oracle (data N(0, 0.25 I)) a guide far out, at 0.9 in every coordinate,
    is pulled towards typical data more and more as t0 grows."""
    model = optimal_eps_gaussian(0.5, schedule)
    guide = torch.full((2000, 4), 0.9)
    distance = [(sdedit(model, guide, t0, schedule, generator=seeded(), progress=False) - guide).norm(dim=1).mean()
                for t0 in (20, 200, 500, 999)]
    assert all(a < b for a, b in zip(distance, distance[1:]))
    assert distance[0] < 0.2 and distance[-1] > 1.5   # fresh samples: E|x - guide| ~ sqrt(4 (0.81 + 0.25))


@pytest.mark.parametrize("t0, steps, error, match", [
    (1000, None, ValueError, r"t0 must be a code timestep in 0 ... 999"),
    (-1, None, ValueError, "t0 must be >= 0"),
    (0.5, None, TypeError, "t0 must be an int"),
    (10, 12, ValueError, "steps must be at most t0 \\+ 1 = 11"),
])
def test_sdedit_t0_and_steps_are_checked(schedule, t0, steps, error, match):
    with pytest.raises(error, match=match):
        sdedit(optimal_eps_gaussian(1.0, schedule), torch.zeros(1, 4), t0, schedule, steps=steps, progress=False)
