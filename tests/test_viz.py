"""Tests of the pictures (viz.py) and the GIFs (gif.py): honest pixels, panels, labels, frames."""
import io

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from ddpm_helpers.gif import make_gif, render_frames, show_gif
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.viz import (
    FINAL_LABEL, POINT_LIM, collect_trajectory, plot_losses, plot_schedule, show_filmstrip,
    show_grid, show_rows, show_scatter, to_pixels,
)

torch.set_num_threads(1)


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.axison]


# ---- pixels and grids ----------------------------------------------------------------------------

def test_to_pixels_is_one_global_map_that_saturates_and_never_stretches():
    x = torch.tensor([-2.0, -1.0, -0.2, 0.0, 0.2, 1.0, 3.0])
    torch.testing.assert_close(to_pixels(x), torch.tensor([0.0, 0.0, 0.4, 0.5, 0.6, 1.0, 1.0]))


def test_show_grid_draws_low_contrast_images_without_stretching_them():
    images = torch.full((4, 1, 5, 5), 0.2)                 # pixel 0.6 everywhere, no stretch to 0..1
    fig = show_grid(images, nrow=2, title="grid")
    ax = fig.axes[0]
    picture = ax.images[0]
    assert picture.get_clim() == (0.0, 1.0) and picture.get_cmap().name == "gray"
    array = np.asarray(picture.get_array())
    assert array.shape == (2 * 7 + 2, 2 * 7 + 2)           # make_grid: padding 2 around 5x5 tiles
    assert array[2:7, 2:7] == pytest.approx(0.6) and array[0, 0] == 1.0   # white gaps
    assert ax.get_xticks().size == 0 and ax.get_title() == "grid"


def test_show_grid_rejects_points_and_unbatched_images_with_a_hint():
    with pytest.raises(ValueError, match="show_scatter"):
        show_grid(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="unsqueeze"):
        show_grid(torch.zeros(1, 28, 28))
    with pytest.raises(ValueError, match="NaN"):
        show_grid(torch.full((1, 1, 4, 4), float("nan")))


def test_show_scatter_uses_fixed_limits_and_draws_the_manifold_behind():
    fig = show_scatter(torch.randn(50, 2) * 0.01, title="points")
    ax = fig.axes[0]
    assert ax.get_xlim() == (-POINT_LIM, POINT_LIM) and ax.get_ylim() == (-POINT_LIM, POINT_LIM)
    assert len(ax.collections) == 2 and ax.collections[1].get_offsets().shape == (50, 2)
    assert len(show_scatter(torch.zeros(5, 2), manifold=False).axes[0].collections) == 1


# ---- trajectories and filmstrips ---------------------------------------------------------------

def test_collect_trajectory_keeps_every_kth_step_the_last_step_and_the_final_sample(fake_run):
    traj = collect_trajectory(fake_run(T=10), every=4)
    assert traj["ts"] == [9, 5, 1, 0]
    assert [float(x[0, 0, 0, 0]) for x in traj["x_t"]] == pytest.approx([0.9, 0.5, 0.1, 0.0])
    assert float(traj["final"].max()) == pytest.approx(-0.1)
    assert collect_trajectory(fake_run(T=10), keep=[9, 3])["ts"] == [9, 3]


