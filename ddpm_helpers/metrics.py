"""Sample-quality metrics that run offline on a CPU in seconds, each with a real-vs-real floor.

MNIST (`mnist_scores`, `mnist_real_floor`), features h = the shipped classifier's 128-d
penultimate layer (see `classifier.py`):

    fd                Fréchet distance, squared as in FID (Heusel et al. 2017):
                      d^2 = |mu_s - mu_r|^2 + tr(C_s + C_r - 2 (C_s^1/2 C_r C_s^1/2)^1/2)
                      between the samples' features and those of 8,000 real MNIST test digits
                      (the test images NOT bundled with the package, so the floor is honest).
    confident         share of samples the classifier assigns a class with softmax >= 0.9.
    class_share       10 floats: share of samples classified as each digit (real data: ~0.1 each).
    class_balance     entropy of class_share / log(10): 1 = all digits equally, 0 = one digit.
    train_nn_ratio    median over samples of d_nn(x) / (median d_nn of real held-out test digits),
                      d_nn(x) = L2 distance in pixel space ([-1, 1]) to the nearest of the 24,000
                      bundled training digits. ~1 for real unseen digits, well below 1 = copying.
    train_copy_share  share of samples closer to a training digit than 99 % of real held-out test
                      digits are (below their 1st percentile of d_nn); ~0.01 for real unseen digits.
                      Both only search the 24,000 bundled training digits (so they work offline): a
                      model trained on full MNIST could copy one of the other 36,000 unflagged.

Moons (`moons_scores`, `moons_real_floor`): `w2`, the Wasserstein-2 distance to as many fresh
`make_moons` points (exact optimal matching up to 2,000 points, sliced W2 beyond, named in
`w2_method`), and the shares of points on the upper moon, the lower moon and off both.

Every metric is biased at small N: compare a score only with its floor at the same N.
"""
from __future__ import annotations

import functools
import inspect
import math
import warnings

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .classifier import FEATURE_DIM, _asset, classify, load_mnist_classifier
from .data import load_bundled_mnist, make_moons

