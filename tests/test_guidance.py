"""ILVR and noise calibration (freeecho_core.guidance) against known answers: the low band is a projection, an
unmasked ILVR run to the end keeps exactly the pseudo video's low band, the calibration contracts as the exact
denoiser of Gaussian data says, and the network evaluations are counted."""
import numpy as np
import pytest
import torch

from freeecho_core.edm import karras_sigmas
from freeecho_core.guidance import Guidance, Guide, guide_mask, low_band
from freeecho_core.sampler import SOLVERS, sdedit_sample

SIGMAS = karras_sigmas()
CHURN = dict(S_churn=80.0, S_tmin=0.05, S_tmax=50.0, S_noise=1.003)


def beating_init(batch=2, frames=8, size=16):
    """A pseudo video whose frames differ (a bright disk that shrinks), as a beating one does."""
    yy, xx = np.mgrid[:size, :size]
    video = np.stack([np.where(np.hypot(yy - size / 2, xx - size / 2) < size / 3 - k / 2, 0.8, -0.6)
                      for k in range(frames)])
    return torch.from_numpy(video)[None, None].expand(batch, -1, -1, -1, -1).clone()


def test_the_low_band_is_an_orthogonal_projection_on_block_means():
    x, y = torch.randn(2, 1, 3, 8, 8, dtype=torch.float64), torch.randn(2, 1, 3, 8, 8, dtype=torch.float64)
    p = low_band(x, 4)
    assert torch.allclose(low_band(p, 4), p)
    assert torch.allclose((low_band(x, 4) * y).sum(), (x * low_band(y, 4)).sum())  # self-adjoint
    assert p[0, 0, 1, 5, 6].item() == pytest.approx(x[0, 0, 1, 4:8, 4:8].mean().item())
    assert torch.equal(low_band(x, 1), x)


@pytest.mark.parametrize("solver, churn", [("heun", {}), ("heun", CHURN), ("euler", {}), ("dpmpp2m", {})])
@pytest.mark.parametrize("steps", [None, 13])
def test_ilvr_to_the_end_keeps_the_pseudo_videos_low_band_frame_by_frame(gaussian, solver, churn, steps):
    init = beating_init()
    guide = Guide(factor=4, until=64, calibration=0)
    out = sdedit_sample(gaussian, init, SIGMAS, 15, generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
                        solver=solver, steps=steps, guide=guide, **churn)
    assert torch.allclose(low_band(out, 4), low_band(init, 4), atol=1e-9)
    plain = sdedit_sample(gaussian, init, SIGMAS, 15, generator=torch.Generator().manual_seed(1), solver=solver,
                          steps=steps, **churn)
    assert not torch.allclose(low_band(plain, 4), low_band(init, 4), atol=0.05)  # without it the band is lost
    assert (out[0, 0, 0] - out[0, 0, -1]).abs().max() > 0.5  # the frames differ as the init's do


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_ilvr_costs_no_network_evaluation_and_calibration_one_each(gaussian, solver):
    init = beating_init(batch=1)
    counts = []
    for guide in (None, Guide(calibration=0), Guide(calibration=3), Guide(ilvr=False, calibration=2)):
        gaussian.calls = 0
        sdedit_sample(gaussian, init, SIGMAS, 15, generator=torch.Generator().manual_seed(0), solver=solver,
                      steps=13, guide=guide)
        counts.append(gaussian.calls)
    plain = counts[0]
    assert counts == [plain, plain, plain + 3, plain + 2]
    assert Guide(calibration=3).extra_evaluations() == 3


def test_ilvr_stops_at_its_step(gaussian):
    """Guided to sigma(until) only: the steps after it are the plain ODE's, so the low band is no longer the
    init's at the end, and a later stop keeps it closer."""
    init = beating_init()
    errors = []
    for until in (20, 40, 64):
        out = sdedit_sample(gaussian, init, SIGMAS, 15, generator=torch.Generator().manual_seed(3), solver="euler",
                            guide=Guide(until=until, calibration=0))
        errors.append((low_band(out, 4) - low_band(init, 4)).abs().mean().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-9


def test_calibration_contracts_the_low_band_error_as_the_exact_denoiser_says(gaussian):
    """For Gaussian data D(x, sigma) = mu + c (x - mu), c = s^2 / (s^2 + sigma^2): each refinement multiplies the
    low-band error P(y - D(x)) by exactly 1 - c."""
    init, sigma = beating_init(), SIGMAS[40]
    c = gaussian.s**2 / (gaussian.s**2 + sigma.item() ** 2)
    x = init + sigma * torch.randn(init.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for k in range(4):
        calibrated = Guidance(Guide(ilvr=False, calibration=k, factor=2), init).calibrate(gaussian, x, sigma)
        errors.append(low_band(init - gaussian.D(calibrated, sigma), 2).norm().item())
    assert np.allclose(np.array(errors[1:]) / np.array(errors[:-1]), 1 - c, rtol=1e-9)


def test_a_masked_guide_leaves_the_pixels_outside_the_mask_alone(gaussian):
    init = beating_init(batch=1)
    maps = np.zeros((8, 16, 16), dtype=np.int64)
    maps[:, 4:9, 4:9] = 2  # an LV
    weight = guide_mask(maps, 1)
    assert weight[0, 4:9, 3:10].all() and weight[0, 3:10, 4:9].all()  # dilated by a disk of radius 1:
    assert weight.sum() == 8 * (7 * 7 - 4)  # the corners of the 7 x 7 square stay out
    run = dict(generator=torch.Generator().manual_seed(5), solver="dpmpp2m", steps=13)
    guided = sdedit_sample(gaussian, init, SIGMAS, 15, guide=Guide(calibration=0), guide_weight=weight, **run)
    run["generator"] = torch.Generator().manual_seed(5)
    plain = sdedit_sample(gaussian, init, SIGMAS, 15, **run)
    outside = weight == 0
    assert torch.allclose(guided[0, 0][outside], plain[0, 0][outside])  # the Gaussian denoiser acts per pixel
    assert not torch.allclose(guided[0, 0][~outside], plain[0, 0][~outside])


@pytest.mark.parametrize("guide, size, start, message", [
    (Guide(factor=3), 16, 15, "factor 3 must divide the frame size 16"),
    (Guide(until=15), 16, 15, "until 15 must come after the start step"),
    (Guide(ilvr=False, calibration=0), 16, 15, "needs ILVR or noise calibration"),
])
def test_settings_that_cannot_guide_are_refused_in_one_line(gaussian, guide, size, start, message):
    with pytest.raises(ValueError, match=message):
        sdedit_sample(gaussian, torch.zeros(1, 1, 2, size, size), SIGMAS, start, guide=guide)


def test_guide_names():
    assert Guide.named("ilvr").name == "ilvr" and Guide.named("ilvr").calibration == 0
    assert Guide.named("nc", calibration=3) == Guide(ilvr=False, calibration=3)
    assert Guide.named("ilvr-nc", factor=8).name == "ilvr-nc"
    with pytest.raises(ValueError, match="guide must be one of"):
        Guide.named("ilvrr")
    with pytest.raises(ValueError, match="until must be a step in 1..64"):
        Guide(until=65)
