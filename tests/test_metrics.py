import numpy as np
import pytest
import scipy.linalg
import torch

from freeecho_core.study.metrics import (MetricUnavailable, frechet_distance, frechet_metric, gaussian_statistics,
                                         load_feature_network, ssim_psnr, ssim_terms)


def test_identical_clips_score_the_maxima_and_scores_are_symmetric():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 32, 32, generator=g), torch.rand(4, 32, 32, generator=g)
    ssim, psnr = ssim_psnr(a[None].expand(3, -1, -1, -1), a)
    assert ssim == pytest.approx(1.0) and psnr == pytest.approx(100.0)  # PSNR capped at 100 dB for identity
    assert ssim_psnr(a[None], b) == pytest.approx(ssim_psnr(b[None], a))
    noisy = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    s, p = ssim_psnr(noisy[None], a)
    assert s < 0.99 and 15 < p < 25  # noise of std 0.1: PSNR near 20 dB
    with pytest.raises(ValueError, match="must match reference"):
        ssim_psnr(a, a)


def test_ssim_terms_multiply_to_torchmetrics_ssim_and_each_reacts_to_its_own_change():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(8, 1, 40, 40, generator=g), 5, 1, 2)[:, 0]
    reference = (0.3 + smooth).clamp(0, 1)  # (8, 40, 40): a textured clip
    noisy = (reference + 0.05 * torch.randn((3, *reference.shape), generator=g)).clamp(0, 1)
    terms = ssim_terms(noisy, reference)
    assert terms["SSIM"] == pytest.approx(ssim_psnr(noisy, reference)[0], abs=1e-9)  # the same SSIM
    same = ssim_terms(reference[None], reference)
    assert [same[name] for name in ("luminance", "contrast", "structure", "SSIM")] == [pytest.approx(1.0)] * 4
    darker = ssim_terms((reference - 0.2)[None].clamp(0, 1), reference)  # a grey-level shift: luminance only
    assert darker["luminance"] < 0.97 and darker["structure"] > 0.99
    flat = ssim_terms(torch.full((1, *reference.shape), 0.6), reference)  # no texture: contrast, not structure
    assert flat["contrast"] < 0.4 and flat["structure"] == pytest.approx(1.0) and flat["spread"] == 0
    independent = ssim_terms(noisy[:, torch.randperm(8, generator=g)], reference)  # texture of other frames
    assert independent["structure"] < 0.5 < independent["contrast"]
    left = torch.zeros(40, 40, dtype=torch.bool)
    left[:, :20] = True
    half_noisy = torch.where(left, reference, noisy)  # exact on the left, noisy on the right
    halves = [ssim_terms(half_noisy, reference, mask)["SSIM"] for mask in (left, ~left)]
    assert halves[0] > 0.9 > 0.8 > halves[1]
    assert sum(halves) / 2 == pytest.approx(ssim_terms(half_noisy, reference)["SSIM"])
    with pytest.raises(ValueError, match="must match reference"):
        ssim_terms(reference, reference)
    with pytest.raises(ValueError, match="non-empty"):
        ssim_terms(noisy, reference, torch.zeros(40, 40, dtype=torch.bool))


def test_frechet_distance_matches_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    S1, S2 = A @ A.T, B @ B.T  # do not commute
    reference = np.trace(S1 + S2 - 2 * scipy.linalg.sqrtm(S1 @ S2).real)
    assert frechet_distance(np.zeros(5), S1, np.zeros(5), S2) == pytest.approx(reference, rel=1e-6)


def test_two_samples_of_one_gaussian_are_close_and_a_shift_is_measured():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4))
    assert frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y)) < 0.01
    shifted = frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y + [2.0, 0, 0, 0]))
    assert shifted == pytest.approx(4.0, abs=0.05)


def test_missing_weights_make_the_metric_unavailable_with_the_reason(tmp_path):
    with pytest.raises(MetricUnavailable, match="FID: no weights file given for inception"):
        load_feature_network("inception", None)
    with pytest.raises(MetricUnavailable, match="FVD: weights file .*i3d.pt does not exist"):
        load_feature_network("i3d", tmp_path / "i3d.pt")
    with pytest.raises(ValueError, match="unknown feature network"):
        load_feature_network("clip", None)


class FakeDetector(torch.nn.Module):
    """Stands in for StyleGAN-V's I3D TorchScript file: same call signature, features = channel means."""

    def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[-1] == 224 and not rescale and not resize and return_features
        return torch.stack([x.mean(dim=(1, 2, 3, 4)), x.std(dim=(1, 2, 3, 4))], dim=1)


def test_an_i3d_torchscript_file_is_loaded_and_fed_clips_in_its_format(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(FakeDetector()).save(str(path))
    net = load_feature_network("i3d", path)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(6, 4, 16, 16, generator=g)
    assert net.features(real).shape == (6, 2)
    same = frechet_metric(net, real, real)
    brighter = frechet_metric(net, (real + 0.3).clamp(0, 1), real)
    assert abs(same) < 1e-9 and brighter > 0.1


def test_texture_in_sector_is_zero_for_a_flat_pseudo_video_and_the_noise_level_of_speckle():
    from freeecho_core.study.metrics import texture_in_sector
    labels = np.zeros((8, 32, 32), dtype=int)
    labels[:, 4:, 4:28] = 1
    labels[:, 10:20, 10:20] = 2
    flat = np.choose(labels, [0.0, 120.0, 20.0, 0.0, 0.0])
    assert texture_in_sector(flat, labels) == 0.0
    speckled = flat + np.random.default_rng(0).normal(0, 7.0, flat.shape)
    assert abs(texture_in_sector(speckled, labels) - 7.0) < 0.2  # outside the sector (label 0) does not count
    assert texture_in_sector(speckled, labels[0]) == texture_in_sector(speckled, labels)
    with pytest.raises(ValueError, match="no sector pixel"):
        texture_in_sector(flat, np.zeros_like(labels))


def test_fan_iou_is_one_for_a_video_lit_on_its_sector_and_falls_with_a_shifted_or_black_cone():
    from freeecho_core.data.maps import fan_sector
    from freeecho_core.study.metrics import fan_iou, video_fans
    lv = np.zeros((64, 64), dtype=bool)
    lv[20:40, 26:38] = True
    sector = fan_sector((64, 64), lv)
    rng = np.random.default_rng(0)
    video = np.where(sector, rng.uniform(0.3, 0.9, (16, 64, 64)), 0.0)
    video[:, lv] = 0.02  # a dark cavity inside the fan: the hull closes it
    videos = torch.from_numpy(np.stack([video, np.roll(video, 16, axis=-1), np.zeros_like(video)]))
    fans = video_fans(videos)
    own, shifted, black = fan_iou(fans, sector)
    assert own > 0.97 and shifted < own - 0.15 and black == 0.0 and fans[2] is None
    with pytest.raises(ValueError, match="must be"):
        video_fans(videos[0])
    with pytest.raises(ValueError, match="must match the sector"):
        fan_iou(fans, sector[:32])
