"""Sinusoidal time embedding: how a denoiser learns which step t of the chain it is looking at.

Notation: t is the code timestep (0 ... T-1, the paper's 1 ... T); `dim` the embedding width.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def check_timesteps(t: Tensor, batch: int | None = None) -> Tensor:
    """Validate the t a denoiser receives: a tensor of shape (B,), B the batch size of x_t.

    Samplers pass t as a LongTensor (B,); float tensors are accepted too (continuous time).
    `batch=None` accepts any B.
    """
    if not isinstance(t, Tensor):
        raise TypeError(
            f"t must be a tensor of shape (B,), got {type(t).__name__}; "
            "use torch.full((B,), t, dtype=torch.long) for one step for the whole batch."
        )
    if batch is None and t.ndim == 1:
        batch = t.shape[0]
    if t.shape != (batch,):
        raise ValueError(
            f"t must have shape {(batch,) if batch else '(B,)'} (one timestep per sample), "
            f"got {tuple(t.shape)}; use t.expand(B) for a scalar t or check the batch size."
        )
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"t must hold integer (or real) timesteps, got dtype {t.dtype}")
    return t


class SinusoidalEmbedding(nn.Module):
    """Map timesteps t (B,) to vectors (B, dim) of sines and cosines at geometric frequencies.

    e(t)_i = sin(t * w_i),  e(t)_{half+i} = cos(t * w_i),  w_i = max_period^(-i / half),
    i = 0 ... half-1, half = dim / 2      (section 3.5 of Vaswani et al. 2017; section 4 of Ho et al. 2020)

    Every entry lies in [-1, 1] whatever t is, the fastest frequency (w_0 = 1) separates
    neighbouring integers and the slowest keeps t up to ~max_period apart.
    """

    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even int >= 2 (half sines, half cosines), got {dim!r}")
        if not (isinstance(max_period, (int, float)) and max_period > 1):
            raise ValueError(f"max_period must be a number > 1, got {max_period!r}")
        self.dim = dim
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        t = check_timesteps(t)
        angles = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]    # (B, half)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
