"""ddpm_helpers: the tested code behind the DDPM-from-scratch notebooks.

Notebooks import explicitly from here, e.g. `from ddpm_helpers import q_sample, show_grid`.
The modules follow the course: schedules -> diffusion (forward process, loss) -> samplers ->
models -> training -> metrics, with viz/gif/widgets for pictures.
"""
from .checkpoints import load_checkpoint, load_pretrained, save_checkpoint
from .config import get_device, quick_mode
from .data import iterate_batches, load_bundled_mnist, load_fashion_mnist, load_mnist, make_moons
from .diffusion import (
    draw_noise,
    loss_simple,
    optimal_eps_gaussian,
    optimal_eps_point,
    predict_x0,
    q_posterior,
    q_sample,
    q_step,
)
from .editing import inpaint, repaint_timesteps, sdedit
from .gif import make_gif, show_gif
from .guidance import classifier_free_guidance, drop_labels
from .metrics import (
    frechet_distance,
    mnist_real_floor,
    mnist_scores,
    moons_real_floor,
    moons_reference,
    moons_scores,
    nearest_distances,
)
from .models import MLPDenoiser, SinusoidalEmbedding, UNet, num_parameters
from .samplers import (
    SamplerStep,
    ancestral_sample,
    ancestral_sample_progressive,
    ddim_sample,
    ddim_sample_progressive,
    ddim_step,
    ddim_timesteps,
    naive_skip_sample,
    naive_skip_sample_progressive,
    naive_skip_timesteps,
    p_sample,
)
from .schedules import NoiseSchedule
from .score import ideal_eps, ideal_log_density, ideal_x0, score_from_eps
from .spread import mnist_fd_spread, mnist_real_floor_spread
from .toolbox import diffusers_scheduler, respace, scheduler_sample, scheduler_sample_progressive
from .training import TrainResult, train
from .viz import collect_trajectory, to_pixels, plot_losses, plot_schedule, show_filmstrip, show_grid, show_rows, show_scatter
from .widgets import forward_explorer, guidance_explorer, sampler_explorer, trajectory_scrubber

__all__ = [
    "MLPDenoiser", "NoiseSchedule", "SamplerStep", "ancestral_sample", "ancestral_sample_progressive",
    "ddim_sample", "ddim_sample_progressive", "ddim_step", "ddim_timesteps", "naive_skip_sample",
    "naive_skip_sample_progressive", "naive_skip_timesteps", "p_sample", "to_pixels", "SinusoidalEmbedding", "TrainResult", "UNet",
    "classifier_free_guidance", "collect_trajectory", "drop_labels", "draw_noise", "moons_reference", "forward_explorer", "frechet_distance", "guidance_explorer", "get_device", "iterate_batches",
    "load_bundled_mnist", "load_checkpoint", "load_fashion_mnist", "load_mnist", "load_pretrained", "loss_simple",
    "make_gif", "make_moons", "mnist_real_floor", "mnist_scores", "moons_real_floor",
    "moons_scores", "nearest_distances", "num_parameters", "optimal_eps_gaussian", "optimal_eps_point", "plot_losses",
    "plot_schedule", "predict_x0", "q_posterior", "q_sample", "q_step", "quick_mode",
    "sampler_explorer", "save_checkpoint", "show_filmstrip", "show_gif", "show_grid", "show_rows",
    "show_scatter", "trajectory_scrubber", "train", "ideal_eps", "ideal_log_density", "ideal_x0", "score_from_eps", "mnist_fd_spread", "mnist_real_floor_spread",
    "diffusers_scheduler", "inpaint", "repaint_timesteps", "respace", "scheduler_sample",
    "scheduler_sample_progressive", "sdedit",
]
