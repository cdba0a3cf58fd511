"""Training a denoiser: Algorithm 1 of Ho et al. 2020 with AdamW, warm-up, clipping and an EMA.

    repeat:  x0 ~ data,  t ~ Uniform{0..T-1},  eps ~ N(0, I)
             take a gradient step on || eps - eps_theta(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ||^2
    until the step or time budget is spent

The weights that sample best are an exponential moving average (EMA) of the trained ones
(Ho et al. 2020, appendix B): theta_ema <- d * theta_ema + (1 - d) * theta after every step.
"""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from .config import get_device
from .data import iterate_batches
from .diffusion import check_model_schedule, draw_noise, loss_simple, q_sample
from .guidance import check_training_labels, labelled_batches
from .schedules import NoiseSchedule

SMALL_MODEL = 200_000   # below this many parameters one CPU thread is fastest (thread overhead wins)


@dataclass
class TrainResult:
    """What `train` returns: the EMA model (use it to sample), the raw model, the loss per step
    (for plotting) and provenance (steps, minutes, seed, device, settings) for checkpoints."""

    model: nn.Module
    raw_model: nn.Module
    losses: list[float] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


def ema_multi_avg_fn(decay: float, warmup: bool = True):
    """An EMA update for torch.optim.swa_utils.AveragedModel (like torch's get_ema_multi_avg_fn),
    with the usual warm-up of the decay so that short runs forget their random start:

        d_n = min(decay, (1 + n) / (10 + n)),   theta_ema <- d_n theta_ema + (1 - d_n) theta

    n = number of updates averaged so far (the first update copies the weights).
    """
    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
    return update


