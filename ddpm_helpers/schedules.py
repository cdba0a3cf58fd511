"""Noise schedules: how much noise the forward process adds at each step.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"):

    beta_t        variance added at step t: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)  (2)
    alpha_t       = 1 - beta_t
    alpha_bar_t   = prod_{s<=t} alpha_s:   q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)  (4)
    beta_tilde_t  = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), the variance of q(x_{t-1} | x_t, x_0)  (7)
    snr_t         = alpha_bar_t / (1 - alpha_bar_t), the signal-to-noise ratio (Kingma et al. 2021)

Indexing: code timesteps t = 0 ... T-1 mean the paper's 1 ... T, so every tensor here has length T
(no padding entry). alpha_bars_prev[t] is alpha_bar_{t-1}, with alpha_bars_prev[0] = 1 (the
clean data). Consequently posterior_variance[0] = beta_0 (1 - 1) / (1 - alpha_bar_0) = 0 exactly:
the last reverse step (to x_0) adds no noise anyway.

Everything is computed in float64 and stored in float32.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

_TENSOR_NAMES = (
    "betas", "alphas", "alpha_bars", "alpha_bars_prev", "posterior_variance",
    "posterior_mean_coef_x0", "posterior_mean_coef_xt", "snr", "log_snr",
)


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}.")
    return int(value)


def _check_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


class NoiseSchedule:
    """The betas of a diffusion process and every quantity derived from them.

    Build one with `NoiseSchedule.linear(...)`, `NoiseSchedule.cosine(...)`,
    `NoiseSchedule.from_betas(betas)` or `NoiseSchedule.from_config(schedule.config)`.
    Attributes (1-D float32 tensors of length T, on `schedule.device`): betas, alphas,
    alpha_bars, alpha_bars_prev, posterior_variance, posterior_mean_coef_x0,
    posterior_mean_coef_xt, snr, log_snr.
    """

    def __init__(self, betas: Tensor, kind: str = "custom", config: dict | None = None):
        if not isinstance(betas, Tensor) or betas.ndim != 1 or betas.numel() < 1:
            raise TypeError(f"betas must be a non-empty 1-D tensor, got {betas!r:.80}.")
        if not betas.is_floating_point():
            raise TypeError(f"betas must be a floating-point tensor, got dtype {betas.dtype}.")
        b = betas.detach().to("cpu", torch.float64)
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError(
                f"every beta must lie in the open interval (0, 1); got min {b.min().item():.3g}, "
                f"max {b.max().item():.3g}. Check beta_start/beta_end (or your betas tensor)."
            )
        self.T = b.numel()
        self.kind = kind
        self.config = dict(config) if config is not None else {"kind": kind, "T": self.T}
        for name, value in self._derive(b).items():
            setattr(self, name, value.to(torch.float32))

    @staticmethod
    def _derive(b: Tensor) -> dict[str, Tensor]:
        """All derived quantities from float64 betas (eqs. 2, 4, 6, 7 of Ho et al. 2020)."""
        a = 1.0 - b
        a_bar = torch.cumprod(a, dim=0)
        a_bar_prev = torch.cat([torch.ones(1, dtype=b.dtype), a_bar[:-1]])
        return {
            "betas": b,
            "alphas": a,
            "alpha_bars": a_bar,
            "alpha_bars_prev": a_bar_prev,
            "posterior_variance": b * (1.0 - a_bar_prev) / (1.0 - a_bar),          # (7) beta_tilde
            "posterior_mean_coef_x0": a_bar_prev.sqrt() * b / (1.0 - a_bar),       # (7) mu_tilde
            "posterior_mean_coef_xt": a.sqrt() * (1.0 - a_bar_prev) / (1.0 - a_bar),
            "snr": a_bar / (1.0 - a_bar),
            "log_snr": a_bar.log() - torch.log1p(-a_bar),
        }

    # ----------------------------------------------------------------- constructors
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """beta_t rises linearly from beta_start to beta_end (Ho et al. 2020, section 4)."""
        T = _check_int(T, "T", 1)
        beta_start = _check_float(beta_start, "beta_start")
        beta_end = _check_float(beta_end, "beta_end")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
                f"beta_end={beta_end} (the paper uses 1e-4 and 0.02)."
            )
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        config = {"kind": "linear", "T": T, "beta_start": beta_start, "beta_end": beta_end}
        return cls(betas, kind="linear", config=config)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008) -> "NoiseSchedule":
        """Cosine schedule of Nichol & Dhariwal 2021, eq. 17:

        alpha_bar(t) = f(t) / f(0),  f(t) = cos^2( (t/T + s) / (1 + s) * pi/2 ),
        beta_t = min(1 - alpha_bar(t) / alpha_bar(t-1), 0.999)   for paper steps t = 1 ... T.
        The stored alpha_bars are recomputed as the product of (1 - beta) so that they stay
        consistent with the clipped betas (the clip only bites at the very last steps).
        """
        T = _check_int(T, "T", 1)
        s = _check_float(s, "s")
        if s < 0:
            raise ValueError(f"the offset s must be >= 0, got {s} (the paper uses 0.008).")
        steps = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
        return cls(betas, kind="cosine", config={"kind": "cosine", "T": T, "s": s})

    @classmethod
    def from_betas(cls, betas: Tensor) -> "NoiseSchedule":
        """A schedule from any 1-D tensor of betas in (0, 1); `config` cannot rebuild it."""
        return cls(betas, kind="custom")

    @classmethod
    def from_config(cls, config: dict) -> "NoiseSchedule":
        """Rebuild a schedule from `schedule.config`, e.g. {"kind": "cosine", "T": 1000, "s": 0.008}."""
        if not isinstance(config, dict) or "kind" not in config:
            raise TypeError(f"config must be a dict with a 'kind' key, got {config!r}.")
        builders = {"linear": cls.linear, "cosine": cls.cosine}
        kwargs = {k: v for k, v in config.items() if k != "kind"}
        kind = config["kind"]
        if kind not in builders:
            raise ValueError(
                f"unknown schedule kind {kind!r}; expected one of {sorted(builders)}. "
                "A 'custom' schedule cannot be rebuilt from its config: keep its betas and use "
                "NoiseSchedule.from_betas(betas)."
            )
        try:
            return builders[kind](**kwargs)
        except TypeError as err:
            if "unexpected keyword" not in str(err):
                raise
            raise ValueError(f"config {config!r} has an option that {kind!r} does not take: {err}") from None

    # ----------------------------------------------------------------- device
    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device) -> "NoiseSchedule":
        """A copy of this schedule with every tensor on `device` (this one is left unchanged)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.config = dict(self.config)
        for name in _TENSOR_NAMES:
            setattr(new, name, getattr(self, name).to(device))
        return new

    def check_device(self, x: Tensor, name: str = "x") -> None:
        """Raise a ValueError naming the fix when `x` lives on another device than the schedule."""
        if x.device != self.device:
            raise ValueError(
                f"{name} is on {x.device} but the schedule is on {self.device}; move the schedule "
                f"with `schedule = schedule.to({name}.device)` (or move {name} to {self.device})."
            )

    # ----------------------------------------------------------------- timesteps
    def check_timesteps(self, t, batch: int, allow_end: bool = False) -> Tensor:
        """Validate timesteps and return them as a LongTensor of shape (batch,) on self.device.

        `t` is an int (used for the whole batch), a 0-d integer tensor, or an integer tensor
        of shape (batch,). Valid values are 0 ... T-1; with allow_end=True also -1 ("the end",
        alpha_bar = 1), which DDIM uses as the last t_prev.
        """
        batch = _check_int(batch, "batch", 0)
        low = -1 if allow_end else 0
        if isinstance(t, Tensor):
            if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
                raise TypeError(f"timesteps must be an integer tensor (torch.long), got dtype {t.dtype}.")
            if t.ndim == 0:
                t = t.expand(batch)
            if tuple(t.shape) != (batch,):
                raise ValueError(
                    f"timesteps must have shape ({batch},) (one per sample), got {tuple(t.shape)}; "
                    "pass an int to use the same t for the whole batch."
                )
            t = t.to(self.device, torch.long)
        elif isinstance(t, numbers.Integral) and not isinstance(t, bool):
            t = torch.full((batch,), int(t), dtype=torch.long, device=self.device)
        else:
            raise TypeError(f"timesteps must be an int or a LongTensor of shape ({batch},), got {t!r:.60}.")
        if t.numel() and (int(t.min()) < low or int(t.max()) > self.T - 1):
            raise ValueError(
                f"timesteps must lie in {low} ... {self.T - 1} (code t = 0 ... T-1 is the paper's "
                f"1 ... T), got values from {int(t.min())} to {int(t.max())}."
            )
        return t

    @staticmethod
    def gather(values: Tensor, t: Tensor, ndim: int) -> Tensor:
        """values[t] reshaped to (B, 1, ..., 1) with `ndim` dims, to broadcast against x of that ndim.

        `t` must already be checked (use `check_timesteps`).
        """
        return values[t].reshape(t.shape[0], *([1] * (ndim - 1)))

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "kind")
        a = self.alpha_bars
        if a.is_meta:                                   # a tensor without data (used in tests)
            return f"NoiseSchedule(kind={self.kind!r}, {options}, device={self.device})"
        return (
            f"NoiseSchedule(kind={self.kind!r}, {options}, device={self.device}; alpha_bar from "
            f"{a[0].item():.6g} at t=0 to {a[-1].item():.3g} at t={self.T - 1})"
        )