def test_collect_trajectory_rejects_things_that_are_not_sampler_steps():
    with pytest.raises(TypeError, match="SamplerStep"):
        collect_trajectory([torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="no steps"):
        collect_trajectory(iter([]))


def test_image_filmstrip_has_one_panel_per_timestep_plus_final_with_t_labels(fake_run):
    fig = show_filmstrip(fake_run(T=10), n_cols=4, n_samples=2)
    assert titles(fig) == ["t = 9", "t = 6", "t = 3", "t = 0", FINAL_LABEL]
    column = np.asarray(fig.axes[0].images[0].get_array())
    assert column.shape == (2 * 8 + 2, 10)                  # two 6x6 samples stacked, 2-pixel gaps
    assert column[2:8, 2:8] == pytest.approx((0.9 + 1) / 2)  # x_t = 0.9 shown with the global map
    assert titles(show_filmstrip(fake_run(T=10), ts=[7, 2], show_final=False)) == ["t = 7", "t = 2"]


def test_filmstrip_x0_row_doubles_the_panels_and_leaves_final_prediction_empty(fake_run):
    fig = show_filmstrip(collect_trajectory(fake_run(T=10)), ts=[9, 0], show_x0=True)
    assert len(fig.axes) == 6
    assert [ax.axison for ax in fig.axes[3:]] == [True, True, False]
    assert fig.axes[3].get_ylabel() == r"predicted $\hat{x}_0$"
    assert np.asarray(fig.axes[3].images[0].get_array())[2, 2] == pytest.approx((-0.9 + 1) / 2)


def test_point_cloud_filmstrip_is_one_scatter_per_column_in_fixed_limits(fake_run):
    fig = show_filmstrip(fake_run(T=5, shape=(20, 2)), show_x0=True, show_final=False)
    assert len(fig.axes) == 10 and titles(fig)[:5] == [f"t = {t}" for t in (4, 3, 2, 1, 0)]
    for ax in fig.axes:
        assert ax.get_xlim() == (-POINT_LIM, POINT_LIM) and len(ax.collections) == 2


def test_filmstrip_takes_a_dict_of_frames_and_explains_missing_timesteps():
    frames = {0: torch.zeros(2, 1, 4, 4), 50: torch.ones(2, 1, 4, 4)}
    assert titles(show_filmstrip(frames)) == ["t = 50", "t = 0"]
    with pytest.raises(ValueError, match="predicted x0"):
        show_filmstrip(frames, show_x0=True)
    with pytest.raises(ValueError, match="t = 50 to t = 0"):
        show_filmstrip(frames, ts=[25])


# ---- schedule and loss plots ---------------------------------------------------------------------

def test_show_rows_is_a_labelled_table_of_strips_on_the_fixed_scale():
    rows = {"x_t": [torch.full((5, 1, 4, 4), 0.2), torch.full((5, 1, 4, 4), -1.0)],
            "predicted x0": [torch.full((5, 1, 4, 4), 3.0), torch.zeros(5, 1, 4, 4)]}
    fig = show_rows(rows, ["t = 10", "t = 900"], n_samples=3, title="table")
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["t = 10", "t = 900"] and axes[1, 0].get_title() == ""
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["x_t", "predicted x0"]
    strip = np.asarray(axes[0, 0].images[0].get_array())
    assert strip.shape == (4 + 4, 3 * 6 + 2)             # the first 3 images in one row, padding 2
    assert strip[2:6, 2:6] == pytest.approx(0.6)          # 0.2 -> 0.6, never stretched
    assert np.asarray(axes[1, 0].images[0].get_array())[2:6, 2:6] == pytest.approx(1.0)   # 3.0 saturates
    assert fig.get_suptitle() == "table"


def test_show_rows_wants_one_image_batch_per_column():
    with pytest.raises(ValueError, match="one image batch per column"):
        show_rows({"a": [torch.zeros(2, 1, 4, 4)]}, ["t = 1", "t = 2"])
    with pytest.raises(ValueError, match="wrap a single batch in a list"):
        show_rows({"a": torch.zeros(2, 1, 4, 4)}, ["samples"])
    with pytest.raises(ValueError, match="show_rows draws images"):
        show_rows({"a": [torch.zeros(2, 2)]}, ["t = 1"])
    with pytest.raises(ValueError, match="non-empty dict"):
        show_rows({}, ["t = 1"])

def test_plot_schedule_has_four_panels_and_a_legend_entry_per_schedule():
    linear, cosine = NoiseSchedule.linear(T=100), NoiseSchedule.cosine(T=100)
    fig = plot_schedule(linear, cosine)
    beta, abar, scales, snr = fig.axes
    assert [t.get_text() for t in abar.get_legend().get_texts()] == ["linear (T=100)", "cosine (T=100)"]
    assert (len(beta.lines), len(abar.lines), len(scales.lines), len(snr.lines)) == (2, 2, 4, 2)
    assert all(ax.get_xlabel() == "t" for ax in fig.axes) and beta.get_yscale() == "log"
    np.testing.assert_allclose(beta.lines[1].get_ydata(), cosine.betas.numpy())
    np.testing.assert_allclose(scales.lines[1].get_ydata() ** 2, 1 - linear.alpha_bars.numpy(), rtol=1e-5)
    assert "SNR" in snr.get_title()


def test_plot_schedule_checks_its_labels():
    with pytest.raises(ValueError, match="2 labels for 1 schedules"):
        plot_schedule(NoiseSchedule.linear(T=10), labels=["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        plot_schedule()


def test_plot_losses_draws_raw_values_and_a_trailing_moving_average_on_log_axes():
    class Result:  # like train(...)'s TrainResult
        losses = [1.0, 2.0, 3.0, 4.0]

    ax = plot_losses(Result(), smooth=2).axes[0]
    raw, average = ax.lines
    np.testing.assert_allclose(raw.get_ydata(), [1, 2, 3, 4])
    np.testing.assert_allclose(average.get_xdata(), [2, 3, 4])
    np.testing.assert_allclose(average.get_ydata(), [1.5, 2.5, 3.5])
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="empty"):
        plot_losses([])


# ---- GIFs ----------------------------------------------------------------------------------------

def decode(gif):
    return iio.imread(gif, index=None, extension=".gif")


def durations(gif):
    return [frame.info["duration"] for frame in ImageSequence.Iterator(Image.open(io.BytesIO(gif)))]


def test_gif_decodes_with_frame_count_size_and_a_held_last_frame(tmp_path):
    frames = [torch.full((2, 1, 8, 8), v) for v in np.linspace(-1, 1, 5)]
    gif = make_gif(frames, path=tmp_path / "run.gif", fps=10, hold_last=1.5, scale=3)
    pictures = decode(gif)
    assert pictures.shape == (5, 3 * 12, 3 * 22, 3)        # make_grid: 2 tiles of 8+2, border 2; x3
    assert durations(gif) == [100, 100, 100, 100, 1500]
    assert not np.array_equal(pictures[0], pictures[-1])
    assert (tmp_path / "run.gif").read_bytes() == gif


def test_gif_enlarges_small_grids_up_to_three_times_within_512_pixels():
    assert render_frames([torch.zeros(1, 1, 28, 28)])[0].shape == (84, 84, 3)      # 28 x 3
    assert render_frames([torch.zeros(64, 1, 28, 28)])[0].shape == (484, 484, 3)   # 242 x 2


def test_gif_keeps_constant_grey_levels():
    levels = [-1.0, -0.5, 0.0, 0.5, 1.0]
    pictures = decode(make_gif([torch.full((2, 1, 4, 4), v) for v in levels], scale=2))
    centre = pictures[:, 2 * 4, 2 * 4]                      # inside the tile, past the 2-pixel border
    expected = [round((v + 1) / 2 * 255) for v in levels]
    np.testing.assert_allclose(centre, np.repeat(np.array(expected)[:, None], 3, 1), atol=2)


def test_gif_labels_add_a_text_band_above_each_frame():
    frames = [torch.full((1, 1, 28, 28), -1.0), torch.full((1, 1, 28, 28), 1.0)]
    plain = decode(make_gif(frames))
    labelled = decode(make_gif(frames, labels=["t = 999", "t = 0"]))
    band = labelled.shape[1] - plain.shape[1]
    assert band > 8 and labelled[1, :band].min() < 100     # dark text on the white band
    np.testing.assert_array_equal(labelled[1, band:], plain[1])


def test_point_cloud_gif_has_one_scatter_frame_per_tensor():
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(100, 2, generator=g) * s for s in (1.0, 0.5, 0.1)]
    pictures = decode(make_gif(frames, labels=["a", "b", "c"]))
    assert pictures.shape == (3, 340, 320, 3)
    assert not np.array_equal(pictures[0], pictures[-1])


def test_gif_from_a_trajectory_ends_with_the_final_sample(fake_run):
    traj = collect_trajectory(fake_run(T=4))
    assert len(render_frames(traj["x_t"] + [traj["final"]])) == 5
    assert len(durations(make_gif(traj))) == 5


def test_gif_rejects_mixed_shapes_and_wrong_label_counts():
    with pytest.raises(ValueError, match="one shape"):
        make_gif([torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4)])
    with pytest.raises(ValueError, match="one label per frame"):
        make_gif([torch.zeros(2, 2)], labels=["a", "b"])
    with pytest.raises(TypeError, match="list of tensors"):
        make_gif(torch.zeros(2, 1, 4, 4))


def test_show_gif_returns_an_inline_image_gif():
    gif = make_gif([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)])
    shown = show_gif(gif)
    assert shown.data == gif and shown.format == "gif"
    assert "image/gif" in shown._repr_mimebundle_()[0]
    with pytest.raises(TypeError, match="make_gif"):
        show_gif(b"not a gif")
