"""Metrics of the paper's Table 1 (section 3, "Evaluation"): SSIM, PSNR, FID and FVD.

Protocol: for each test ED map, n generated clips are compared with the real clip of the same map; SSIM and
PSNR are computed per frame on grey levels in [0, 1] (data_range = 1), averaged over the frames, then over
the n samples. FID (InceptionV3 features of frames) and FVD (I3D features of clips, the StyleGAN-V TorchScript
detector; or R(2+1)-D, the paper's choice) compare the feature statistics of all generated clips with those of
all real test clips through one `frechet_distance`.

Honesty rule (book/design.md section 5): pretrained feature networks are loaded from a local weights path the user
gives; without it a metric is reported as unavailable with the reason, never replaced by anything else.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from freeecho_core.data.case import FIVE_LABELS
from freeecho_core.data.clips import sector_from_frames
from freeecho_core.validate import first_reason


def to_unit(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model range -> [0, 1] grey levels, clipped."""
    return ((video + 1) / 2).clamp(0, 1)


def ssim_psnr(generated: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Mean per-frame SSIM and PSNR (dB) of n generated clips against the real clip of the same map.

    generated: (n, K, H, W), reference: (K, H, W), both grey levels in [0, 1] (data_range = 1). Each frame of
    each sample is compared with the same frame of the reference; the values are averaged over frames and
    samples (the paper's protocol).
    """
    if generated.ndim != 4 or generated.shape[1:] != reference.shape:
        raise ValueError(f"generated (n, K, H, W) {tuple(generated.shape)} must match reference {tuple(reference.shape)}")
    n, K, H, W = generated.shape
    preds = generated.reshape(n * K, 1, H, W).double()
    target = reference.expand(n, K, H, W).reshape(n * K, 1, H, W).double()
    ssim = structural_similarity_index_measure(preds, target, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return float(ssim.mean()), float(psnr.clamp(max=100.0).mean())


SSIM_TERMS = ("luminance", "contrast", "structure")


def ssim_maps(generated: torch.Tensor, reference: torch.Tensor) -> dict:
    """SSIM's three factors per pixel (Wang et al. 2004, eq. 6 with C3 = C2 / 2), with the same 11 x 11 Gaussian
    window (sigma 1.5), reflect padding and constants (C1 = 0.01^2, C2 = 0.03^2, data_range 1) as torchmetrics:

        luminance l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)   local mean grey levels agree
        contrast  c = (2 s_x s_y + C2) / (s_x^2 + s_y^2 + C2)        local spreads (texture energy) agree
        structure s = (s_xy + C2/2) / (s_x s_y + C2/2)               local patterns correlate

    and "SSIM" (the product l c s, whose mean is `ssim_psnr`'s SSIM) and "spread" (the local s_x of the generated
    frames). Shapes as `ssim_psnr`; each map is (n K, H, W), float64."""
    if generated.ndim != 4 or generated.shape[1:] != reference.shape:
        raise ValueError(f"generated (n, K, H, W) {tuple(generated.shape)} must match reference {tuple(reference.shape)}")
    n, K, H, W = generated.shape
    x = generated.reshape(n * K, 1, H, W).double()
    y = reference.expand(n, K, H, W).reshape(n * K, 1, H, W).double()
    taps = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-taps ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :])[None, None]

    def local(image):  # the Gaussian-weighted local mean
        return F.conv2d(F.pad(image, (5, 5, 5, 5), mode="reflect"), window)[:, 0]

    mu_x, mu_y = local(x), local(y)
    var_x = (local(x * x) - mu_x ** 2).clamp(min=0)
    var_y = (local(y * y) - mu_y ** 2).clamp(min=0)
    cov = local(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s_x, s_y = var_x.sqrt(), var_y.sqrt()
    luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    contrast = (2 * s_x * s_y + c2) / (var_x + var_y + c2)
    structure = (cov + c2 / 2) / (s_x * s_y + c2 / 2)
    return {"luminance": luminance, "contrast": contrast, "structure": structure,
            "SSIM": luminance * contrast * structure, "spread": s_x}


def region_means(maps: dict, mask: torch.Tensor | None = None) -> dict:
    """The means of `ssim_maps` over the pixels of an (H, W) bool region (None: the whole frame), over all
    frames and samples; the windows still see the pixels around the region."""
    H, W = next(iter(maps.values())).shape[1:]
    if mask is not None and (mask.shape != (H, W) or mask.dtype != torch.bool or not mask.any()):
        raise ValueError(f"mask must be a non-empty ({H}, {W}) bool region, got {mask.dtype} {tuple(mask.shape)}")
    region = torch.ones(H, W, dtype=torch.bool) if mask is None else mask
    return {name: float(value[:, region].mean()) for name, value in maps.items()}


SECTOR_LABELS = [label for label in FIVE_LABELS if label]  # every label but "outside sector"


def texture_in_sector(video, label_maps) -> float:
    """The speckle a video keeps: the grey-level standard deviation about each labelled region's own mean inside
    the sector (labels 1-4 of the 5-label convention), pooled over the regions of every frame. A pseudo video,
    flat per label, scores 0. video (K, H, W); label_maps (K, H, W), or one (H, W) map for every frame."""
    video = np.asarray(video, dtype=np.float64)
    maps = np.broadcast_to(np.asarray(label_maps), video.shape)
    squares, count = 0.0, 0
    for frame, labels in zip(video, maps):
        for label in SECTOR_LABELS:
            values = frame[labels == label]
            squares += float(((values - values.mean()) ** 2).sum()) if values.size else 0.0
            count += values.size
    if not count:
        raise ValueError("the label maps hold no sector pixel (labels 1-4)")
    return float(np.sqrt(squares / count))


def video_fans(videos: torch.Tensor) -> list[np.ndarray | None]:
    """The cone each video of videos (n, K, H, W) in [0, 1] draws, found as a recording's fan is
    (`clips.sector_from_frames`: lit in some frame, largest component, convex hull): (H, W) bool, None for a
    video without any lit pixel."""
    if videos.ndim != 4:
        raise ValueError(f"videos must be (n, K, H, W), got {tuple(videos.shape)}")
    fans = []
    for video in (videos.clamp(0, 1) * 255).round().to(torch.uint8).numpy():
        try:
            fans.append(sector_from_frames(video))
        except ValueError:  # a black video draws no fan
            fans.append(None)
    return fans


def fan_iou(fans: list[np.ndarray | None], sector: np.ndarray) -> list[float]:
    """The cone a video draws against a map's scan sector (the paper's claim that a map holding only the LV
    leaves Cls-Free's cone inconsistent): per fan of `video_fans`, the intersection over union with the (H, W)
    bool `sector`; a video that draws no fan scores 0."""
    sector = np.asarray(sector, dtype=bool)
    if any(fan is not None and fan.shape != sector.shape for fan in fans):
        raise ValueError(f"the fans must match the sector {sector.shape}")
    return [0.0 if fan is None else float((fan & sector).sum() / (fan | sector).sum()) for fan in fans]


def ssim_terms(generated: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
    """SSIM split into its three factors (`ssim_maps`), each averaged like `ssim_psnr` (over pixels, frames and
    samples): SSIM is the mean of the per-pixel product l c s, so the mean factors show which one a method loses
    on. Also returns "SSIM" (the whole frame's: `ssim_psnr`'s SSIM) and "spread" (the mean local s_x of the
    generated frames). mask: an (H, W) bool region (say, the scan sector) to average over instead of the whole
    frame (`region_means`). Shapes as `ssim_psnr`."""
    return region_means(ssim_maps(generated, reference), mask)


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of (N, d) features, float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, d) features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, S1, mu2, S2) -> float:
    """Frechet distance of N(mu1, S1) and N(mu2, S2): |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).

    The matrix square root is taken of the symmetric positive semi-definite S1^1/2 S2 S1^1/2 through its
    eigenvalues (negative round-off clipped to 0), in float64: stable where sqrtm of S1 S2 is not.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    S1, S2 = np.atleast_2d(np.asarray(S1, np.float64)), np.atleast_2d(np.asarray(S2, np.float64))
    w, V = np.linalg.eigh((S1 + S1.T) / 2)
    root_S1 = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
    M = root_S1 @ S2 @ root_S1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((M + M.T) / 2), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(S1) + np.trace(S2) - 2 * cross)


