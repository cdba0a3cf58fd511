import math
import socket
from pathlib import Path

import pytest
import torch

from ddpm_helpers import data
from ddpm_helpers.data import (
    bundled_mnist_indices,
    iterate_batches,
    load_bundled_mnist,
    load_fashion_mnist,
    load_mnist,
    make_moons,
)

FULL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_full_mnist = pytest.mark.skipif(
    not (FULL_MNIST / "MNIST" / "raw").is_dir(), reason="full MNIST (../shared/data) not present"
)


@pytest.fixture
def no_network(monkeypatch):
    """Make every socket connection fail at once, as on a machine without internet."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("train, n", [(True, 24000), (False, 2000)])
def test_bundled_subset_shapes_dtype_range(train, n):
    images, labels = load_bundled_mnist(train)
    assert images.shape == (n, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert images.min() == -1.0 and images.max() == 1.0
    # uint8 pixels map to k / 127.5 - 1: check the grid exactly
    pixels = (images + 1) * 127.5
    torch.testing.assert_close(pixels, pixels.round(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("train", [True, False])
def test_bundled_subset_has_every_digit_equally(train):
    _, labels = load_bundled_mnist(train)
    counts = torch.bincount(labels, minlength=10)
    assert (counts == counts[0]).all() and counts[0] >= 200


def test_bundled_indices_are_unique_and_in_range():
    for train, size in ((True, 60000), (False, 10000)):
        idx = bundled_mnist_indices(train)
        assert idx.unique().numel() == idx.numel()
        assert 0 <= idx.min() and idx.max() < size


@needs_full_mnist
@pytest.mark.parametrize("train", [True, False])
def test_bundled_images_equal_the_full_dataset(train):
    full_images, full_labels = load_mnist(train, root=FULL_MNIST)
    images, labels = load_bundled_mnist(train)
    idx = bundled_mnist_indices(train)
    assert torch.equal(images, full_images[idx])
    assert torch.equal(labels, full_labels[idx])


def test_offline_fallback_uses_bundle_with_one_notice(tmp_path, no_network, capsys):
    images, labels = load_mnist(train=False, root=tmp_path)
    bundled, bundled_labels = load_bundled_mnist(False)
    assert torch.equal(images, bundled) and torch.equal(labels, bundled_labels)
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "bundled" in notice[0]


def test_explicit_offline_needs_no_network_and_no_root(no_network, capsys):
    images, _ = load_mnist(offline=True, root="/does/not/exist")
    assert images.shape == (24000, 1, 28, 28)


def test_forced_download_without_network_says_what_to_do(tmp_path, no_network):
    with pytest.raises(RuntimeError, match="offline=True"):
        load_mnist(root=tmp_path, offline=False)


def test_root_from_environment_variable(tmp_path, monkeypatch, no_network):
    target = tmp_path / "somefile"
    target.write_text("not a folder")
    monkeypatch.setenv("DDPM_DATA_DIR", str(target))
    with pytest.raises(ValueError, match="is a file"):
        load_mnist()


@pytest.mark.parametrize("bad", [dict(train="test"), dict(train=1), dict(offline="yes")])
def test_bad_arguments_raise_clear_errors(bad):
    with pytest.raises(ValueError):
        load_mnist(**bad)


def write_idx(path: Path, values: torch.Tensor) -> None:
    """An uncompressed IDX file as torchvision reads it: 0, 0, type 0x08 (uint8), ndim, then dims."""
    header = bytes([0, 0, 8, values.ndim]) + b"".join(d.to_bytes(4, "big") for d in values.shape)
    path.write_bytes(header + values.to(torch.uint8).numpy().tobytes())


@pytest.mark.parametrize("train, prefix", [(True, "train"), (False, "t10k")])
def test_fashion_mnist_is_read_from_root_in_the_data_range(tmp_path, no_network, train, prefix):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    pixels = torch.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", pixels if split == prefix else pixels.flip(0))
        write_idx(raw / f"{split}-labels-idx1-ubyte", torch.tensor([9, 0, 4]))
    images, labels = load_fashion_mnist(train=train, root=tmp_path)
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.float32
    torch.testing.assert_close(images[:, 0], pixels.float() / 127.5 - 1.0)
    assert labels.tolist() == [9, 0, 4] and images.min() == -1.0 and images.max() == 1.0


def test_fashion_mnist_offline_without_files_says_what_to_do_quickly(tmp_path, no_network):
    with pytest.raises(RuntimeError, match="no bundled copy.*load_mnist"):
        load_fashion_mnist(root=tmp_path)
    with pytest.raises(ValueError, match="train must be"):
        load_fashion_mnist(train="test")


def test_corrupt_bundle_names_the_fix(tmp_path, monkeypatch):
    corrupt = tmp_path / "mnist_subset.npz"
    corrupt.write_bytes(b"this is not a zip file")
    monkeypatch.setattr(data, "_bundle_path", lambda: corrupt)
    with pytest.raises(RuntimeError, match="Reinstall"):
        load_bundled_mnist()


def test_moons_shape_scale_and_balance():
    points = make_moons(20000, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert points.shape == (20000, 2) and points.dtype == torch.float32
    assert points[:, 0].min() >= -1 - 1e-6 and points[:, 0].max() <= 1 + 1e-6
    assert points[:, 1].min() >= -0.5 - 1e-6 and points[:, 1].max() <= 0.5 + 1e-6
    upper, lower = points[:10000], points[10000:]
    # noiseless points lie exactly on their arcs: radius 1/1.5 around the arc centres
    r_upper = (upper * 1.5 + torch.tensor([0.5, 0.25])).norm(dim=1)
    r_lower = (lower * 1.5 + torch.tensor([0.5, 0.25]) - torch.tensor([1.0, 0.5])).norm(dim=1)
    torch.testing.assert_close(r_upper, torch.ones(10000), atol=1e-5, rtol=0)
    torch.testing.assert_close(r_lower, torch.ones(10000), atol=1e-5, rtol=0)
    # uniform angles: the mean of the upper arc's x is 0 in original units, 2/pi for y
    assert abs(upper[:, 1].mean().item() * 1.5 + 0.25 - 2 / math.pi) < 0.02


def test_moons_noise_has_the_documented_std():
    gen = torch.Generator().manual_seed(1)
    clean = make_moons(50000, noise=0.0, generator=torch.Generator().manual_seed(1))
    noisy = make_moons(50000, noise=0.1, generator=gen)
    residual = noisy - clean  # same seed draws the same angles first, then the noise
    assert abs(residual.std().item() - 0.1) < 0.002


def test_moons_seeding_is_reproducible_and_seeds_differ():
    a = make_moons(100, generator=torch.Generator().manual_seed(3))
    b = make_moons(100, generator=torch.Generator().manual_seed(3))
    c = make_moons(100, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("bad", [dict(n=0), dict(n=2.5), dict(n=10, noise=-0.1), dict(n=10, noise=float("nan"))])
def test_moons_bad_arguments(bad):
    with pytest.raises(ValueError):
        make_moons(**bad)


def test_iterate_batches_covers_each_epoch_once():
    data_ = torch.arange(10).float().unsqueeze(1)
    batches = iterate_batches(data_, 5, generator=torch.Generator().manual_seed(0))
    epoch = torch.cat([next(batches), next(batches)]).squeeze(1)
    assert sorted(epoch.tolist()) == list(range(10))


@pytest.mark.parametrize("size", [0, 11, 2.0])
def test_iterate_batches_rejects_bad_batch_size(size):
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(torch.zeros(10, 2), size))
