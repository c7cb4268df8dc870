"""Shared fixtures: the exact denoiser of Gaussian data, used to pin the samplers to closed forms, and a tiny
phantom dataset with both models trained on it for two steps (the end-to-end tests of evaluation and generation)."""
import pytest

from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.edm import gaussian_denoiser
from freeecho_core.train import TrainConfig, train


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


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(CAMUS-format phantom of 3 patients, unconditional ema.pt, Cls-Free ema.pt): tiny nets, 4 x 16 x 16 clips."""
    root = tmp_path_factory.mktemp("trained")
    data = make_phantom_dataset(root / "camus", "camus", 3, 0, PhantomConfig(height=32, frames=6), workers=2,
                                progress=False)
    config = TrainConfig(preset="tiny", frames=4, size=16, batch_size=2, steps=2, checkpoint_every=2)
    for kind in ("unconditional", "clsfree"):
        train(TrainConfig(**{**config.__dict__, "kind": kind}), data, root / kind, progress=False)
    return data, root / "unconditional" / "ema.pt", root / "clsfree" / "ema.pt"
