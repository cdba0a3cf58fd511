"""Train the MNIST classifier behind ddpm_helpers.metrics and compute its reference statistics.

Development only; the package never runs this. Reproduce the shipped file (2-5 minutes on one
CPU core, longer when the machine is busy) with

    python tools/train_classifier.py --data ../shared/data --out ddpm_helpers/assets/mnist_classifier.pt

`--data` is a folder holding full MNIST in torchvision's layout (MNIST/raw/...). Steps:
1. train `MnistClassifier` on the 60,000 training digits (seeded; Adam, cosine learning rate,
   random small shifts / rotations / scalings as augmentation) for a fixed number of epochs;
2. report the accuracy on the full 10,000-digit test set (no model selection on it);
3. reference statistics on the 8,000 test digits that are NOT bundled with the package:
   mean and covariance of the 128-d penultimate features (for the Fréchet distance) and the
   percentiles 0..100 of each digit's pixel-space L2 distance to its nearest bundled training
   digit (for the memorization scores). The bundled 2,000 test digits stay held out for
   `mnist_real_floor`.
The weights are bitwise reproducible for a given torch version and thread count (`--threads`, 1 by
default, recorded in the provenance).
"""
from __future__ import annotations

import argparse
import datetime
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddpm_helpers.classifier import FEATURE_DIM, MnistClassifier, classify
from ddpm_helpers.data import bundled_mnist_indices, load_bundled_mnist, load_mnist
from ddpm_helpers.metrics import feature_statistics, nearest_distances

SEED = 0
EPOCHS = 5
BATCH_SIZE = 128
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
SHIFT_PIXELS, ROTATE_DEGREES, SCALE_RANGE = 2.0, 10.0, 0.1


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine jitter per image; the background (-1) is what fills the border."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(ROTATE_DEGREES)
    scale = 1 + (torch.rand(b, generator=generator) * 2 - 1) * SCALE_RANGE
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * SHIFT_PIXELS * 2 / 28
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False) - 1  # zero padding = background


def train(images: torch.Tensor, labels: torch.Tensor) -> MnistClassifier:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = MnistClassifier(FEATURE_DIM)
    steps_per_epoch = images.shape[0] // BATCH_SIZE
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, LEARNING_RATE, total_steps=EPOCHS * steps_per_epoch)
    model.train()
    for epoch in range(EPOCHS):
        order, start, total = torch.randperm(images.shape[0], generator=generator), time.time(), 0.0
        for step in range(steps_per_epoch):
            index = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            loss = F.cross_entropy(model(augment(images[index], generator)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {total / steps_per_epoch:.4f} ({time.time() - start:.0f} s)", flush=True)
    return model.eval()


def accuracy(model: MnistClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    _, probs = classify(model, images)
    return float((probs.argmax(dim=1) == labels).double().mean())


def reference_statistics(model: MnistClassifier, test_images: torch.Tensor) -> dict:
    held_out = torch.ones(test_images.shape[0], dtype=torch.bool)
    held_out[bundled_mnist_indices(train=False)] = False
    reference_images = test_images[held_out]
    features, _ = classify(model, reference_images)
    mu, cov = feature_statistics(features)
    d_nn = nearest_distances(reference_images, load_bundled_mnist(train=True)[0]).double()
    quantiles = torch.quantile(d_nn, torch.linspace(0, 1, 101, dtype=torch.float64))
    return {"mu": mu, "cov": cov, "n": int(held_out.sum()), "train_nn_quantiles": quantiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with MNIST/raw (torchvision layout)")
    parser.add_argument("--out", type=Path, required=True, help="the .pt file to write")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for training (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_images, train_labels = load_mnist(train=True, root=args.data, offline=False)
    test_images, test_labels = load_mnist(train=False, root=args.data, offline=False)
    if train_images.shape[0] != 60000 or test_images.shape[0] != 10000:
        raise SystemExit(f"expected full MNIST (60,000 / 10,000) under {args.data}, got {train_images.shape[0]} / {test_images.shape[0]}")
    model = train(train_images, train_labels)
    test_accuracy = accuracy(model, test_images, test_labels)
    print(f"test accuracy (10,000 digits): {test_accuracy:.4f}")
    reference = reference_statistics(model, test_images)
    provenance = {
        "data": "MNIST (Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0): trained on the 60,000 training "
        "digits; reference statistics from the 8,000 test digits not bundled in mnist_subset.npz",
        "script": "tools/train_classifier.py",
        "epochs": EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "seed": SEED,
        "augmentation": f"shift <= {SHIFT_PIXELS} px, rotation <= {ROTATE_DEGREES} deg, scale 1 +- {SCALE_RANGE}",
        "test_accuracy": test_accuracy,
        "date": datetime.date.today().isoformat(),
        "torch": str(torch.__version__), "threads": args.threads,
    }
    state_dict = {key: value.detach().clone() for key, value in model.state_dict().items()}
    payload = {"state_dict": state_dict, "config": {"feature_dim": FEATURE_DIM}, "reference": reference, "provenance": provenance}
    torch.save(payload, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); provenance: {provenance}")


if __name__ == "__main__":
    main()
