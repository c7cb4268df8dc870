"""Training-free guidance of Free-Echo's reverse steps towards the pseudo video (beside the paper's method).

From the paper's start t_i = 15 (sigma 19) the pseudo video survives only as its lowest frequencies, so the
model's own motion and shapes take over. Two known remedies keep more of it, neither needs training:

- ILVR (Choi et al., ICCV 2021): after every reverse step that lands at a noise level at or above
  sigma(`until`), the low spatial band of the state x_t is replaced with that of the pseudo video y noised to the
  same level, x_t <- x_t - P(x_t) + P(y + sigma_t n), n fresh N(0, I) noise (ILVR's y_t ~ q(y_t | y)). P is the
  per-frame low-pass "average over `factor` x `factor` blocks and back up", at the full temporal resolution, so
  the pseudo video's motion is imposed frame by frame. With a mask weight m the update is x_t + m (P(y_t) - P(x_t)).
- Noise calibration (NC-SDEdit: Yang et al., ECCV 2024): before the first step, the start
  x = y + sigma n is refined so that the first denoised estimate keeps the pseudo video's low band:
  x <- x + P(y - D(x, sigma)), `calibration` times (one network evaluation each). In their variance-preserving
  notation the noise is corrected by sqrt(abar) / sqrt(1 - abar) (F(y) - F(x0_hat)); with alpha = 1 and
  sigma = sqrt(1 - abar) / sqrt(abar) (EDM) that is the update above.

P is an orthogonal projection (block average, then nearest-neighbour upsampling: P P = P), so after an unmasked
ILVR step P(x_t) equals P(y_t) exactly; the tests check this and the calibration's contraction against the exact
denoiser of Gaussian data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation

from freeecho_core.data.case import FIVE_LA, FIVE_LV
from freeecho_core.edm import Generators, karras_sigmas, randn_per_sample
from freeecho_core.options import SCHEDULE_STEPS, at_least, option

GUIDES = ("ilvr", "nc", "ilvr-nc")  # the names of `Guide`s in options, method kinds and records


def guide_named(name: str) -> tuple[bool, bool]:
    """(ILVR on, noise calibration on) of a guide name."""
    if name not in GUIDES:
        raise ValueError(f"guide must be one of {GUIDES}, got {name!r}")
    return name in ("ilvr", "ilvr-nc"), name in ("nc", "ilvr-nc")


@dataclass(frozen=True)
class Guide:
    """ILVR and/or noise calibration (module docstring) and their settings."""

    ilvr: bool = True
    calibration: int = field(default=2, metadata=option(
        "noise calibration (NC-SDEdit): refinements of the start noise, one network evaluation each (with "
        "--guide nc or ilvr-nc)", at_least(1), flag="--guide-calibration", metavar="N"))
    factor: int = field(default=4, metadata=option(
        "the low band: each frame averaged over N x N pixel blocks (must divide the model's frame size)",
        at_least(1), flag="--guide-factor", metavar="N"))
    until: int = field(default=40, metadata=option(
        "ILVR guides every step that ends at a noise level at or above sigma(STEP) of the 64-step schedule "
        "(after t_i; 64: to the end)", at_least(1), flag="--guide-until", metavar="STEP"))
    mask: int = field(default=0, metadata=option(
        "0: guide the whole frame; PX > 0: only the LV and LA of each frame's map dilated by PX pixels",
        at_least(0), flag="--guide-mask", metavar="PX"))

    def __post_init__(self):
        if self.factor < 1 or self.mask < 0 or self.calibration < 0:
            raise ValueError(f"guide factor must be >= 1, mask >= 0 and calibration >= 0, got {self}")
        if not 1 <= self.until <= SCHEDULE_STEPS:
            raise ValueError(f"guide until must be a step in 1..{SCHEDULE_STEPS}, got {self.until}")

    @classmethod
    def named(cls, name: str, **settings) -> Guide:
        """The guide of an option value ("ilvr", "nc", "ilvr-nc"); calibration 0 unless NC is on."""
        ilvr, nc = guide_named(name)
        calibration = settings.pop("calibration", cls.calibration)
        return cls(ilvr=ilvr, calibration=calibration if nc else 0, **settings)

    @property
    def name(self) -> str:
        return "ilvr-nc" if self.ilvr and self.calibration else "ilvr" if self.ilvr else "nc"

    def check(self, start_step: int, size: int) -> None:
        """One ValueError when these settings cannot guide a video of `size` pixels from `start_step`."""
        if not self.ilvr and not self.calibration:
            raise ValueError("a guide needs ILVR or noise calibration (calibration >= 1)")
        if size % self.factor:
            raise ValueError(f"guide factor {self.factor} must divide the frame size {size}")
        if self.ilvr and self.until <= start_step:
            raise ValueError(f"guide until {self.until} must come after the start step t_i = {start_step}")

    def extra_evaluations(self) -> int:
        """Network evaluations beyond the solver's: one per calibration (ILVR needs none)."""
        return self.calibration