class MetricUnavailable(Exception):
    """A metric that cannot be computed here; the message says why."""


@dataclass
class FeatureNetwork:
    """A pretrained feature extractor: `features(videos) -> (N, d)` for videos (N, K, H, W) in [0, 1]."""

    name: str
    net: torch.nn.Module
    kind: str  # "frames" (one feature per frame: FID) or "clips" (one per clip: FVD)

    @torch.no_grad()
    def features(self, videos: torch.Tensor, batch: int = 8) -> np.ndarray:
        device = next(self.net.parameters(), torch.empty(0)).device
        return np.concatenate([self._features(videos[i : i + batch].to(device)).cpu().double().numpy()
                               for i in range(0, len(videos), batch)])

    def _features(self, videos: torch.Tensor) -> torch.Tensor:
        N, K, H, W = videos.shape
        if self.name == "inception":  # uint8-range RGB frames at any size; the net resizes to 299
            frames = (videos.reshape(N * K, 1, H, W) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
            return self.net(frames).reshape(N * K, -1)
        if self.name == "i3d":  # StyleGAN-V detector: (N, 3, K, 224, 224) in [-1, 1]
            x = F.interpolate(videos.reshape(N * K, 1, H, W), size=(224, 224), mode="bilinear", align_corners=False)
            x = (2 * x - 1).reshape(N, K, 1, 224, 224).permute(0, 2, 1, 3, 4).expand(-1, 3, -1, -1, -1)
            return self.net(x, rescale=False, resize=False, return_features=True)
        # r2plus1d: Kinetics normalisation at 112 x 112, the pooled 512-d features
        x = F.interpolate(videos.reshape(N * K, 1, H, W), size=(112, 112), mode="bilinear", align_corners=False)
        x = x.reshape(N, K, 1, 112, 112).permute(0, 2, 1, 3, 4).expand(-1, 3, -1, -1, -1)
        mean = torch.tensor([0.43216, 0.394666, 0.37645], device=x.device).reshape(1, 3, 1, 1, 1)
        std = torch.tensor([0.22803, 0.22145, 0.216989], device=x.device).reshape(1, 3, 1, 1, 1)
        return self.net((x - mean) / std)


FEATURE_NETWORKS = {"inception": "FID", "i3d": "FVD", "r2plus1d": "FVD-R(2+1)D"}
WEIGHT_FILES = {"inception": "torch-fidelity InceptionV3 weights file (pt_inception-2015-12-05)",
                "i3d": "TorchScript I3D file (StyleGAN-V's i3d_torchscript.pt)",
                "r2plus1d": "torchvision r2plus1d_18 state dict"}


def load_feature_network(name: str, weights: str | Path | None, device="cpu") -> FeatureNetwork:
    """Load a pretrained feature network from a local file, or raise MetricUnavailable saying why.

    inception: torch-fidelity's InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth) through torchmetrics;
    i3d: StyleGAN-V's i3d_torchscript.pt; r2plus1d: torchvision's r2plus1d_18 Kinetics-400 state dict.
    inception and r2plus1d need the optional extra `pip install -e .[fid]`.
    """
    if name not in FEATURE_NETWORKS:
        raise ValueError(f"unknown feature network {name!r}; choose one of {sorted(FEATURE_NETWORKS)}")
    metric = FEATURE_NETWORKS[name]
    if not weights:
        raise MetricUnavailable(f"{metric}: no weights file given for {name} (the suite downloads no weights: "
                                f"pass a local file)")
    weights = Path(weights)
    if not weights.is_file():
        raise MetricUnavailable(f"{metric}: weights file {weights} does not exist")
    try:
        net = _build(name, weights)
    except ImportError as err:
        raise MetricUnavailable(f"{metric}: {err.name or err} is not installed (pip install -e .[fid])") from err
    except Exception as err:  # a file of another kind: torch.jit.load, torch.load or load_state_dict refuse it
        trust = (" (a TorchScript file carries code that torch.jit.load runs: use only StyleGAN-V's own "
                 "i3d_torchscript.pt or a copy you trust)") if name == "i3d" else ""
        raise ValueError(f"{weights}: not the {WEIGHT_FILES[name]} that {metric} needs ({first_reason(err)})"
                         f"{trust}") from None
    return FeatureNetwork(name, net.eval().to(device), "frames" if name == "inception" else "clips")


def _build(name: str, weights: Path) -> torch.nn.Module:
    if name == "i3d":
        with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.x, but it is the file's format
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(weights), map_location="cpu")
    if name == "inception":
        from torchmetrics.image.fid import NoTrainInceptionV3

        return NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    from torchvision.models.video import r2plus1d_18

    net = r2plus1d_18(weights=None)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.fc = torch.nn.Identity()
    return net


def frechet_metric(network: FeatureNetwork, generated: torch.Tensor, real: torch.Tensor) -> float:
    """FID or FVD: the Frechet distance of the feature statistics of generated and real videos (N, K, H, W)."""
    return frechet_distance(*gaussian_statistics(network.features(generated)),
                            *gaussian_statistics(network.features(real)))
