"""Shared by the unit tests: figures closed after every test (the headless backend is set by the
top-level conftest.py), and a fake progressive sampler run made of the package's SamplerStep records."""
import matplotlib.pyplot as plt
import pytest
import torch

from ddpm_helpers.samplers import SamplerStep


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def fake_run():
    """make(T, shape) -> a run from t = T-1 down to 0 whose x_t is the constant t / T, whose
    predicted x0 is -t / T and whose x_prev is (t - 1) / T: every picture of it is predictable."""
    def make(T=10, shape=(3, 1, 6, 6)):
        for t in reversed(range(T)):
            yield SamplerStep(t, torch.full(shape, t / T), torch.full(shape, -t / T),
                              torch.full(shape, (t - 1) / T))
    return make