CONFIDENT_PROB = 0.9
RANGE_TOLERANCE = 1e-3
MNIST_FLOOR_MAX = 2000              # the bundled held-out test digits
EXACT_W2_MAX = 2000                 # larger sets use sliced W2
SLICED_PROJECTIONS = 256
SEED_LIMIT = 2**32                  # torch's CPU generator keeps 32 bits of a seed
# make_moons geometry (see its docstring): arcs of radius 1 about (0, 0) (upper half) and
# (1, 0.5) (lower half), shifted by (0.5, 0.25) and divided by 1.5.
MOON_RADIUS = 1 / 1.5
UPPER_CENTRE = (-0.5 / 1.5, -0.25 / 1.5)
LOWER_CENTRE = (0.5 / 1.5, 0.25 / 1.5)
MOONS_NOISE = inspect.signature(make_moons).parameters["noise"].default
OFF_MOON_DISTANCE = 4 * MOONS_NOISE  # farther than 4 noise standard deviations from both arcs


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Fréchet distance between N(mu1, cov1) and N(mu2, cov2), in float64.

    d^2 = |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)    (Dowson & Landau 1982)
    Both square roots are symmetric, taken by eigen-decomposition, so the result is real and
    stable even for singular covariances (no complex parts from scipy.linalg.sqrtm).
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    cov1, cov2 = (torch.as_tensor(c, dtype=torch.float64) for c in (cov1, cov2))
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, value, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("cov1", cov1, (d, d)), ("cov2", cov2, (d, d))):
        if tuple(value.shape) != shape or not torch.isfinite(value).all():
            raise ValueError(f"{name} must be a finite array of shape {shape} (mu1 sets d), got shape {tuple(value.shape)}")
    root1 = _sqrtm_psd(cov1)
    cross = _sqrtm_psd(root1 @ cov2 @ root1)
    value = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross.trace()
    return max(float(value), 0.0)


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of (N, d) features, in float64."""
    h = features.double()
    return h.mean(dim=0), torch.cov(h.T)


def nearest_distances(queries: Tensor, references: Tensor, batch_size: int = 256) -> Tensor:
    """For each row of queries (N, D), the L2 distance to its nearest row of references (M, D).

    |q - r|^2 = |q|^2 + |r|^2 - 2 q.r, batched over queries so memory stays at batch x M.
    """
    q_all, r = queries.reshape(queries.shape[0], -1).float(), references.reshape(references.shape[0], -1).float()
    r_sq = r.square().sum(dim=1)
    out = []
    for q in q_all.split(batch_size):
        d_sq = q.square().sum(dim=1, keepdim=True) + r_sq - 2 * q @ r.T
        out.append(d_sq.min(dim=1).values.clamp_min(0).sqrt())  # float rounding can dip below 0
    return torch.cat(out)


def mnist_scores(samples: Tensor, batch_size: int = 500, memorization: bool = True,
                 return_probs: bool = False) -> dict:
    """Score (N, 1, 28, 28) samples in [-1, 1]: fd, confident, class_share, ... (module docstring).

    Compare with `mnist_real_floor(N)`: real digits score fd > 0 too, more so at small N.
    `memorization=False` skips the nearest-training-digit search (about half the time).
    `return_probs=True` adds "probs", the classifier's (N, 10) softmax behind these scores, so that
    a caller who needs per-sample classes (e.g. "is it the requested digit?") classifies only once.
    """
    _check_images(samples)
    _warn_if_few(samples.shape[0])
    scores, probs = _mnist_scores(samples, batch_size, memorization)
    return {**scores, "probs": probs} if return_probs else scores


def _warn_if_few(n: int) -> None:
    """Warn (pointing at the caller of the public function) when n is small for the features."""
    if n < 2 * FEATURE_DIM:
        warnings.warn(
            f"{n} samples are few for {FEATURE_DIM}-d features: the Fréchet distance is strongly "
            f"biased upwards; use >= 1,000 samples, and compare with mnist_real_floor({n}).",
            stacklevel=3,
        )


def _mnist_scores(samples: Tensor, batch_size: int, memorization: bool) -> tuple[dict, Tensor]:
    n = samples.shape[0]
    features, probs = classify(load_mnist_classifier().to(samples.device), samples, batch_size)
    reference = _asset()["reference"]
    mu, cov = feature_statistics(features)
    class_share = torch.bincount(probs.argmax(dim=1), minlength=10).double() / n
    entropy = -(class_share * class_share.clamp_min(1e-300).log()).sum()
    scores = {
        "n": n,
        "fd": frechet_distance(mu, cov, reference["mu"], reference["cov"]),
        "confident": float((probs.max(dim=1).values >= CONFIDENT_PROB).double().mean()),
        "class_share": class_share.tolist(),
        "class_balance": float(entropy / math.log(10)),
    }
    if memorization:
        scores.update(_memorization(samples))
    return scores, probs


def mnist_real_floor(n: int = 1000, seed: int = 0, batch_size: int = 500, memorization: bool = True) -> dict:
    """`mnist_scores` of n real held-out digits: the yardstick for samples at the same n.

    Draws n of the 2,000 bundled MNIST test digits at random without replacement (the test file
    is not i.i.d. by index), with a generator seeded by `seed`. These digits are disjoint from
    both the 8,000 test digits behind the reference statistics and the training digits.
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= MNIST_FLOOR_MAX:
        raise ValueError(
            f"n must be an int in [2, {MNIST_FLOOR_MAX}] (the bundled held-out test digits), got {n!r}; "
            f"score your samples in sets of at most {MNIST_FLOOR_MAX} to compare them with this floor."
        )
    images, _ = load_bundled_mnist(train=False)
    order = torch.randperm(images.shape[0], generator=_generator(seed))
    _warn_if_few(n)
    return _mnist_scores(images[order[:n]], batch_size, memorization)[0]


def moons_scores(samples: Tensor, seed: int = 0) -> dict:
    """Score (N, 2) moons samples: w2 to N fresh make_moons points, and where the mass sits.

    w2 = (min over matchings pi of 1/N sum_i |x_i - y_pi(i)|^2)^1/2: exact by the Hungarian
    algorithm for N <= 2,000; beyond, sliced W2 (root mean over 256 random directions of the
    1-d W2^2, Bonneel et al. 2015), which is smaller than W2: `w2_method` says which. `seed`
    picks the reference draw. upper/lower_share: points within 4 noise standard deviations of
    that arc and nearer to it than to the other; off_share: the rest (real data: ~0).
    """
    _check_points(samples)
    n = samples.shape[0]
    generator = _reference_generator(seed)
    reference = make_moons(n, generator=generator).double()
    x = samples.detach().cpu().double()
    if n <= EXACT_W2_MAX:
        w2, method = _w2_exact(x, reference), "exact"
    else:
        w2, method = _w2_sliced(x, reference, generator), "sliced"
    to_upper, to_lower = _arc_distance(x, UPPER_CENTRE, True), _arc_distance(x, LOWER_CENTRE, False)
    on_moon = torch.minimum(to_upper, to_lower) <= OFF_MOON_DISTANCE
    return {
        "n": n,
        "w2": w2,
        "w2_method": method,
        "upper_share": float((on_moon & (to_upper <= to_lower)).double().mean()),
        "lower_share": float((on_moon & (to_upper > to_lower)).double().mean()),
        "off_share": float((~on_moon).double().mean()),
    }


