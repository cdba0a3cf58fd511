"""Tests of classifier-free guidance: the guided eps-model, label dropout, and an analytic oracle.

The oracle: two classes in 1-D, x0 | c ~ N(mu_c, sigma^2) with mu_0 = -m, mu_1 = +m, equally likely.
Then x_t | c ~ N(sqrt(a) mu_c, v) with v = a sigma^2 + 1 - a (a = alpha_bar_t), and the optimal
eps-predictions are known in closed form:
    conditional    eps*(x_t, t, c) = E[eps | x_t, c] = sqrt(1 - a) (x_t - sqrt(a) mu_c) / v
    unconditional  eps*(x_t, t, ∅) = sum_c r_c(x_t) eps*(x_t, t, c),  r_c = p(c | x_t) ∝ N(x_t; sqrt(a) mu_c, v)
"""
import math

import pytest
import torch

from ddpm_helpers.guidance import (
    check_training_labels, classifier_free_guidance, drop_labels, init_from_unconditional, labelled_batches,
)
from ddpm_helpers.models import MLPDenoiser, UNet
from ddpm_helpers.samplers import ancestral_sample, ddim_sample, ddim_sample_progressive
from ddpm_helpers.schedules import NoiseSchedule

torch.set_num_threads(1)
M, SIGMA = 0.5, 0.5


class TwoGaussianOracle:
    """The exact eps(x_t, t, c) of the module docstring; label 2 is the null label."""

    num_classes = 2

    def __init__(self, schedule):
        self.schedule, self.calls = schedule, []

    def __call__(self, x_t, t, labels):
        self.calls.append(x_t.shape[0])
        a = self.schedule.alpha_bars[t].double()[:, None]
        x, mus = x_t.double(), torch.tensor([-M, M], dtype=torch.float64)
        v = a * SIGMA**2 + 1 - a
        eps = (1 - a).sqrt() * (x - a.sqrt() * mus) / v                  # (B, 2): one column per class
        responsibilities = (-(x - a.sqrt() * mus) ** 2 / (2 * v)).softmax(dim=1)
        unconditional = (responsibilities * eps).sum(dim=1, keepdim=True)
        conditional = eps.gather(1, labels.clamp(max=1)[:, None])
        return torch.where(labels[:, None] == 2, unconditional, conditional).float()


@pytest.fixture
def schedule():
    return NoiseSchedule.linear(T=1000)


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = MLPDenoiser(hidden=16, depth=2, time_dim=8, num_classes=10)
    for p in net.parameters():                   # the label table starts at zero: make labels matter
        torch.nn.init.normal_(p, std=0.3)
    return net.eval()


X, T, C = torch.randn(6, 2), torch.tensor([0, 10, 100, 500, 900, 999]), torch.tensor([0, 1, 2, 7, 8, 9])


def test_scale_one_is_the_conditional_model_and_scale_zero_the_unconditional_one(model):
    torch.testing.assert_close(classifier_free_guidance(model, C, 1.0)(X, T), model(X, T, C), rtol=0, atol=0)
    torch.testing.assert_close(classifier_free_guidance(model, C, 0)(X, T), model(X, T, None), rtol=0, atol=0)
    assert not torch.allclose(model(X, T, C), model(X, T, None))


@pytest.mark.parametrize("scale", [0.5, 2.0, 7.5, -1.0])
def test_guided_eps_is_null_plus_scale_times_the_difference(model, scale):
    cond, null = model(X, T, C), model(X, T, torch.full((6,), 10))
    expected = null + scale * (cond - null)
    torch.testing.assert_close(classifier_free_guidance(model, C, scale)(X, T), expected, rtol=1e-5, atol=1e-6)


def test_both_halves_run_in_one_batched_call(schedule):
    oracle = TwoGaussianOracle(schedule)
    guided = classifier_free_guidance(oracle, torch.tensor([0, 1, 1]), 3.0)
    guided(torch.randn(3, 1), torch.tensor([5, 50, 500]))
    assert oracle.calls == [6]
    classifier_free_guidance(oracle, 1, 1.0)(torch.randn(3, 1), torch.tensor([5, 50, 500]))
    assert oracle.calls == [6, 3]                 # scale 1 needs the conditional half only


