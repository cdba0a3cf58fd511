"""The jackknife spread of the MNIST Fréchet distance, against mnist_scores and a brute-force jackknife."""
import math

import pytest
import torch

from ddpm_helpers.classifier import classify, load_mnist_classifier
from ddpm_helpers.data import load_bundled_mnist
from ddpm_helpers.metrics import mnist_real_floor, mnist_scores
from ddpm_helpers.spread import mnist_fd_spread, mnist_real_floor_spread

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    images, _ = load_bundled_mnist(train=True)
    return images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(2))[:300]]


def test_fd_is_the_one_of_mnist_scores_and_sd_is_the_grouped_jackknife(digits):
    got = mnist_fd_spread(digits, groups=4)
    assert got["n"] == 300 and got["groups"] == 4
    assert got["fd"] == pytest.approx(mnist_scores(digits, memorization=False)["fd"], rel=1e-9)
    group = torch.arange(300) % 4
    left_out = [mnist_scores(digits[group != j], memorization=False)["fd"] for j in range(4)]
    mean = sum(left_out) / 4
    want = math.sqrt(3 / 4 * sum((d - mean) ** 2 for d in left_out))
    assert want > 0 and got["fd_sd"] == pytest.approx(want, rel=1e-6)


def test_return_probs_gives_the_softmax_of_the_one_classifier_run(digits):
    got = mnist_fd_spread(digits, groups=4, return_probs=True)
    _, probs = classify(load_mnist_classifier(), digits)
    assert torch.equal(got["probs"], probs)
    assert got["fd"] == mnist_fd_spread(digits, groups=4)["fd"]
    assert "probs" not in mnist_fd_spread(digits, groups=4)


def test_floor_spread_scores_the_digits_of_mnist_real_floor():
    got = mnist_real_floor_spread(300, seed=3, groups=5)
    assert got["fd"] == pytest.approx(mnist_real_floor(300, seed=3, memorization=False)["fd"], rel=1e-9)
    assert got["fd_sd"] > 0


@pytest.mark.parametrize("call, error, message", [
    (lambda d: mnist_fd_spread(d, groups=1), ValueError, r"groups must be an int in \[2, 300\]"),
    (lambda d: mnist_fd_spread(d, groups=301), ValueError, "groups must be"),
    (lambda d: mnist_fd_spread(d * 127.5 + 127.5), ValueError, r"must lie in \[-1, 1\]"),
    (lambda d: mnist_real_floor_spread(2001), ValueError, r"\[2, 2000\]"),
])
def test_bad_input_raises(digits, call, error, message):
    with pytest.raises(error, match=message):
        call(digits)
