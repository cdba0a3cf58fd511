"""ddpm_helpers: the tested code behind the DDPM-from-scratch notebooks.

Notebooks import explicitly from here, e.g. `from ddpm_helpers import q_sample, show_grid`.
"""
from .config import get_device, quick_mode
from .data import iterate_batches, load_bundled_mnist, load_mnist, make_moons

__all__ = [
    "get_device",
    "iterate_batches",
    "load_bundled_mnist",
    "load_mnist",
    "make_moons",
    "quick_mode",
]
