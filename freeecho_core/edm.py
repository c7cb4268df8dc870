"""EDM parameterisation of the video denoiser (paper section 2, "Denoiser Formulation", eqs. (1) and (4)).

Karras et al. 2022 ("Elucidating the design space of diffusion-based generative models", EDM) Table 1:
the noise schedule, the preconditioning of the network F and the loss weighting. Tensors are videos
(B, C, T, H, W); the noise level sigma is one value per sample.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

SIGMA_DATA = 0.5  # std of the training clips in [-1, 1] (paper: sigma_data = 0.5)
P_MEAN = -1.2  # log-normal training noise: ln(sigma) ~ N(P_mean, P_std^2) (paper section 2)
P_STD = 1.2
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # the range of the sampling schedule (EDM eq. (5))

Generators = torch.Generator | Sequence[torch.Generator] | None  # one generator, one per sample, or none


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions to `x` until it has `ndim` dimensions (for broadcasting)."""
    if x.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of {x.ndim} dimensions to {ndim}")
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def randn_per_sample(shape, generator: Generators = None, *, dtype=torch.float64, device=None):
    """N(0, I) noise of `shape`; with a list of generators, sample b is drawn from generator[b] alone."""
    return draw_per_sample(torch.randn, shape, generator, dtype, device)


def rand_per_sample(shape, generator: Generators = None, *, dtype=torch.float64, device=None):
    """U[0, 1) numbers of `shape`; with a list of generators, sample b is drawn from generator[b] alone."""
    return draw_per_sample(torch.rand, shape, generator, dtype, device)


def draw_per_sample(draw, shape, generator: Generators, dtype, device):
    """`draw` (torch.randn or torch.rand) of `shape`, from one generator or from generator[b] for sample b."""
    if generator is None or isinstance(generator, torch.Generator):
        return draw(shape, generator=generator, dtype=dtype, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]} samples")
    return torch.stack([draw(shape[1:], generator=g, dtype=dtype, device=device) for g in generator])


def karras_sigmas(
    n: int = 64, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = 7.0
) -> torch.Tensor:
    """The EDM time-step discretisation (EDM eq. (5)), followed by a final 0.

    Returns a float64 tensor of n + 1 decreasing noise levels: sigmas[0] = sigma_max,
    sigmas[n - 1] = sigma_min, sigmas[n] = 0. Index i of this tensor is the paper's diffusion step t_i:
    a larger index means less noise (sigmas[15] = 18.99, sigmas[35] = 1.502, sigmas[55] = 0.02696).
    """
    if n < 2:
        raise ValueError(f"a schedule needs at least 2 steps, got n={n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(n, dtype=torch.float64)
    inv_rho_max, inv_rho_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (inv_rho_max + i / (n - 1) * (inv_rho_min - inv_rho_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def precond_coefficients(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA):
    """c_skip, c_out, c_in, c_noise of paper eq. (4) / EDM Table 1, elementwise in sigma."""
    sigma_star_sq = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / sigma_star_sq
    c_out = sigma * sigma_data / sigma_star_sq.sqrt()
    c_in = 1 / sigma_star_sq.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 = 1 / c_out^2 (paper eq. (1))."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class EDMPrecond(nn.Module):
    """The denoiser D(x, sigma, cond) = c_skip x + c_out F(c_in x, c_noise, cond) of paper eq. (4).

    `net(x, c_noise, cond=None)` is any network mapping a (B, C, T, H, W) tensor and a (B,) noise
    embedding to a tensor of the same shape as x. The coefficients are computed in the dtype of `x`
    (float64 inside the samplers); the network runs in the dtype of its own parameters.
    """

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma.reshape(-1)
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"sigma has {sigma.shape[0]} values for a batch of {x.shape[0]}")
        c_skip, c_out, c_in, c_noise = precond_coefficients(sigma, self.sigma_data)
        net_dtype = next(self.net.parameters(), x).dtype
        F_x = self.net((append_dims(c_in, x.ndim) * x).to(net_dtype), c_noise.to(net_dtype), cond)
        return append_dims(c_skip, x.ndim) * x + append_dims(c_out, x.ndim) * F_x.to(x.dtype)


def sample_training_sigma(
    batch: int, *, P_mean: float = P_MEAN, P_std: float = P_STD, uniform_share: float = 0.0,
    sigma_range: tuple[float, float] = (SIGMA_MIN, SIGMA_MAX), generator: Generators = None, device=None
) -> torch.Tensor:
    """ln(sigma) ~ N(P_mean, P_std^2), one sigma per sample (paper section 2).

    uniform_share > 0: that share of the samples (chosen at random) has ln(sigma) uniform over `sigma_range`
    instead, the sampling schedule's whole range. EDM's log-normal puts 0.2 % of the samples above sigma = 10;
    a short run then hardly trains the noise levels where Free-Echo starts (sigma(15) = 19). With 0 the draws
    are exactly the log-normal ones.
    """
    log_sigma = randn_per_sample((batch,), generator, dtype=torch.float32, device=device) * P_std + P_mean
    if uniform_share > 0:
        pick, position = rand_per_sample((batch, 2), generator, dtype=torch.float32, device=device).unbind(1)
        low, high = math.log(sigma_range[0]), math.log(sigma_range[1])
        log_sigma = torch.where(pick < uniform_share, low + position * (high - low), log_sigma)
    return log_sigma.exp()


def edm_loss(
    denoiser,
    x0: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    P_mean: float = P_MEAN,
    P_std: float = P_STD,
    uniform_share: float = 0.0,
    sigma_data: float = SIGMA_DATA,
    generator: Generators = None,
) -> torch.Tensor:
    """Per-element loss lambda(sigma) * (D(x0 + sigma n, sigma) - x0)^2 of paper eq. (1), unreduced.

    `denoiser(x, sigma, cond)` is an `EDMPrecond` (possibly wrapped, e.g. in DistributedDataParallel) whose
    sigma_data is `sigma_data`. sigma is drawn log-normally per sample, then n ~ N(0, I), both from `generator` (with one generator
    per sample, a sample's noise does not depend on the batch it is in). The result has the shape of `x0`;
    reduce it as the training loop needs (mean over elements, sum over a batch, ...).
    """
    sigma = sample_training_sigma(
        x0.shape[0], P_mean=P_mean, P_std=P_std, uniform_share=uniform_share, generator=generator, device=x0.device
    ).to(x0.dtype)
    n = randn_per_sample(x0.shape, generator, dtype=x0.dtype, device=x0.device)
    sigma_b = append_dims(sigma, x0.ndim)
    D_x = denoiser(x0 + sigma_b * n, sigma, cond)
    return loss_weight(sigma_b, sigma_data) * (D_x - x0) ** 2


def gaussian_denoiser(mu: float, s: float):
    """The exact denoiser of data ~ N(mu, s^2) per element: D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2).

    E[x0 | x0 + sigma n = x] in closed form; a known answer to check samplers against, and a toy model
    for teaching (its probability-flow ODE maps x at sigma to mu + (x - mu) s / sqrt(s^2 + sigma^2)).
    """

    def D(x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sigma = append_dims(sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma, x.ndim)
        return (s**2 * x + sigma**2 * mu) / (s**2 + sigma**2)

    return D