def moons_real_floor(n: int = 1000, seed: int = 0) -> dict:
    """`moons_scores` of n fresh make_moons points (drawn with `seed`): the yardstick at this n."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    return moons_scores(make_moons(n, generator=_generator(seed)), seed=seed)


def _memorization(samples: Tensor) -> dict:
    quantiles = _asset()["reference"]["train_nn_quantiles"]  # percentiles 0..100 of real test digits
    d_nn = nearest_distances(samples.detach().cpu(), _bundled_train()).double()
    return {
        "train_nn_ratio": float(d_nn.median() / quantiles[50]),
        "train_copy_share": float((d_nn < quantiles[1]).double().mean()),
    }


@functools.lru_cache(maxsize=1)
def _bundled_train() -> Tensor:
    return load_bundled_mnist(train=True)[0].reshape(-1, 28 * 28)


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root V diag(sqrt(w)) V^T of a symmetric PSD matrix."""
    w, v = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T  # rounding makes tiny eigenvalues negative


def _w2_exact(x: Tensor, y: Tensor) -> float:
    cost = torch.cdist(x, y).square().numpy()
    rows, cols = linear_sum_assignment(cost)
    return math.sqrt(cost[rows, cols].mean())


def _w2_sliced(x: Tensor, y: Tensor, generator: torch.Generator) -> float:
    directions = torch.randn(2, SLICED_PROJECTIONS, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=0)
    x_proj, y_proj = (x @ directions).sort(dim=0).values, (y @ directions).sort(dim=0).values
    return math.sqrt(float((x_proj - y_proj).square().mean()))


def _arc_distance(points: Tensor, centre: tuple[float, float], upper: bool) -> Tensor:
    """Distance from (N, 2) points to the upper (or lower) half circle of MOON_RADIUS."""
    v = points - torch.tensor(centre, dtype=points.dtype)
    v_y = v[:, 1] if upper else -v[:, 1]
    to_circle = (v.norm(dim=1) - MOON_RADIUS).abs()
    to_ends = torch.minimum((v[:, 0] - MOON_RADIUS).hypot(v_y), (v[:, 0] + MOON_RADIUS).hypot(v_y))
    return torch.where(v_y >= 0, to_circle, to_ends)


def moons_reference(n: int, seed: int = 0) -> Tensor:
    """The n fresh make_moons points that `moons_scores(samples, seed)` compares n samples with."""
    return make_moons(n, generator=_reference_generator(seed))


def _reference_generator(seed: int) -> torch.Generator:
    """A generator for the reference draw, on a stream apart from `_generator(seed)`'s."""
    _generator(seed)  # validates
    stream = np.random.SeedSequence([seed, 0x6D6F6F6E]).generate_state(1)[0]  # "moon"
    return torch.Generator().manual_seed(int(stream))


def _generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _check_tensor(samples, expected: str) -> None:
    if not isinstance(samples, Tensor):
        raise TypeError(f"samples must be a torch.Tensor of shape {expected}, got {type(samples).__name__}")
    if not samples.is_floating_point():
        raise TypeError(f"samples must be a float tensor, got {samples.dtype}; convert with samples.float()")
    if samples.shape[0] < 2 or not torch.isfinite(samples).all():
        raise ValueError(f"samples must hold >= 2 finite rows of shape {expected}; got {samples.shape[0]} "
                         f"rows, {int((~torch.isfinite(samples)).sum())} non-finite values (NaN/inf).")


def _check_images(samples) -> None:
    if isinstance(samples, Tensor) and (samples.ndim != 4 or tuple(samples.shape[1:]) != (1, 28, 28)):
        raise ValueError(f"samples must have shape (N, 1, 28, 28), got {tuple(samples.shape)}")
    _check_tensor(samples, "(N, 1, 28, 28)")
    low, high = float(samples.min()), float(samples.max())
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"samples must lie in [-1, 1] (the data range), got values in [{low:.3g}, {high:.3g}]; "
            "clamp them with samples.clamp(-1, 1), or rescale images in [0, 1] with samples * 2 - 1."
        )


def _check_points(samples) -> None:
    if isinstance(samples, Tensor) and (samples.ndim != 2 or samples.shape[1] != 2):
        raise ValueError(f"samples must have shape (N, 2) (moons points), got {tuple(samples.shape)}")
    _check_tensor(samples, "(N, 2)")