def low_band(x: torch.Tensor, factor: int) -> torch.Tensor:
    """P(x): each frame of x (..., K, H, W) averaged over `factor` x `factor` blocks and upsampled back by repeating
    every block mean (an orthogonal projection, P P = P)."""
    if factor == 1:
        return x
    shape = x.shape
    frames = x.reshape(-1, 1, *shape[-2:])
    means = F.avg_pool2d(frames, factor)
    return means.repeat_interleave(factor, -2).repeat_interleave(factor, -1).reshape(shape)


def guide_mask(label_maps: np.ndarray, dilation: int) -> torch.Tensor:
    """(K, S, S) 5-label maps -> (K, S, S) float64 weights: 1 on each frame's LV and LA dilated by `dilation`
    pixels, 0 elsewhere."""
    maps = np.asarray(label_maps)
    heart = (maps == FIVE_LV) | (maps == FIVE_LA)
    disk = np.hypot(*np.mgrid[-dilation : dilation + 1, -dilation : dilation + 1]) <= dilation
    return torch.from_numpy(np.stack([binary_dilation(frame, disk) for frame in heart]).astype(np.float64))


class Guidance:
    """A guide bound to one batch: the pseudo videos `init` (B, C, K, H, W), the mask weight (None or
    broadcastable to init) and the generators of the fresh ILVR noise."""

    def __init__(self, guide: Guide, init: torch.Tensor, *, weight: torch.Tensor | None = None,
                 generator: Generators = None):
        self.guide, self.generator = guide, generator
        self.init = init.to(torch.float64)
        self.weight = None if weight is None else weight.to(self.init)
        self.low_init = low_band(self.init, guide.factor)
        # ILVR's last guided noise level: sigma(until) of the 64-step schedule (0 at until = 64, the end).
        self.sigma_until = float(karras_sigmas()[guide.until]) if guide.ilvr else float("inf")

    def _add(self, x: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        return x + (change if self.weight is None else self.weight * change)

    def calibrate(self, denoiser, x: torch.Tensor, sigma) -> torch.Tensor:
        """NC-SDEdit: `calibration` refinements x <- x + P(y - D(x, sigma)) of the start state x at `sigma`."""
        for _ in range(self.guide.calibration):
            x = self._add(x, self.low_init - low_band(denoiser(x, sigma).to(x.dtype), self.guide.factor))
        return x

    def after_step(self, x: torch.Tensor, sigma_next) -> torch.Tensor:
        """ILVR after a step that ended at `sigma_next` (a solver's `after_step`): x unchanged below sigma(until)."""
        sigma_next = float(sigma_next)
        if sigma_next < self.sigma_until * (1 - 1e-9):
            return x
        noisy = self.init + sigma_next * randn_per_sample(x.shape, self.generator, device=x.device)
        return self._add(x, low_band(noisy, self.guide.factor) - low_band(x, self.guide.factor))
