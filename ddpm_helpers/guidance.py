"""Class-conditional denoisers and classifier-free guidance (Ho & Salimans 2022).

Notation: c a class label (0 ... num_classes-1), ∅ the null label (index num_classes, "no
condition"), s the guidance scale, p the label-dropout probability.

Training: one network learns both eps(x_t, t, c) and eps(x_t, t, ∅), because each sample's label
is replaced by ∅ with probability p, independently per sample (`drop_labels`).
Sampling: every sampler takes an eps-model eps(x_t, t); `classifier_free_guidance` builds one:

    eps_guided(x_t, t) = eps(x_t, t, ∅) + s * (eps(x_t, t, c) - eps(x_t, t, ∅))

s = 0 is the unconditional model, s = 1 the conditional one, s > 1 extrapolates past the
conditional model, away from what the unconditional one expects, towards "more c than c".
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from .data import iterate_batches
from .models.labels import check_labels

EpsModel = Callable[[Tensor, Tensor], Tensor]


def classifier_free_guidance(model: nn.Module, labels: Tensor | int, scale: float,
                             interval: tuple[int, int] | None = None) -> EpsModel:
    """An eps-model guided(x_t, t) for a conditional `model(x_t, t, labels)` (built with num_classes):

        eps_guided = eps(x_t, t, ∅) + scale * (eps(x_t, t, c) - eps(x_t, t, ∅))

    so that every sampler (ancestral, DDIM, their progressive variants, the explorers) samples
    with guidance unchanged. scale = 1 is plain conditional sampling, scale = 0 unconditional;
    Ho & Salimans (2022, eq. 6) write the same thing as (1 + w) eps(c) - w eps(∅), i.e. w = scale - 1,
    so their w = 0 is our scale = 1. `labels`: one class per sample, a LongTensor (B,) in
    0 ... num_classes-1 (B = the sampler's batch), or an int for the whole batch.

    For 0 < scale != 1 both halves run in one batched call on [x_t; x_t] (the cost of one model
    call at twice the batch); scale 0 and 1 need one half only and call the model once at batch B.

    `interval=(t_lo, t_hi)`: guide only at the timesteps t_lo <= t <= t_hi and sample
    conditionally (scale 1, one half, half the cost) elsewhere: guidance in a limited interval
    (Kynkäänniemi et al. 2024). At high noise guidance mostly pulls every sample of a class
    towards one layout and costs diversity; at low noise it only sharpens strokes. None (the
    default) guides at every step.
    """
    num_classes = _num_classes(model, "classifier_free_guidance")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number (0: unconditional, 1: conditional, >1: guided), "
                         f"got {scale!r}")
    if isinstance(labels, int) and not isinstance(labels, bool):
        check_labels(torch.tensor([labels]), num_classes)
    else:
        labels = check_labels(labels, num_classes)
    if interval is not None:
        _check_interval(interval)

    def guided(x_t: Tensor, t: Tensor) -> Tensor:
        batch = x_t.shape[0]
        c = torch.full((batch,), labels) if isinstance(labels, int) else check_labels(labels, num_classes, batch)
        c, null = c.to(x_t.device), torch.full((batch,), num_classes, device=x_t.device)
        t = torch.as_tensor(t, device=x_t.device).expand(batch)
        inside = torch.ones_like(t, dtype=torch.bool) if interval is None else (t >= interval[0]) & (t <= interval[1])
        if scale == 1 or not inside.any():
            return model(x_t, t, c)
        if scale == 0 and inside.all():
            return model(x_t, t, null)
        eps_c, eps_null = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([c, null])).chunk(2)
        inside = inside.view(-1, *[1] * (x_t.dim() - 1))
        return torch.where(inside, eps_null + scale * (eps_c - eps_null), eps_c)

    guided.scale, guided.labels, guided.interval = scale, labels, interval
    return guided


def _check_interval(interval) -> None:
    if (not isinstance(interval, (tuple, list)) or len(interval) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in interval)
            or not 0 <= interval[0] <= interval[1]):
        raise ValueError(f"interval must be two integer timesteps (t_lo, t_hi) with 0 <= t_lo <= t_hi "
                         f"(guidance at t_lo <= t <= t_hi, e.g. (100, 600)), or None to guide at every step; "
                         f"got {interval!r}")


def drop_labels(labels: Tensor, p: float, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """Label dropout: each label is replaced by the null label `num_classes` independently with
    probability p (a Bernoulli draw per sample from `generator`, never the whole batch at once)."""
    labels = check_labels(labels, num_classes)
    _check_probability(p)
    source = generator.device if generator is not None else torch.device("cpu")
    drop = (torch.rand(labels.shape[0], generator=generator, device=source) < p).to(labels.device)
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def with_labels(model: nn.Module, labels: Tensor) -> EpsModel:
    """The eps-model x_t, t -> model(x_t, t, labels) for fixed labels (what the loss sees)."""
    return lambda x_t, t: model(x_t, t, labels)


def labelled_batches(model: nn.Module, data: Tensor, labels: Tensor, batch_size: int, p: float,
                     generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, EpsModel]]:
    """Training batches (x0, eps-model) forever: a fresh shuffle of (data, labels) per pass, labels
    dropped to ∅ with probability p per sample, and the model bound to the batch's labels, so that
    the loss can call eps_model(x_t, t) as for an unconditional model."""
    index = torch.arange(data.shape[0])[:, None]
    for i in iterate_batches(index, batch_size, generator=generator):
        i = i[:, 0]
        y = drop_labels(labels[i.to(labels.device)], p, model.num_classes, generator)
        yield data[i.to(data.device)], with_labels(model, y)


def check_training_labels(model: nn.Module, data: Tensor, labels: Tensor, p: float) -> Tensor:
    """Validate train(..., labels=..., label_dropout=p): a conditional model and one class per sample."""
    num_classes = _num_classes(model, "train(..., labels=...)")
    _check_probability(p)
    return check_labels(labels, num_classes, batch=data.shape[0])


def init_from_unconditional(model: nn.Module, unconditional: nn.Module) -> list[str]:
    """Copy an unconditional model's weights into a conditional one of the same architecture
    (the same config but num_classes) and return the names of the tensors the file lacked (the
    label embedding): they are set to zero, so the conditional model starts as exactly the
    unconditional one, eps(x_t, t, c) = eps(x_t, t, ∅) = eps(x_t, t), and learns the labels."""
    _num_classes(model, "init_from_unconditional")
    config = {k: v for k, v in model.config.items() if k != "num_classes"}
    if type(model) is not type(unconditional) or getattr(unconditional, "config", None) != config:
        raise ValueError(f"a conditional {type(model).__name__}({config}) can only start from an unconditional "
                         f"model with the same settings, got {type(unconditional).__name__}"
                         f"({getattr(unconditional, 'config', None)})")
    result = model.load_state_dict(unconditional.state_dict(), strict=False)
    new = sorted(result.missing_keys)
    if result.unexpected_keys or any(not k.startswith("label_embedding.") for k in new):
        raise ValueError(f"weights do not fit: missing {new}, unexpected {result.unexpected_keys}")
    with torch.no_grad():
        for name in new:
            model.get_parameter(name).zero_()
    return new


def _num_classes(model, where: str) -> int:
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError(f"{where} needs a class-conditional model, built with num_classes "
                         f"(e.g. UNet(num_classes=10) or load_pretrained('mnist_unet_cond')), "
                         f"got {type(model).__name__} without num_classes")
    return num_classes


def _check_probability(p) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"label_dropout must be a probability in [0, 1) (0.1 is usual), got {p!r}")
