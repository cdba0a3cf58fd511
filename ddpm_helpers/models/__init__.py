"""Denoising networks eps_theta(x_t, t): an MLP for 2-D points and a small U-Net for MNIST."""
from __future__ import annotations

from torch import nn

from .embeddings import SinusoidalEmbedding, check_timesteps
from .mlp import MLPDenoiser
from .unet import UNet

# Architectures a checkpoint can name (the class name is stored in the file).
MODELS: dict[str, type[nn.Module]] = {"MLPDenoiser": MLPDenoiser, "UNet": UNet}


def num_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of (trainable) parameters of any nn.Module, e.g. f"{num_parameters(m):,}"."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "MLPDenoiser", "SinusoidalEmbedding", "UNet", "check_timesteps", "num_parameters"]
