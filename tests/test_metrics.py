import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ddpm_helpers.classifier import FEATURE_DIM, MnistClassifier, classifier_provenance, classify, load_mnist_classifier
from ddpm_helpers.data import load_bundled_mnist, make_moons
from ddpm_helpers.metrics import (
    frechet_distance,
    mnist_real_floor,
    mnist_scores,
    moons_real_floor,
    moons_reference,
    moons_scores,
    nearest_distances,
)

torch.set_num_threads(1)
N = 500  # enough for stable rankings, small enough for a fast test file


@pytest.fixture(scope="module")
def real_test_digits():
    images, labels = load_bundled_mnist(train=False)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(1))[:N]
    return images[order], labels[order]


def test_frechet_distance_equal_covariances_is_squared_mean_distance():
    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = a @ a.T + 0.1 * torch.eye(6, dtype=torch.float64)
    mu1, mu2 = torch.zeros(6), torch.arange(6.0)
    assert frechet_distance(mu1, cov, mu2, cov) == pytest.approx(float((mu2 - mu1).square().sum()), rel=1e-9)


def test_frechet_distance_diagonal_covariances_closed_form():
    var1 = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64)
    var2 = torch.tensor([4.0, 1.0, 1.0, 0.0], dtype=torch.float64)  # a singular covariance too
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0, 3.0])
    expected = 1.0 + 4.0 + ((var1.sqrt() - var2.sqrt()).square()).sum().item()
    assert frechet_distance(mu1, var1.diag(), mu2, var2.diag()) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_invariant_to_a_common_rotation():
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    c1, c2 = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])), torch.diag(torch.tensor([5.0, 1.0, 1.0, 2.0, 0.5]))
    mu = torch.ones(5, dtype=torch.float64)
    plain = frechet_distance(mu, c1, -mu, c2)
    rotated = frechet_distance(q @ mu, q @ c1.double() @ q.T, -q @ mu, q @ c2.double() @ q.T)
    assert rotated == pytest.approx(plain, rel=1e-9)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


def test_shipped_classifier_is_accurate_and_documented(real_test_digits):
    images, labels = real_test_digits
    model = load_mnist_classifier()
    assert isinstance(model, MnistClassifier) and model.features(images[:2]).shape == (2, FEATURE_DIM)
    accuracy = (model(images).argmax(dim=1) == labels).double().mean().item()
    assert accuracy >= 0.98
    provenance = classifier_provenance()
    assert provenance["test_accuracy"] >= 0.99 and {"data", "epochs", "seed", "date"} <= provenance.keys()


def test_fd_ranks_real_below_noisy_below_blurred_below_noise(real_test_digits):
    images, _ = real_test_digits
    generator = torch.Generator().manual_seed(0)
    noisy = (images + 0.2 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    kernel = torch.exp(-torch.arange(-3.0, 4.0).square() / (2 * 1.5**2))
    kernel = (kernel[:, None] * kernel[None, :] / kernel.sum() ** 2)[None, None]
    blurred = F.conv2d(images + 1, kernel, padding=3) - 1
    pure_noise = torch.rand(images.shape, generator=generator) * 2 - 1
    fds = [mnist_scores(x, memorization=False)["fd"] for x in (images, noisy, blurred, pure_noise)]
    assert fds == sorted(fds) and fds[0] < 0.5 * fds[1], fds


def test_one_class_samples_score_badly_on_coverage(real_test_digits):
    images, labels = real_test_digits
    real = mnist_scores(images, memorization=False)
    with pytest.warns(UserWarning, match="few"):  # about 50 digits
        ones = mnist_scores(images[labels == 1], memorization=False)
    assert max(real["class_share"]) < 0.2 and real["class_balance"] > 0.95
    assert ones["class_share"][1] > 0.95 and ones["class_balance"] < 0.1
    assert ones["fd"] > real["fd"]


def test_scores_have_documented_keys_and_real_data_looks_real(real_test_digits):
    scores = mnist_scores(real_test_digits[0])
    assert scores["n"] == N and len(scores["class_share"]) == 10
    assert sum(scores["class_share"]) == pytest.approx(1.0)
    assert scores["confident"] > 0.95
    assert 0.8 < scores["train_nn_ratio"] < 1.2 and scores["train_copy_share"] < 0.05


def test_return_probs_gives_the_classifier_softmax_behind_the_scores(real_test_digits):
    images = real_test_digits[0]
    scores = mnist_scores(images, memorization=False, return_probs=True)
    _, probs = classify(load_mnist_classifier(), images)
    assert torch.equal(scores["probs"], probs)
    shares = torch.bincount(probs.argmax(dim=1), minlength=10).double() / len(images)
    assert scores["class_share"] == shares.tolist()
    assert "probs" not in mnist_scores(images, memorization=False)


def test_memorized_training_digits_are_flagged():
    train_images, _ = load_bundled_mnist(train=True)
    copies = train_images[:300] + 0.01 * torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    scores = mnist_scores(copies.clamp(-1, 1))
    assert scores["train_nn_ratio"] < 0.1 and scores["train_copy_share"] == 1.0


def test_nearest_distances_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    queries, references = torch.randn(7, 5, generator=generator), torch.randn(11, 5, generator=generator)
    expected = torch.cdist(queries, references).min(dim=1).values
    torch.testing.assert_close(nearest_distances(queries, references, batch_size=3), expected, rtol=1e-5, atol=1e-5)


def test_mnist_real_floor_is_reproducible_with_its_seed():
    a, b = mnist_real_floor(300, seed=5, memorization=False), mnist_real_floor(300, seed=5, memorization=False)
    c = mnist_real_floor(300, seed=6, memorization=False)
    assert a == b and a["fd"] != c["fd"]


@pytest.mark.parametrize("n", [1, 2001, 3.0])
def test_mnist_real_floor_rejects_bad_n(n):
    with pytest.raises(ValueError, match="2000"):
        mnist_real_floor(n)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.zeros(4, 28, 28), ValueError, r"\(N, 1, 28, 28\)"),
        (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), TypeError, "float"),
        (torch.zeros(4, 1, 28, 28).numpy(), TypeError, "torch.Tensor"),
        (torch.full((4, 1, 28, 28), 255.0), ValueError, "clamp"),
        (torch.full((4, 1, 28, 28), float("nan")), ValueError, "NaN"),
    ],
)
def test_mnist_scores_rejects_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        mnist_scores(bad)