def lr_factor(progress: float, step: int, warmup: int, decay: str | None) -> float:
    """Learning-rate multiplier: linear warm-up over `warmup` steps, then constant or a cosine
    decay to 0 over the budget (`progress` in [0, 1] is the spent share of steps or minutes)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) if decay == "cosine" else 1.0


def draw_timesteps(batch: int, T: int, kind: str, generator: torch.Generator | None) -> Tensor:
    """t for one batch: "uniform" draws t ~ Uniform{0..T-1} per sample (Algorithm 1);
    "stratified" puts one t in each of B equal slices of [0, T), still uniform per sample,
    but a batch covers all noise levels evenly (a lower-variance estimate of the same loss)."""
    if kind == "uniform":
        return torch.randint(0, T, (batch,), generator=generator)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return ((torch.arange(batch, dtype=torch.float64) + u) * (T / batch)).long().clamp_(max=T - 1)


def loss_weights(schedule: NoiseSchedule, kind: str = "none", gamma: float = 5.0) -> Tensor:
    """Per-timestep weights of the eps-prediction loss, shape (T,).

    "none": 1 for every t (L_simple, Algorithm 1 of Ho et al. 2020).
    "min_snr": min(SNR_t, gamma) / SNR_t with SNR_t = alpha_bar_t / (1 - alpha_bar_t) (Hang et al. 2023,
    "Efficient Diffusion Training via Min-SNR Weighting Strategy", for eps-prediction): 1 at the noisy
    steps where SNR_t <= gamma, smaller at the nearly clean steps, whose easy, low-noise targets would
    otherwise pull the shared weights away from the steps that shape a digit. The model still predicts
    eps, so every sampler is unchanged.
    """
    if kind not in ("none", "min_snr"):
        raise ValueError(f"loss_weighting must be 'none' (L_simple) or 'min_snr', got {kind!r}")
    if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and 0 < gamma < math.inf):
        raise ValueError(f"min_snr_gamma must be a positive number (Hang et al. use 5), got {gamma!r}")
    if kind == "none":
        return torch.ones(schedule.T, device=schedule.alpha_bars.device)
    a = schedule.alpha_bars.double()
    snr = a / (1 - a)
    return (snr.clamp(max=gamma) / snr).float()


def weighted_loss(model, x0: Tensor, schedule: NoiseSchedule, t: Tensor, weights: Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
    """L_simple with a weight per timestep: mean over the batch of weights[t] * ||eps - eps_theta(x_t, t)||^2 / D.
    With weights all 1 it equals loss_simple on the same t and noise."""
    noise = draw_noise(x0, generator)
    x_t = q_sample(x0, t, schedule, noise=noise)
    per_sample = (model(x_t, t) - noise).pow(2).flatten(1).mean(1)
    return (weights[t] * per_sample).mean()


def train(model: nn.Module, data: Tensor, schedule: NoiseSchedule, *, steps: int | None = None,
          minutes: float | None = None, batch_size: int = 128, lr: float = 1e-3, warmup: int = 0,
          lr_decay: str | None = None, grad_clip: float | None = 1.0, weight_decay: float = 0.0,
          ema_decay: float = 0.999, timesteps: str = "uniform", loss_weighting: str = "none",
          min_snr_gamma: float = 5.0, labels: Tensor | None = None, label_dropout: float = 0.1,
          label_lr_scale: float = 1.0, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, num_threads: int | None = None,
          progress: bool = True, callback: Callable[[int, float, nn.Module], None] | None = None) -> TrainResult:
    """Train `model` in place on `data` (N, ...) in [-1, 1] with L_simple until `steps` steps or
    `minutes` minutes are done, whichever comes first (give at least one).

    AdamW (lr, weight_decay); `warmup` steps of linear learning-rate warm-up; lr_decay="cosine"
    decays it to 0 over the budget; grad_clip clips the gradient norm (None: off); ema_decay is
    the EMA decay (with warm-up, see ema_multi_avg_fn); timesteps "uniform" | "stratified"
    (see draw_timesteps); loss_weighting "none" (L_simple) | "min_snr" with min_snr_gamma (see
    loss_weights). labels (N,) train a conditional model (built with num_classes) on eps(x_t, t, c),
    each label replaced by the null label with probability label_dropout, per sample (see
    ddpm_helpers.guidance); the label embedding's rows of the classes learn at label_lr_scale times
    lr (Adam moves each weight by about the learning rate per step, so an embedding that starts at
    zero, as when a conditional model starts from an unconditional file, needs a larger rate to
    become as large as the time embedding it is added to in a short run); its null row, which makes
    the network the unconditional model, learns at lr like the rest of the network, so that
    eps(x_t, t, null) stays close to the unconditional file it started from. All randomness
    (batches, t, eps, dropped labels) comes from `generator`. device=None picks cuda, mps or cpu.
    num_threads (CPU only) is set for the run and restored afterwards; None picks 1 for small
    models and leaves torch's setting for larger ones. `callback(step, seconds, ema_model)`, if
    given, runs after every step (live plots, snapshots).
    """
    _check_args(data, steps, minutes, batch_size, lr, warmup, lr_decay, grad_clip, ema_decay, timesteps)
    loss_weights(schedule, loss_weighting, min_snr_gamma)         # raises on a bad weighting before any work
    check_model_schedule(model, schedule)
    if labels is not None:
        labels = check_training_labels(model, data, labels, label_dropout)
    if isinstance(label_lr_scale, bool) or not isinstance(label_lr_scale, (int, float)) \
            or not 0 < label_lr_scale < math.inf:
        raise ValueError(f"label_lr_scale must be a positive number (1: the label embedding learns at lr), "
                         f"got {label_lr_scale!r}")
    device = torch.device(device) if device is not None else get_device()
    threads_before = torch.get_num_threads()
    if num_threads is None and sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        num_threads = 1
    if device.type == "cpu" and num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _run(model.to(device).train(), data.to(device), schedule.to(device), device, generator,
                    dict(steps=steps, minutes=minutes, batch_size=batch_size, lr=lr, warmup=warmup,
                         lr_decay=lr_decay, grad_clip=grad_clip, weight_decay=weight_decay,
                         ema_decay=ema_decay, timesteps=timesteps, loss_weighting=loss_weighting,
                         min_snr_gamma=min_snr_gamma, label_dropout=None if labels is None else label_dropout,
                         label_lr_scale=None if labels is None else label_lr_scale),
                    progress, callback, labels)
    finally:
        torch.set_num_threads(threads_before)


def _run(model, data, schedule, device, generator, settings, progress, callback, labels) -> TrainResult:
    s = settings
    label_params = list(model.label_embedding.parameters()) if labels is not None else []
    groups = [dict(params=[p for p in model.parameters() if all(p is not q for q in label_params)], lr_scale=1.0)]
    if label_params:
        groups.append(dict(params=label_params, lr_scale=s["label_lr_scale"]))
    optimizer = torch.optim.AdamW(groups, lr=s["lr"], weight_decay=s["weight_decay"])
    null_row = None if not label_params or s["label_lr_scale"] == 1 \
        else (model.label_embedding.table.weight, model.label_embedding.null_label)
    ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(s["ema_decay"]), use_buffers=True)
    batches = ((x0, model) for x0 in iterate_batches(data, s["batch_size"], generator=generator)) if labels is None \
        else labelled_batches(model, data, labels.to(device), s["batch_size"], s["label_dropout"], generator)
    budget_s = s["minutes"] * 60 if s["minutes"] is not None else math.inf
    max_steps = s["steps"] if s["steps"] is not None else math.inf
    weights = loss_weights(schedule, s["loss_weighting"], s["min_snr_gamma"]) \
        if s["loss_weighting"] != "none" else None
    losses, start, step = [], time.perf_counter(), 0
    bar = tqdm(total=s["steps"], disable=not progress, desc="training", unit="step")
    while step < max_steps and time.perf_counter() - start < budget_s:
        spent = max(step / max_steps, (time.perf_counter() - start) / budget_s)
        for group in optimizer.param_groups:
            group["lr"] = s["lr"] * group["lr_scale"] * lr_factor(spent, step, s["warmup"], s["lr_decay"])
        x0, eps_model = next(batches)       # eps_model: the model, or the model bound to the batch's labels
        t = draw_timesteps(x0.shape[0], schedule.T, s["timesteps"], generator).to(device)
        if weights is None:
            loss = loss_simple(eps_model, x0, schedule, t=t, generator=generator)
        else:
            loss = weighted_loss(eps_model, x0, schedule, t, weights, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s["grad_clip"] is not None:
            nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        if null_row is None:
            optimizer.step()
        else:
            _step_null_row_at_lr(optimizer, null_row, s["label_lr_scale"])
        ema.update_parameters(model)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if callback is not None:
            callback(step, time.perf_counter() - start, ema.module)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    bar.close()
    minutes = (time.perf_counter() - start) / 60
    return TrainResult(ema.module.eval(), model, losses, _provenance(step, minutes, generator, device, data, s))


def _step_null_row_at_lr(optimizer, null_row, scale: float) -> None:
    """optimizer.step(), with the null label's row moved by 1/scale of its AdamW update: every term of
    that update (the Adam step and the weight decay) is proportional to the group's learning rate,
    scale * lr, so the row moves exactly as it would at lr."""
    table, row = null_row
    before = table.detach()[row].clone()
    optimizer.step()
    with torch.no_grad():
        table[row] = before + (table[row] - before) / scale


def _provenance(step, minutes, generator, device, data, settings) -> dict:
    return dict(
        steps=step, minutes=minutes, images_seen=step * settings["batch_size"],
        seed=generator.initial_seed() if generator is not None else None, device=str(device),
        accelerator=_accelerator_name(device),
        data_shape=list(data.shape), threads=torch.get_num_threads(),
        machine=f"{platform.machine()} {platform.processor() or platform.system()}, {_cpu_name()}",
        torch=str(torch.__version__), settings={k: v for k, v in settings.items() if k not in ("steps", "minutes")},
        budget={"steps": settings["steps"], "minutes": settings["minutes"]},
    )


def _accelerator_name(device: torch.device) -> str | None:
    """The GPU a run trained on (None on the CPU), so that a checkpoint says which card its minutes are on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "Apple GPU (mps)" if device.type == "mps" else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name} ({os.cpu_count()} logical cores)"