def test_an_interval_guides_inside_it_and_samples_conditionally_outside(model):
    # T = [0, 10, 100, 500, 900, 999]: with interval (10, 500) the middle three are guided
    guided = classifier_free_guidance(model, C, 3.0, interval=(10, 500))(X, T)
    full, cond = classifier_free_guidance(model, C, 3.0)(X, T), model(X, T, C)
    inside = torch.tensor([False, True, True, True, False, False])
    torch.testing.assert_close(guided[inside], full[inside], rtol=0, atol=0)
    torch.testing.assert_close(guided[~inside], cond[~inside], rtol=0, atol=0)
    torch.testing.assert_close(classifier_free_guidance(model, C, 3.0, interval=(0, 999))(X, T), full, rtol=0, atol=0)


def test_outside_the_interval_one_conditional_call_is_all_it_costs(schedule):
    oracle = TwoGaussianOracle(schedule)
    guided = classifier_free_guidance(oracle, 1, 3.0, interval=(100, 600))
    guided(torch.randn(3, 1), torch.full((3,), 800))
    guided(torch.randn(3, 1), torch.full((3,), 100))
    guided(torch.randn(3, 1), torch.full((3,), 99))
    assert oracle.calls == [3, 6, 3]


def test_an_interval_keeps_guided_sampling_of_the_oracle_nearer_the_class(schedule):
    # guidance off at high noise: the sample still leaves the overlap, but is pushed less far past the mean
    x = {}
    for interval in [None, (0, 300)]:
        guided = classifier_free_guidance(TwoGaussianOracle(schedule), 1, 7.0, interval=interval)
        x[interval] = ddim_sample(guided, (2000, 1), schedule, steps=50, generator=torch.Generator().manual_seed(2),
                                  progress=False)
    assert (x[(0, 300)] < 0).float().mean() < 0.02
    assert M < x[(0, 300)].mean() < x[None].mean()


def test_an_int_label_means_that_class_for_the_whole_batch(model):
    torch.testing.assert_close(classifier_free_guidance(model, 7, 3.0)(X, T),
                               classifier_free_guidance(model, torch.full((6,), 7), 3.0)(X, T))


def test_every_sampler_takes_the_guided_model_unchanged(model, schedule):
    guided = classifier_free_guidance(model, 3, 2.0)
    gen = torch.Generator().manual_seed(0)
    assert ddim_sample(guided, (6, 2), schedule, steps=5, generator=gen, progress=False).shape == (6, 2)
    steps = list(ddim_sample_progressive(guided, (6, 2), schedule, steps=3, generator=gen))
    assert len(steps) == 3 and steps[-1].x_prev.shape == (6, 2)


def test_guided_sampling_of_the_oracle_is_exact_at_scales_zero_and_one(schedule):
    # scale 1 must give the class: N(m, sigma^2); scale 0 the mixture: mean 0, variance sigma^2 + m^2
    n = 2000
    for scale, mean, std in [(1.0, M, SIGMA), (0.0, 0.0, math.sqrt(SIGMA**2 + M**2))]:
        guided = classifier_free_guidance(TwoGaussianOracle(schedule), 1, scale)
        x = ancestral_sample(guided, (n, 1), schedule, generator=torch.Generator().manual_seed(1), progress=False)
        assert abs(x.mean().item() - mean) < 4 * std / math.sqrt(n)
        assert abs(x.std().item() / std - 1) < 4 / math.sqrt(2 * n)


def test_guided_sampling_of_the_oracle_concentrates_as_the_scale_grows(schedule):
    wrong_side, spread, centre = [], [], []
    for scale in [0, 1, 3, 7]:
        guided = classifier_free_guidance(TwoGaussianOracle(schedule), 1, scale)
        x = ddim_sample(guided, (2000, 1), schedule, steps=50, generator=torch.Generator().manual_seed(2),
                        progress=False)
        wrong_side.append((x < 0).float().mean().item())
        spread.append(x.std().item())
        centre.append(x.mean().item())
    assert abs(wrong_side[0] - 0.5) < 0.05                               # the mixture: half on each side
    assert abs(wrong_side[1] - 0.1587) < 0.03                            # N(0.5, 0.5^2): Phi(-1) below 0
    assert wrong_side[2] < 0.01 and wrong_side[3] == 0                   # guidance empties the overlap
    assert spread[1] > spread[2] > spread[3]                             # ... less diverse
    assert centre[1] < centre[2] < centre[3]                             # ... and pushed past the class mean


