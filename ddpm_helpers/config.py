"""Run-time switches shared by the notebooks: quick mode and the device."""
from __future__ import annotations

import os

import torch

QUICK_ENV = "DDPM_QUICK"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def quick_mode() -> bool:
    """True when the environment variable DDPM_QUICK asks for a quick run.

    Quick mode shrinks training steps and sample counts so that CI (and an impatient student)
    can execute every notebook in minutes. Accepted values: 1/true/yes/on and 0/false/no/off.
    """
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{QUICK_ENV}={os.environ[QUICK_ENV]!r} is not understood; "
        f"set it to 1 for quick mode or 0 (or unset it) for the full run."
    )


def get_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
