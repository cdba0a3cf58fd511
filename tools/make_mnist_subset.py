"""Derive the MNIST subset bundled in ddpm_helpers/assets from the full dataset.

Development only; the package never runs this. Reproduce the shipped file with

    python tools/make_mnist_subset.py ../shared/data/MNIST/raw ddpm_helpers/assets/mnist_subset.npz

It draws a seeded, class-balanced random subset (2,400 training and 200 test images per digit)
and stores the images as uint8 together with their indices in the original files, so that
anyone holding full MNIST can check that every bundled image is a real, unmodified one.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 20261125
PER_CLASS = {"train": 2400, "test": 200}
FILE_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """Read an uncompressed IDX file (the format MNIST is distributed in)."""
    data = path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="folder with the four uncompressed MNIST IDX files")
    parser.add_argument("out", type=Path, help="the .npz file to write")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, per_class in PER_CLASS.items():
        images = read_idx(args.raw / f"{FILE_PREFIX[split]}-images-idx3-ubyte")
        labels = read_idx(args.raw / f"{FILE_PREFIX[split]}-labels-idx1-ubyte")
        picks = [rng.choice(np.flatnonzero(labels == d), per_class, replace=False) for d in range(10)]
        idx = np.sort(np.concatenate(picks))
        arrays[f"{split}_images"] = images[idx]
        arrays[f"{split}_labels"] = labels[idx]
        arrays[f"{split}_indices"] = idx.astype(np.int32)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
