"""Data for the course: two moons (generated), MNIST (downloaded, or a bundled real subset), and
Fashion-MNIST as an online-only option.

Every tensor returned here lives in [-1, 1], the range the diffusion code assumes.
"""
from __future__ import annotations

import math
import os
import socket
import sys
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DATA_DIR_ENV = "DDPM_DATA_DIR"
DEFAULT_ROOT = Path.home() / ".cache" / "ddpm_helpers"
BUNDLED_FILE = "mnist_subset.npz"
# The hosts torchvision downloads from first; probing one tells "online" in seconds.
_MNIST_HOST = ("ossci-datasets.s3.amazonaws.com", 443)
_FASHION_HOST = ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)
_PROBE_SECONDS = 3.0


def make_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Sample n points of the two-moons data set as an (n, 2) float32 tensor.

    Scale: the classic two moons (upper arc cos/sin of an angle in [0, pi], lower arc shifted
    by (1, 0.5)) are centred and divided by 1.5, so that without noise x spans [-1, 1] and
    y spans [-0.5, 0.5]. `noise` is the standard deviation of Gaussian noise added in these
    final coordinates. Angles are drawn uniformly at random (not on a grid), so draws are
    i.i.d. The first n // 2 points belong to the upper moon, the rest to the lower one.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    n_upper = n // 2
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    upper = torch.stack([angle.cos(), angle.sin()], dim=1)
    lower = torch.stack([1.0 - angle.cos(), 0.5 - angle.sin()], dim=1)
    is_upper = (torch.arange(n) < n_upper).unsqueeze(1)
    points = torch.where(is_upper, upper, lower)
    points = (points - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 1.5
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points.float()


def load_mnist(
    train: bool = True,
    root: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """MNIST images as (N, 1, 28, 28) float32 in [-1, 1], with (N,) int64 labels.

    Full MNIST comes through torchvision: it is read from `root` (or $DDPM_DATA_DIR, or
    ~/.cache/ddpm_helpers) when it is already there, and downloaded there otherwise.
    When no download is possible (offline=True, or offline=None and the download server does not
    answer within a few seconds) the real MNIST subset bundled with the package is used instead
    (24,000 training / 2,000 test digits, balanced) and one notice line says so.
    """
    _check_train(train)
    if offline not in (None, True, False):
        raise ValueError(f"offline must be None (detect), True or False, got {offline!r}")
    if offline is True:
        return load_bundled_mnist(train)
    root = _resolve_root(root)
    if _torchvision_present(root, "MNIST"):
        return _load_torchvision(root, train, download=False)
    if offline is None and not _online(_MNIST_HOST):
        print(
            "MNIST download not reachable (offline?): using the bundled real subset "
            f"({'24,000 training' if train else '2,000 test'} digits, all classes balanced).",
            file=sys.stderr,
        )
        return load_bundled_mnist(train)
    return _load_torchvision(root, train, download=True)


def load_fashion_mnist(train: bool = True, root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST (Xiao et al. 2017: 28x28 grey images of ten kinds of clothing, a drop-in
    replacement for MNIST) as (N, 1, 28, 28) float32 in [-1, 1], with (N,) int64 labels.

    An optional data set for students who want to go further, online only: read from `root` (or
    $DDPM_DATA_DIR, or ~/.cache/ddpm_helpers) under FashionMNIST/raw when it is there, downloaded
    there otherwise. Nothing is bundled, so without a connection (checked in a few seconds) and
    without the files it raises an error that says what to do. The metrics of this package score
    digits only: their classifier knows MNIST, not clothes.
    """
    _check_train(train)
    root = _resolve_root(root)
    if _torchvision_present(root, "FashionMNIST"):
        return _load_torchvision(root, train, download=False, dataset="FashionMNIST")
    if not _online(_FASHION_HOST):
        raise RuntimeError(
            f"Fashion-MNIST is not in {root / 'FashionMNIST' / 'raw'} and its download server does not "
            "answer (offline?). There is no bundled copy: connect and call again, put torchvision's "
            "FashionMNIST/raw files under `root`, or use load_mnist(), which works offline."
        )
    return _load_torchvision(root, train, download=True, dataset="FashionMNIST")


def load_bundled_mnist(train: bool = True) -> tuple[Tensor, Tensor]:
    """The real MNIST subset shipped in ddpm_helpers/assets (see its README for provenance)."""
    arrays = _read_bundle()
    split = "train" if train else "test"
    images = torch.from_numpy(arrays[f"{split}_images"].astype(np.float32))
    labels = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
    return images.unsqueeze(1) / 127.5 - 1.0, labels


def bundled_mnist_indices(train: bool = True) -> Tensor:
    """Indices of the bundled images in the original MNIST training or test file."""
    split = "train" if train else "test"
    return torch.from_numpy(_read_bundle()[f"{split}_indices"].astype(np.int64))


def iterate_batches(
    data: Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[Tensor]:
    """Yield random training batches forever: each pass is a fresh shuffle of the whole tensor.

    Faster than a DataLoader for data that already sit in memory as one tensor (MNIST is 47 MB).
    """
    if not isinstance(data, Tensor) or data.ndim < 2:
        raise ValueError(f"data must be a tensor of shape (N, ...), got {type(data).__name__}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= data.shape[0]:
        raise ValueError(f"batch_size must be an int in [1, {data.shape[0]}] (the data size), got {batch_size!r}")
    while True:
        order = torch.randperm(data.shape[0], generator=generator)
        for start in range(0, data.shape[0] - batch_size + 1, batch_size):
            yield data[order[start : start + batch_size]]


def _check_train(train) -> None:
    if not isinstance(train, bool):
        raise ValueError(f"train must be True (training split) or False (test split), got {train!r}")


def _resolve_root(root: str | os.PathLike | None) -> Path:
    root = Path(root if root is not None else os.environ.get(DATA_DIR_ENV, DEFAULT_ROOT)).expanduser()
    if root.exists() and not root.is_dir():
        raise ValueError(f"MNIST root {str(root)!r} is a file; pass a directory (or unset ${DATA_DIR_ENV}).")
    if root.exists() and not os.access(root, os.R_OK | os.X_OK):
        raise ValueError(f"MNIST root {str(root)!r} is not readable; fix its permissions or pass another root.")
    return root


def _torchvision_present(root: Path, dataset: str) -> bool:
    raw = root / dataset / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all((raw / name).is_file() for name in names)


def _load_torchvision(root: Path, train: bool, download: bool, dataset: str = "MNIST") -> tuple[Tensor, Tensor]:
    from torchvision import datasets

    try:
        loaded = getattr(datasets, dataset)(str(root), train=train, download=download)
    except (OSError, RuntimeError) as error:
        fallback = ("call load_mnist(offline=True) to use the bundled subset" if dataset == "MNIST"
                    else "use load_mnist(), which works offline")
        raise RuntimeError(
            f"Could not get {dataset} into {root} ({error}). Check your connection, pass another root, "
            f"or {fallback}."
        ) from error
    images = loaded.data.float().unsqueeze(1) / 127.5 - 1.0
    return images, loaded.targets.long()


def _online(host: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(host, timeout=_PROBE_SECONDS):
            return True
    except OSError:
        return False


def _bundle_path():
    return resources.files("ddpm_helpers") / "assets" / BUNDLED_FILE


def _read_bundle() -> dict[str, np.ndarray]:
    path = _bundle_path()
    try:
        with resources.as_file(path) as file, np.load(file) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise RuntimeError(
            f"The bundled MNIST subset ({path}) is missing or corrupt ({error}). "
            "Reinstall ddpm_helpers (pip install -r requirements.txt) or restore the file with git."
        ) from error