def _check_args(data, steps, minutes, batch_size, lr, warmup, lr_decay, grad_clip, ema_decay, timesteps):
    if steps is None and minutes is None:
        raise ValueError("give a budget: steps=... and/or minutes=... (training stops at whichever comes first)")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps must be a positive int or None, got {steps!r}")
    if minutes is not None and not (isinstance(minutes, (int, float)) and 0 < minutes < math.inf):
        raise ValueError(f"minutes must be a positive number or None, got {minutes!r}")
    if not isinstance(data, Tensor) or not data.is_floating_point() or data.ndim < 2:
        raise TypeError(f"data must be a float tensor (N, ...) in [-1, 1], got {getattr(data, 'dtype', type(data))}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0 (steps of linear warm-up), got {warmup!r}")
    if lr_decay not in (None, "cosine"):
        raise ValueError(f"lr_decay must be None (constant) or 'cosine', got {lr_decay!r}")
    if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
        raise ValueError(f"grad_clip must be a positive number or None (no clipping), got {grad_clip!r}")
    if not (isinstance(ema_decay, (int, float)) and 0 <= ema_decay < 1):
        raise ValueError(f"ema_decay must be in [0, 1), e.g. 0.999, got {ema_decay!r}")
    if timesteps not in ("uniform", "stratified"):
        raise ValueError(f"timesteps must be 'uniform' or 'stratified', got {timesteps!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= data.shape[0]:
        raise ValueError(f"batch_size must be an int in [1, {data.shape[0]}] (the data size), got {batch_size!r}")
