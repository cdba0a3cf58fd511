"""LabelEmbedding: how a denoiser learns which class it is asked for (classifier-free guidance).

A table of `num_classes + 1` learned vectors: one per class 0 ... num_classes-1 and one more, at
index `num_classes`, for the null label ∅ ("no condition"). The model adds the row of its label to
the time embedding, so one network is both eps(x_t, t, c) and eps(x_t, t, ∅) (Ho & Salimans 2022).
The table starts at zero: a conditional model starts as the same function as the unconditional
one (and a pretrained unconditional network can be fine-tuned into a conditional one).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class LabelEmbedding(nn.Module):
    """Map labels (B,) in 0 ... num_classes (num_classes = the null label), or None, to (B, dim)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1 (e.g. 10 for MNIST), got {num_classes!r}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.zeros_(self.table.weight)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, labels: Tensor | None, batch: int) -> Tensor:
        if labels is None:
            labels = torch.full((batch,), self.null_label, dtype=torch.long, device=self.table.weight.device)
        return self.table(check_labels(labels, self.num_classes, batch, allow_null=True))


def check_labels(labels, num_classes: int, batch: int | None = None, allow_null: bool = False) -> Tensor:
    """Validate class labels: an integer tensor of shape (B,) with values in 0 ... num_classes-1
    (and num_classes, the null label, when allow_null). `batch=None` accepts any B."""
    null = f" or {num_classes} (the null label, 'no condition')" if allow_null else ""
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16,
                                                                torch.int8, torch.uint8):
        raise TypeError(f"labels must be an integer tensor of shape (B,) with classes 0..{num_classes - 1}{null}, "
                        f"got {getattr(labels, 'dtype', type(labels).__name__)}; e.g. torch.tensor([7, 7, 3])")
    if labels.ndim != 1 or (batch is not None and labels.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(B,)"
        raise ValueError(f"labels must have shape {want}, one label per sample, got {tuple(labels.shape)}; "
                         "for one class for the whole batch use torch.full((B,), c)")
    high = num_classes if allow_null else num_classes - 1
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > high):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}{null}, got values from {int(labels.min())} "
                         f"to {int(labels.max())}")
    return labels.long()
