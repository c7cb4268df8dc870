import pytest
import torch
from torch import nn

from freeecho_core.edm import (EDMPrecond, edm_loss, karras_sigmas, loss_weight, precond_coefficients,
                               sample_training_sigma)


class ZeroNet(nn.Module):
    """F = 0, so D(x, sigma) = c_skip x; records the dtype and c_noise it was given."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, c_noise, cond=None):
        self.seen = (x.dtype, c_noise)
        return torch.zeros_like(x)


def test_karras_schedule_endpoints_length_and_order():
    sigmas = karras_sigmas()
    assert sigmas.shape == (65,) and sigmas.dtype == torch.float64
    assert sigmas[0].item() == pytest.approx(80.0)
    assert sigmas[63].item() == pytest.approx(0.002)
    assert sigmas[64].item() == 0.0
    assert torch.all(sigmas[1:] < sigmas[:-1])


def test_karras_schedule_values_at_the_papers_start_steps():
    sigmas = karras_sigmas()
    assert sigmas[15].item() == pytest.approx(18.99, abs=0.01)
    assert sigmas[35].item() == pytest.approx(1.502, abs=0.001)
    assert sigmas[55].item() == pytest.approx(0.0270, abs=0.0001)


def test_karras_schedule_matches_edm_formula_elementwise():
    n, lo, hi, rho = 10, 0.01, 50.0, 7.0
    expected = [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)]
    assert torch.allclose(karras_sigmas(n, lo, hi, rho)[:-1], torch.tensor(expected, dtype=torch.float64))


def test_karras_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        karras_sigmas(1)
    with pytest.raises(ValueError, match="sigma_min"):
        karras_sigmas(10, sigma_min=5.0, sigma_max=1.0)


def test_preconditioning_limits_and_identities():
    sigma = torch.tensor([1e-8, 0.5, 3.0, 1e6], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = precond_coefficients(sigma, 0.5)
    assert c_skip[0].item() == pytest.approx(1.0) and c_out[0].item() == pytest.approx(0.0, abs=1e-7)
    assert c_skip[-1].item() == pytest.approx(0.0, abs=1e-12) and c_out[-1].item() == pytest.approx(0.5)
    assert torch.allclose(c_in * (sigma**2 + 0.25).sqrt(), torch.ones_like(sigma))
    assert torch.allclose(c_noise, sigma.log() / 4)
    # Paper eq. (1): the weight cancels the scale of F, lambda = 1 / c_out^2.
    assert torch.allclose(loss_weight(sigma, 0.5), 1 / c_out**2)


def test_precond_with_zero_net_is_c_skip_times_x_and_casts_for_the_net():
    net = ZeroNet()
    D = EDMPrecond(net)
    x = torch.randn(2, 1, 3, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.1, 7.0], dtype=torch.float64)
    out = D(x, sigma)
    c_skip = 0.25 / (sigma**2 + 0.25)
    assert out.dtype == torch.float64
    assert torch.allclose(out, c_skip.reshape(2, 1, 1, 1, 1) * x)
    assert net.seen[0] == torch.float32
    assert torch.allclose(net.seen[1].double(), sigma.log() / 4)


def test_precond_scalar_sigma_broadcasts_and_bad_sigma_is_refused():
    D = EDMPrecond(ZeroNet())
    x = torch.randn(3, 1, 2, 4, 4)
    assert torch.equal(D(x, 2.0), D(x, torch.full((3,), 2.0)))
    with pytest.raises(ValueError, match="2 values for a batch of 3"):
        D(x, torch.ones(2))


def test_training_sigma_is_lognormal_with_the_papers_parameters():
    g = torch.Generator().manual_seed(0)
    log_sigma = sample_training_sigma(200_000, generator=g).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.01)


def test_a_uniform_share_of_training_sigmas_covers_the_sampling_range():
    # Share 0 keeps the log-normal draws exactly; share 0.5 mixes in ln(sigma) ~ U[ln 0.002, ln 80].
    gens = lambda: [torch.Generator().manual_seed(k) for k in range(20_000)]  # noqa: E731
    lognormal = sample_training_sigma(20_000, generator=gens())
    assert torch.equal(sample_training_sigma(20_000, uniform_share=0.0, generator=gens()), lognormal)
    mixed = sample_training_sigma(20_000, uniform_share=0.5, generator=gens())
    assert 0.002 <= mixed.min().item() and mixed.max().item() <= 80.0
    unchanged = mixed == lognormal
    assert unchanged.float().mean().item() == pytest.approx(0.5, abs=0.02)  # the other half is redrawn
    uniform = mixed[~unchanged].log()
    low, high = torch.log(torch.tensor([0.002, 80.0]))
    assert ((uniform - low) / (high - low)).mean().item() == pytest.approx(0.5, abs=0.01)
    # Above sigma(15) = 19 of the 64-step schedule: EDM's log-normal 0.1 %, the mixture about 7.5 %.
    assert (lognormal > 19).float().mean().item() < 0.002
    above = 0.5 * (high - torch.log(torch.tensor(19.0))) / (high - low)
    assert (mixed > 19).float().mean().item() == pytest.approx(above.item(), abs=0.01)


def test_edm_loss_of_zero_net_on_unit_scaled_data_is_one():
    # With F = 0 and zero-mean data of std sigma_data, E[lambda (c_skip (y + sigma n) - y)^2] = 1 at every sigma.
    g = torch.Generator().manual_seed(1)
    y = 0.5 * torch.randn(512, 1, 2, 8, 8, generator=g, dtype=torch.float64)
    loss = edm_loss(EDMPrecond(ZeroNet()), y, generator=g)
    assert loss.shape == y.shape
    assert loss.mean().item() == pytest.approx(1.0, abs=0.02)


def test_edm_loss_is_zero_for_the_perfect_denoiser_of_a_point_mass():
    # Data concentrated at c: the exact denoiser returns c for any input, so the loss vanishes.
    c = 0.37

    class PointMassNet(nn.Module):
        def forward(self, x, c_noise, cond=None):  # F = (c - c_skip x_in / c_in) / c_out
            sigma = (4 * c_noise).exp().double().reshape(-1, 1, 1, 1, 1)
            c_skip, c_out, c_in, _ = precond_coefficients(sigma)
            return (c - c_skip * x / c_in) / c_out

    y = torch.full((4, 1, 2, 3, 3), c, dtype=torch.float64)
    loss = edm_loss(EDMPrecond(PointMassNet()), y, generator=torch.Generator().manual_seed(2))
    assert loss.max().item() < 1e-8
