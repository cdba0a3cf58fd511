"""Tests of the ipywidgets explorers: they build without a front end, react to value changes, and
fall back to a static figure (with a notice) where widgets cannot render."""
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from ddpm_helpers.diffusion import draw_noise, q_sample
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.viz import collect_trajectory
from ddpm_helpers.widgets import (
    NOTICE, forward_explorer, sampler_explorer, trajectory_scrubber, widgets_available,
)

pytest.importorskip("ipywidgets")
torch.set_num_threads(1)
PNG = b"\x89PNG"


@pytest.fixture
def schedule():
    return NoiseSchedule.linear(T=100)


@pytest.fixture
def digits():
    return torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_no_widgets_outside_a_jupyter_kernel():
    assert widgets_available() is False


def test_forward_explorer_redraws_the_closed_form_sample_when_t_changes(digits, schedule):
    box = forward_explorer(digits, schedule, interactive=True)
    slider, image, readout = box.controls["t"], box.controls["image"], box.controls["readout"]
    assert box.state["t"] == slider.value == 50 and bytes(image.value).startswith(PNG)
    before, figures = bytes(image.value), plt.get_fignums()
    slider.value = 99
    assert box.state["t"] == 99 and bytes(image.value) != before
    assert box.state["alpha_bar"] == pytest.approx(float(schedule.alpha_bars[99]))
    noise = draw_noise(digits, torch.Generator().manual_seed(0))   # eps is fixed by the seed
    torch.testing.assert_close(box.state["x_t"], q_sample(digits, 99, schedule, noise=noise))
    assert f"{float(schedule.alpha_bars[99]):.4f}" in readout.value
    assert plt.get_fignums() == figures                           # updates leave no pyplot figures


def test_forward_explorer_handles_point_clouds(schedule):
    box = forward_explorer(torch.zeros(64, 2), schedule, t=0, interactive=True)
    box.controls["t"].value = 10
    assert box.state["x_t"].shape == (64, 2) and bytes(box.controls["image"].value).startswith(PNG)


def test_forward_explorer_falls_back_to_a_static_figure_with_a_notice(digits, schedule, capsys):
    fig = forward_explorer(digits, schedule, t=10)               # auto-detect: no kernel in pytest
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert capsys.readouterr().out.strip() == NOTICE
    assert isinstance(forward_explorer(digits, schedule, interactive=False), Figure)


def test_interactive_must_be_none_true_or_false(digits, schedule):
    with pytest.raises(TypeError, match="interactive"):
        forward_explorer(digits, schedule, interactive="yes")


def test_trajectory_scrubber_shows_x_t_and_predicted_x0_for_the_chosen_step(fake_run):
    box = trajectory_scrubber(collect_trajectory(fake_run(T=6)), interactive=True)
    slider, left, right = box.controls["step"], box.controls["x_t"], box.controls["x0_pred"]
    assert len(slider.options) == 7 and box.state == {"index": 0, "label": "t = 5", "t": 5}
    first = (bytes(left.value), bytes(right.value))
    slider.value = 3
    assert box.state["t"] == 2 and bytes(left.value) != first[0] and bytes(right.value) != first[1]
    slider.value = 6                                                # the final sample
    assert box.state["label"] == "final x0" and box.state["t"] == 0


def test_trajectory_scrubber_falls_back_to_a_filmstrip_with_the_x0_row(capsys, fake_run):
    fig = trajectory_scrubber(fake_run(T=4), interactive=False)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 5
    assert NOTICE in capsys.readouterr().out
    with pytest.raises(ValueError, match="predicted x0"):
        trajectory_scrubber({3: torch.zeros(1, 2)}, interactive=True)


def test_sampler_explorer_runs_only_on_the_button_and_is_seeded(schedule):
    pytest.importorskip("ddpm_helpers.samplers")
    from ddpm_helpers.samplers import ddim_sample

    def model(x, t):
        return torch.zeros_like(x)

    box = sampler_explorer(model, schedule, (5, 2), interactive=True)
    c = box.controls
    assert box.state == {} and bytes(c["image"].value) == b""            # nothing ran yet
    c["steps"].value, c["seed"].value = 10, 3
    c["button"].click()
    expected = ddim_sample(model, (5, 2), schedule, steps=10, eta=0.0,
                           generator=torch.Generator().manual_seed(3), progress=False)
    torch.testing.assert_close(box.state["samples"], expected)
    assert "wall time" in c["status"].value and bytes(c["image"].value).startswith(PNG)
    c["sampler"].value = "ancestral"
    assert c["steps"].disabled and c["eta"].disabled and not c["variance"].disabled
    c["button"].click()
    assert box.state["sampler"] == "ancestral" and box.state["samples"].shape == (5, 2)


def test_sampler_explorer_falls_back_to_one_ddim_run(schedule, capsys):
    pytest.importorskip("ddpm_helpers.samplers")
    fig = sampler_explorer(lambda x, t: torch.zeros_like(x), schedule, (4, 1, 8, 8), interactive=False)
    assert isinstance(fig, Figure) and "DDIM, 50 steps" in fig.axes[0].get_title()
    assert NOTICE in capsys.readouterr().out


def _conditional_mlp():
    from ddpm_helpers.models import MLPDenoiser

    torch.manual_seed(0)
    model = MLPDenoiser(hidden=8, depth=1, time_dim=4, num_classes=3)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def test_guidance_explorer_samples_the_guided_model_for_the_chosen_class_and_scale(schedule):
    from ddpm_helpers.guidance import classifier_free_guidance
    from ddpm_helpers.samplers import ddim_sample
    from ddpm_helpers.widgets import guidance_explorer

    model = _conditional_mlp()
    box = guidance_explorer(model, schedule, (6, 2), steps=10, interactive=True)
    c = box.controls
    assert box.state == {} and list(c["label"].options) == [0, 1, 2]       # nothing ran yet
    c["label"].value, c["scale"].value, c["seed"].value = 2, 4.5, 7
    c["button"].click()
    expected = ddim_sample(classifier_free_guidance(model, 2, 4.5), (6, 2), schedule, steps=10,
                           generator=torch.Generator().manual_seed(7), progress=False)
    torch.testing.assert_close(box.state["samples"], expected)
    assert box.state["label"] == 2 and "s = 4.5" in c["status"].value and bytes(c["image"].value).startswith(PNG)


def test_guidance_explorer_falls_back_to_one_run_and_needs_a_conditional_model(schedule, capsys):
    from ddpm_helpers.widgets import guidance_explorer

    fig = guidance_explorer(_conditional_mlp(), schedule, (4, 2), label=1, steps=5, interactive=False)
    assert isinstance(fig, Figure) and "class 1, s = 3" in fig.axes[0].get_title()
    assert NOTICE in capsys.readouterr().out
    with pytest.raises(ValueError, match="num_classes"):
        guidance_explorer(lambda x, t: x, schedule, (4, 2))
