"""diffusers' schedulers driven by our models compute what our samplers compute, where the maths is the same."""
import subprocess
import sys

import pytest
import torch

from ddpm_helpers import (
    NoiseSchedule,
    ancestral_sample,
    ddim_sample,
    ddim_sample_progressive,
    ddim_timesteps,
    load_pretrained,
    optimal_eps_gaussian,
    p_sample,
)
from ddpm_helpers.toolbox import (
    FLOAT64_TABLES,
    SCHEDULERS,
    diffusers_scheduler,
    respace,
    scheduler_sample,
    scheduler_sample_progressive,
)

TOL = dict(rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def moons():
    """The shipped moons MLP: a real trained network that is cheap enough for 1,000 steps."""
    return load_pretrained("moons_mlp")


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_import_is_lazy_and_nothing_touches_the_network():
    code = (
        "import socket, sys\n"
        "import ddpm_helpers\n"
        "assert 'diffusers' not in sys.modules, 'import ddpm_helpers imported diffusers'\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network access')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from ddpm_helpers.toolbox import SCHEDULERS, diffusers_scheduler, scheduler_sample\n"
        "schedule = ddpm_helpers.NoiseSchedule.linear(T=100)\n"
        "model = ddpm_helpers.optimal_eps_gaussian(0.5, schedule)\n"
        "for name in SCHEDULERS:\n"
        "    scheduler_sample(model, diffusers_scheduler(name, schedule), (2, 3), 5, progress=False)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_missing_diffusers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    with pytest.raises(ImportError, match="pip install diffusers"):
        diffusers_scheduler("ddim", NoiseSchedule.linear(T=10))


def test_scheduler_is_built_from_our_schedule_and_takes_overrides():
    schedule = NoiseSchedule.cosine(T=200)
    scheduler = diffusers_scheduler("ddim", schedule, clip_sample=True)
    assert type(scheduler).__name__ == "DDIMScheduler"
    assert scheduler.config.num_train_timesteps == 200 and scheduler.config.clip_sample is True
    torch.testing.assert_close(scheduler.alphas_cumprod.float(), schedule.alpha_bars, rtol=1e-6, atol=0)
    for name in SCHEDULERS:  # float64 tables for DDPM and DDIM; diffusers' float32 cumprod for the others
        torch.testing.assert_close(diffusers_scheduler(name, schedule).alphas_cumprod.float(), schedule.alpha_bars,
                                   rtol=1e-6 if name in FLOAT64_TABLES else 1e-4, atol=0)


@pytest.mark.parametrize("bad, error, match", [
    (dict(name="pndm"), ValueError, "unknown scheduler 'pndm'"),
    (dict(schedule="linear"), TypeError, "NoiseSchedule"),
])
def test_scheduler_arguments_are_checked(bad, error, match):
    args = dict(name="ddim", schedule=NoiseSchedule.linear(T=10)) | bad
    with pytest.raises(error, match=match):
        diffusers_scheduler(args["name"], args["schedule"])


def test_ddpm_scheduler_equals_p_sample_step_by_step(moons):
    model, schedule = moons
    scheduler = diffusers_scheduler("ddpm", schedule)
    scheduler.set_timesteps(schedule.T)
    x = torch.randn(64, 2, generator=seeded(1))
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = model(x, torch.full((64,), int(t)))
            ours = p_sample(model, x, int(t), schedule, noise=torch.randn(x.shape, generator=seeded(int(t))))
            theirs = scheduler.step(eps, t, x, generator=seeded(int(t))).prev_sample  # the same z
            torch.testing.assert_close(theirs, ours, **TOL)
            x = ours


@pytest.mark.parametrize("config, ours", [
    ({}, {}),
    ({"variance_type": "fixed_large"}, {"variance": "beta"}),
    ({"clip_sample": True}, {"clip_x0": True}),
])
def test_ddpm_scheduler_run_equals_ancestral_sample(moons, config, ours):
    model, schedule = moons
    theirs = scheduler_sample(model, diffusers_scheduler("ddpm", schedule, **config), (128, 2), schedule.T,
                              generator=seeded(), progress=False)
    torch.testing.assert_close(theirs, ancestral_sample(model, (128, 2), schedule, generator=seeded(),
                                                        progress=False, **ours), **TOL)


def test_ddpm_scheduler_runs_on_image_shapes():
    schedule = NoiseSchedule.linear()
    model = optimal_eps_gaussian(0.5, schedule)
    theirs = scheduler_sample(model, diffusers_scheduler("ddpm", schedule), (2, 1, 28, 28), schedule.T,
                              generator=seeded(), progress=False)
    torch.testing.assert_close(theirs, ancestral_sample(model, (2, 1, 28, 28), schedule, generator=seeded(),
                                                        progress=False), **TOL)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_scheduler_on_the_respaced_schedule_equals_ddim_sample(moons, eta):
    model, schedule = moons
    spaced_model, spaced = respace(model, schedule, ddim_timesteps(schedule.T, 50))
    theirs = scheduler_sample(spaced_model, diffusers_scheduler("ddim", spaced), (128, 2), 50, generator=seeded(),
                              progress=False, eta=eta)
    ours = ddim_sample(model, (128, 2), schedule, steps=50, eta=eta, generator=seeded(), progress=False)
    torch.testing.assert_close(theirs, ours, **TOL)


def test_ddim_clipping_with_the_clipped_model_output_is_our_clip_x0(moons):
    model, schedule = moons
    spaced_model, spaced = respace(model, schedule, ddim_timesteps(schedule.T, 20))
    scheduler = diffusers_scheduler("ddim", spaced, clip_sample=True)
    theirs = scheduler_sample(spaced_model, scheduler, (128, 2), 20, generator=seeded(), progress=False,
                              eta=1.0, use_clipped_model_output=True)
    ours = ddim_sample(model, (128, 2), schedule, steps=20, eta=1.0, clip_x0=True, generator=seeded(), progress=False)
    torch.testing.assert_close(theirs, ours, **TOL)


def test_ddim_without_alpha_to_one_ends_at_alpha_bar_0(moons):
    """Stable Diffusion's set_alpha_to_one=False: the last jump lands on alpha_bar_0 = 1 - beta_1, not 1,
    and leaves sqrt(1 - alpha_bar_0) = 0.01 of the noise estimate in the sample."""
    model, schedule = moons
    spaced_model, spaced = respace(model, schedule, ddim_timesteps(schedule.T, 20))
    x_T = torch.randn(64, 2, generator=seeded())
    runs = [scheduler_sample(spaced_model, diffusers_scheduler("ddim", spaced, set_alpha_to_one=one), x_T.shape, 20,
                             x_T=x_T, progress=False) for one in (True, False)]
    assert torch.isfinite(runs[1]).all()
    assert 0 < (runs[1] - runs[0]).abs().max() < 0.05


def test_respaced_schedule_keeps_alpha_bars_and_our_samplers_agree(moons):
    model, schedule = moons
    ts = ddim_timesteps(schedule.T, 10)
    spaced_model, spaced = respace(model, schedule, ts)
    assert spaced.T == 10
    assert torch.equal(spaced.alpha_bars, schedule.alpha_bars[sorted(ts)])
    x_T = torch.randn(32, 2, generator=seeded(3))
    assert torch.equal(ddim_sample(spaced_model, x_T.shape, spaced, steps=10, x_T=x_T, progress=False),
                       ddim_sample(model, x_T.shape, schedule, steps=10, x_T=x_T, progress=False))
    # DDPM on the respaced schedule is DDIM with eta = 1 on the kept pairs (Nichol & Dhariwal 2021)
    torch.testing.assert_close(ancestral_sample(spaced_model, (32, 2), spaced, generator=seeded(), progress=False),
                               ddim_sample(model, (32, 2), schedule, steps=10, eta=1.0, generator=seeded(),
                                           progress=False), **TOL)


@pytest.mark.parametrize("timesteps", [[], [5, 5, 3], [-1, 4], [3, 10]])
def test_respace_rejects_bad_timesteps(timesteps):
    schedule = NoiseSchedule.linear(T=10)
    with pytest.raises(ValueError, match="distinct ints in 0 ... 9"):
        respace(optimal_eps_gaussian(1.0, schedule), schedule, timesteps)


def test_ddpm_scheduler_with_our_timesteps_is_ddim_with_eta_one(moons):
    model, schedule = moons
    ts = ddim_timesteps(schedule.T, 25)
    theirs = scheduler_sample(model, diffusers_scheduler("ddpm", schedule), (64, 2), ts, generator=seeded(),
                              progress=False)
    ours = ddim_sample(model, (64, 2), schedule, steps=25, eta=1.0, generator=seeded(), progress=False)
    torch.testing.assert_close(theirs, ours, **TOL)


def test_euler_is_ddim_in_other_coordinates():
    schedule = NoiseSchedule.linear()
    model = optimal_eps_gaussian(0.5, schedule)
    scheduler = diffusers_scheduler("euler", schedule)
    x_T = torch.randn(64, 3, generator=seeded())
    theirs = scheduler_sample(model, scheduler, x_T.shape, 10, x_T=x_T, progress=False)
    spaced_model, spaced = respace(model, schedule, [int(t) for t in scheduler.timesteps])
    ours = ddim_sample(spaced_model, x_T.shape, spaced, steps=10, x_T=x_T, progress=False)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)  # sigma = sqrt((1 - a) / a) in float32


def test_dpm_solver_converges_faster_than_ddim_to_the_exact_ode_solution():
    """Data N(0, sigma^2 I): the probability-flow ODE scales x_T by sigma / sqrt(a_T sigma^2 + 1 - a_T)."""
    schedule, sigma = NoiseSchedule.linear(), 0.5
    model = optimal_eps_gaussian(sigma, schedule)
    x_T = torch.randn(64, 3, generator=seeded())
    a_T = schedule.alpha_bars[-1]
    exact = sigma * x_T / (a_T * sigma**2 + 1 - a_T).sqrt()

    def error(name, steps):
        if name == "ours":
            x = ddim_sample(model, x_T.shape, schedule, steps=steps, x_T=x_T, progress=False)
        else:
            x = scheduler_sample(model, diffusers_scheduler(name, schedule), x_T.shape, steps, x_T=x_T, progress=False)
        return (x - exact).abs().max().item()

    for name in ("dpm++", "unipc"):
        assert error(name, 20) < 0.5 * error("ours", 20)
        assert error(name, 50) < 0.1 * error("ours", 50)
        assert error(name, 50) < 0.1 * error(name, 20)  # second order: 6x fewer errors for 2.5x the steps


def test_progressive_steps_report_the_scheduler_prediction(moons):
    model, schedule = moons
    spaced_model, spaced = respace(model, schedule, ddim_timesteps(schedule.T, 5))
    x_T = torch.randn(8, 2, generator=seeded())
    theirs = list(scheduler_sample_progressive(spaced_model, diffusers_scheduler("ddim", spaced), x_T.shape, 5,
                                               x_T=x_T, progress=False))
    ours = list(ddim_sample_progressive(model, x_T.shape, schedule, steps=5, x_T=x_T, progress=False))
    assert [step.t for step in theirs] == [4, 3, 2, 1, 0]  # the respaced schedule's own timesteps
    for mine, other in zip(ours, theirs):  # x0_pred at t = 999 divides rounding by sqrt(alpha_bar) = 0.006
        torch.testing.assert_close(other.x0_pred, mine.x0_pred, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(other.x_prev, mine.x_prev, **TOL)
    dpm = list(scheduler_sample_progressive(model, diffusers_scheduler("dpm++", schedule), x_T.shape, 5, x_T=x_T,
                                            progress=False))
    assert all(step.x0_pred.shape == x_T.shape for step in dpm)  # x0 implied by eps: DPM-Solver reports none


def test_sampling_arguments_are_checked():
    schedule = NoiseSchedule.linear(T=100)
    model = optimal_eps_gaussian(1.0, schedule)
    with pytest.raises(TypeError, match=r"DPMSolverMultistepScheduler.step\(\) takes no option 'eta'"):
        scheduler_sample(model, diffusers_scheduler("dpm++", schedule), (2, 3), 5, eta=1.0)
    with pytest.raises(ValueError, match="shape must be a tuple"):
        scheduler_sample(model, diffusers_scheduler("ddim", schedule), (2,), 5)
    with pytest.raises(ValueError, match="x_T has shape"):
        scheduler_sample(model, diffusers_scheduler("ddim", schedule), (2, 3), 5, x_T=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="fractional timestep"):
        scheduler_sample(model, diffusers_scheduler("euler", schedule, timestep_spacing="linspace"), (2, 3), 7,
                         progress=False)
    with pytest.raises(ValueError, match="the model output must have the shape"):
        scheduler_sample(lambda x, t: x[:1], diffusers_scheduler("ddim", schedule), (2, 3), 5, progress=False)
