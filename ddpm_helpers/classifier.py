"""A small MNIST classifier: the feature extractor behind the sample-quality metrics.

Inception-based FID needs a weights download and is badly biased on 28x28 digits at small N;
a classifier trained on MNIST itself measures what matters here (as the "Fréchet LeNet
distance" does). Its penultimate layer, `FEATURE_DIM` = 128 ReLU units, is the feature space
in which `metrics.frechet_distance` compares samples with real digits.

The shipped weights (`assets/mnist_classifier.pt`) were trained by `tools/train_classifier.py`
on the 60,000 MNIST training images; the file also holds the reference statistics the metrics
use and the provenance (data, epochs, seed, test accuracy, date). See assets/README.md.
"""
from __future__ import annotations

import functools
import pickle
from importlib import resources

import torch
from torch import Tensor, nn

FEATURE_DIM = 128
CLASSIFIER_FILE = "mnist_classifier.pt"


class MnistClassifier(nn.Module):
    """Three conv blocks (28 -> 14 -> 7 -> 3 pixels) and a 128-unit feature layer.

    Input: (B, 1, 28, 28) images in [-1, 1]. `features(x)` gives the (B, 128) penultimate
    activations, `forward(x)` the (B, 10) logits.
    """

    def __init__(self, feature_dim: int = FEATURE_DIM, dropout: float = 0.3):
        super().__init__()
        self.feature_dim = feature_dim
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 14 x 14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 64 x 7 x 7
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 128 x 3 x 3
        )
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations, shape (B, feature_dim)."""
        return self.embed(self.convs(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


def load_mnist_classifier() -> MnistClassifier:
    """A fresh copy of the shipped, trained classifier on the CPU, in eval mode."""
    payload = _asset()
    model = MnistClassifier(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def classifier_provenance() -> dict:
    """How the shipped weights were made: data, epochs, seed, test accuracy, date."""
    return dict(_asset()["provenance"])


@torch.no_grad()
def classify(model: MnistClassifier, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Features (N, feature_dim) and softmax probabilities (N, 10), as float64 on the CPU."""
    device = next(model.parameters()).device
    features, probs = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device=device, dtype=torch.float32)
        h = model.features(batch)
        features.append(h.cpu().double())  # to the CPU first: MPS has no float64
        probs.append(model.head(h).softmax(dim=1).cpu().double())
    return torch.cat(features), torch.cat(probs)


@functools.lru_cache(maxsize=1)
def _asset() -> dict:
    path = resources.files("ddpm_helpers") / "assets" / CLASSIFIER_FILE
    try:
        with resources.as_file(path) as file:
            return torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise RuntimeError(
            f"The MNIST classifier weights ({path}) are missing or corrupt ({error}). "
            "Reinstall ddpm_helpers (pip install -r requirements.txt) or restore the file with git."
        ) from error