def test_mnist_scores_warns_when_n_is_small_for_the_features(real_test_digits):
    with pytest.warns(UserWarning, match="few"):
        mnist_scores(real_test_digits[0][:50], memorization=False)


def test_small_n_warnings_point_at_the_callers_line_not_the_package():
    for score in (lambda: mnist_real_floor(50, seed=1, memorization=False),
                  lambda: mnist_scores(torch.zeros(50, 1, 28, 28), memorization=False)):
        with pytest.warns(UserWarning, match="few") as record:
            score()
        assert [Path(w.filename).name for w in record] == [Path(__file__).name]


def test_moons_real_data_scores_near_zero_and_splits_evenly():
    floor = moons_real_floor(1000, seed=0)
    assert floor["w2_method"] == "exact" and floor["n"] == 1000
    assert abs(floor["upper_share"] - 0.5) < 0.02 and abs(floor["lower_share"] - 0.5) < 0.02
    assert floor["off_share"] < 0.01 and floor == moons_real_floor(1000, seed=0)
    assert 0 < floor["w2"] < 0.1  # two independent draws: never the same points


def test_moons_reference_differs_from_the_floor_draw_with_the_same_seed():
    floor_points = make_moons(100, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(moons_reference(100, seed=3), floor_points)
    assert torch.equal(moons_reference(100, seed=3), moons_reference(100, seed=3))


def test_moons_w2_ranks_shifted_and_noisy_worse_than_real():
    generator = torch.Generator().manual_seed(7)
    real = make_moons(1000, generator=generator)
    noisy = make_moons(1000, noise=0.15, generator=generator)
    shifted = real + torch.tensor([0.3, 0.0])
    w2 = {name: moons_scores(x)["w2"] for name, x in [("real", real), ("noisy", noisy), ("shifted", shifted)]}
    assert w2["real"] < w2["noisy"] and w2["real"] < w2["shifted"] and w2["real"] < 0.1, w2
    # a constant shift s costs at most |s| (W2 is at most the cost of moving every point by s)
    assert w2["shifted"] <= 0.3 + w2["real"] + 1e-9


def test_moons_w2_matches_brute_force_matching_on_two_points():
    # two points each: W2^2 is the cheaper of the two possible matchings
    points = make_moons(2, generator=torch.Generator().manual_seed(0))
    reference = moons_reference(2, seed=0)
    cost = torch.cdist(points.double(), reference.double()).square()
    expected = math.sqrt(min(cost[0, 0] + cost[1, 1], cost[0, 1] + cost[1, 0]) / 2)
    assert moons_scores(points, seed=0)["w2"] == pytest.approx(expected, rel=1e-9)


def test_one_moon_samples_put_all_mass_on_that_moon():
    upper = make_moons(1000, generator=torch.Generator().manual_seed(3))[:500]
    scores = moons_scores(upper)
    assert scores["upper_share"] > 0.99 and scores["lower_share"] < 0.01


def test_moons_sliced_w2_beyond_2000_points():
    generator = torch.Generator().manual_seed(4)
    real, shifted = make_moons(3000, generator=generator), make_moons(3000, generator=generator) + 0.5
    a, b = moons_scores(real), moons_scores(shifted)
    assert a["w2_method"] == b["w2_method"] == "sliced" and a["w2"] < 0.05 < b["w2"]
    assert b["off_share"] > 0.5


@pytest.mark.parametrize(
    "bad, error",
    [(torch.zeros(5, 3), ValueError), (torch.zeros(5, 2, dtype=torch.int64), TypeError),
     (torch.zeros(1, 2), ValueError), ([[0.0, 0.0]] * 3, TypeError)],
)
def test_moons_scores_rejects_bad_input(bad, error):
    with pytest.raises(error):
        moons_scores(bad)
