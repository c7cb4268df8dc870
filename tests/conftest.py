"""Shared fixtures: the exact denoiser of Gaussian data, used to pin the samplers to closed forms."""
import pytest

from freeecho_core.edm import gaussian_denoiser


class CountingGaussianDenoiser:
    """`edm.gaussian_denoiser` that counts its calls (the number of network evaluations of a sampler)."""

    def __init__(self, mu: float, s: float):
        self.mu, self.s, self.calls = mu, s, 0
        self.D = gaussian_denoiser(mu, s)

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        return self.D(x, sigma)


@pytest.fixture
def gaussian():
    return CountingGaussianDenoiser(mu=0.3, s=0.4)