def test_label_dropout_rate_is_within_binomial_error_and_drawn_per_sample():
    n, p = 20_000, 0.1
    labels = torch.arange(n) % 10
    dropped = drop_labels(labels, p, 10, torch.Generator().manual_seed(0))
    is_null = dropped == 10
    assert abs(is_null.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(dropped[~is_null], labels[~is_null])               # kept labels are untouched
    # per sample, not per batch: batches of 8 have a Binomial(8, p) number of null labels
    counts = is_null.view(-1, 8).sum(dim=1).float()
    assert abs(counts.var().item() / (8 * p * (1 - p)) - 1) < 0.1
    assert 0 < counts.min() < 8 or counts.max() < 8                       # never all-or-nothing
    torch.testing.assert_close(dropped, drop_labels(labels, p, 10, torch.Generator().manual_seed(0)))


def test_the_null_label_is_never_one_of_the_classes():
    dropped = drop_labels(torch.arange(10).repeat(100), 0.5, 10, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == set(range(11))
    assert UNet(channels=(8, 8, 8), groups=4, num_classes=10).label_embedding.table.num_embeddings == 11
    with pytest.raises(ValueError, match=r"0\.\.9"):                    # asking for the null label to guide
        classifier_free_guidance(MLPDenoiser(num_classes=10), torch.tensor([10]), 3.0)


def test_labelled_batches_keep_images_and_labels_together():
    data = torch.arange(12.0)[:, None].repeat(1, 2)                      # row i holds the value i
    labels = torch.arange(12) % 3
    model = MLPDenoiser(hidden=4, depth=1, time_dim=4, num_classes=3)
    seen = []
    model.forward = lambda x_t, t, y: seen.append(y) or x_t              # records the labels it gets
    batches = labelled_batches(model, data, labels, 4, 0.0, torch.Generator().manual_seed(0))
    for _ in range(3):
        x0, eps_model = next(batches)
        eps_model(x0, torch.zeros(4, dtype=torch.long))
        assert torch.equal(seen[-1], x0[:, 0].long() % 3)


def test_init_from_unconditional_copies_every_weight_and_leaves_the_label_table_at_zero(model):
    plain = MLPDenoiser(hidden=16, depth=2, time_dim=8)
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.3)
    assert init_from_unconditional(model, plain) == ["label_embedding.table.weight"]
    for c in [C, None]:
        torch.testing.assert_close(model(X, T, c), plain(X, T), rtol=0, atol=0)
    with pytest.raises(ValueError, match="same settings"):
        init_from_unconditional(model, MLPDenoiser(hidden=8, depth=2, time_dim=8))


@pytest.mark.parametrize("call, error, message", [
    (lambda m: classifier_free_guidance(MLPDenoiser(), torch.tensor([1]), 3.0), ValueError, "num_classes"),
    (lambda m: classifier_free_guidance(m, torch.tensor([1]), math.nan), ValueError, "finite number"),
    (lambda m: classifier_free_guidance(m, torch.tensor([[1]]), 3.0), ValueError, r"shape \(B,\)"),
    (lambda m: classifier_free_guidance(m, 12, 3.0), ValueError, r"0\.\.9"),
    (lambda m: classifier_free_guidance(m, torch.tensor([1, 2]), 3.0)(X, T), ValueError, r"shape \(6,\)"),
    (lambda m: classifier_free_guidance(m, 1, 3.0, interval=(600, 100)), ValueError, "t_lo <= t_hi"),
    (lambda m: classifier_free_guidance(m, 1, 3.0, interval=(0.1, 0.6)), ValueError, "integer timesteps"),
    (lambda m: classifier_free_guidance(m, 1, 3.0, interval=100), ValueError, r"\(t_lo, t_hi\)"),
    (lambda m: drop_labels(torch.tensor([1, 2]), 1.5, 10), ValueError, "probability"),
    (lambda m: check_training_labels(m, X, torch.arange(5), 0.1), ValueError, r"shape \(6,\)"),
    (lambda m: check_training_labels(MLPDenoiser(), X, torch.arange(6), 0.1), ValueError, "num_classes"),
])
def test_bad_input_raises_a_clear_error(model, call, error, message):
    with pytest.raises(error, match=message):
        call(model)
