"""Anatomy-faithfulness of generated videos (issue 7): does a video follow its input map and beat like a heart?

The paper claims videos "spatially aligned with the input segmentation map" with plausible motion but measures
neither; SSIM/PSNR compare grey levels and FID/FVD need weights that cannot be had offline. These metrics read
the videos through the project's own segmenter (`freeecho_core.segmenter`, its held-out Dice stored with it):

- Dice per structure between the segmentation of the generated ED frame (frame 0) and the input ED map.
- The LV area curve over the frames and an area-based ejection-fraction proxy by the single-plane
  area-length method, V = 8 A^2 / (3 pi L) (A the LV area, L its long-axis length), EF_A = 1 - V_ES / V_ED
  (V_ED at frame 0, V_ES the smallest), compared with the real clip's, read by the same segmenter:
  `EF proxy error`. On a phantom's true labels EF_A is within 0.02 of the drawn EF (tests/test_anatomy.py).
- Roughness of the curve: the mean absolute second difference of the area over the mean area (0 for a
  curve linear in time; a flickering segmentation or a jittery wall scores high).
- Frechet distances in the segmenter's bottleneck features: `FD-seg` per frame, `FVD-seg` per clip (the mean
  and standard deviation over time of the frame features, so that motion counts). They are named for what
  they are, never FID/FVD: the feature network is trained here, on the same data.
"""
from __future__ import annotations

import numpy as np
import torch

from freeecho_core.data.case import CAMUS_LABELS
from freeecho_core.data.echonet import principal_axis
from freeecho_core.metrics import dice, frechet_distance, gaussian_statistics
from freeecho_core.segmenter import SegUNet, segment

LV = 1  # CAMUS label of the LV cavity
SHORT_NAMES = {"LV cavity": "LV", "myocardium": "myo", "left atrium": "LA"}
ANATOMY_COLUMNS = ("Dice LV", "Dice myo", "Dice LA", "EF proxy error", "LV area roughness", "FD-seg", "FVD-seg")


def camus_from_five(ed_map: np.ndarray) -> np.ndarray:
    """5-label map (0 outside, 1 sector tissue, 2 LV, 3 myocardium, 4 LA) -> CAMUS labels (0 bg, 1 LV, 2 myo, 3 LA)."""
    lookup = np.array([0, 0, 1, 2, 3])
    return lookup[np.asarray(ed_map)]


def lv_area_curve(labels: np.ndarray) -> np.ndarray:
    """(K, S, S) CAMUS labels -> (K,) LV cavity area in pixels per frame."""
    return (np.asarray(labels) == LV).sum(axis=(-2, -1)).astype(np.float64)


def long_axis_length(mask: np.ndarray) -> float:
    """Extent in pixels of a mask along its principal axis (0 for an empty mask)."""
    if not mask.any():
        return 0.0
    centre, axis = principal_axis(mask)
    ys, xs = np.nonzero(mask)
    t = (np.stack([xs, ys], axis=1) - centre) @ axis
    return float(t.max() - t.min() + 1)


def lv_volume_curve(labels: np.ndarray) -> np.ndarray:
    """(K, S, S) CAMUS labels -> (K,) single-plane area-length LV volume 8 A^2 / (3 pi L) in pixels^3."""
    masks = np.asarray(labels) == LV
    areas = masks.sum(axis=(-2, -1)).astype(np.float64)
    lengths = np.array([long_axis_length(m) for m in masks])
    return np.where(lengths > 0, 8 * areas**2 / (3 * np.pi * np.maximum(lengths, 1)), 0.0)


def ef_area_proxy(labels: np.ndarray) -> float:
    """EF_A = 1 - V_ES / V_ED of a (K, S, S) label clip that starts at ED, V the area-length volume and V_ES its
    smallest value; NaN when the LV is absent at ED."""
    volumes = lv_volume_curve(labels)
    return float("nan") if volumes[0] <= 0 else float(1 - volumes.min() / volumes[0])


def roughness(areas: np.ndarray) -> float:
    """Mean |A[k+1] - 2 A[k] + A[k-1]| over the mean area; NaN for fewer than 3 frames or no LV."""
    areas = np.asarray(areas, dtype=np.float64)
    if len(areas) < 3 or areas.mean() <= 0:
        return float("nan")
    return float(np.abs(np.diff(areas, 2)).mean() / areas.mean())


def finite_mean(values) -> float:
    """The mean of the finite values (NaN, silently, when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def clip_features(frame_features: np.ndarray) -> np.ndarray:
    """(n, K, d) per-frame features -> (n, 2d) per-clip features: mean and standard deviation over time."""
    return np.concatenate([frame_features.mean(axis=1), frame_features.std(axis=1)], axis=1)


def frame_features(net: SegUNet, videos: torch.Tensor) -> np.ndarray:
    """(n, K, S, S) grey in [0, 1] -> (n, K, d) bottleneck features of every frame (deterministic)."""
    n, K, S, _ = videos.shape
    device = next(net.parameters()).device
    x = (2 * videos.reshape(n * K, 1, S, S) - 1).float()
    feats = torch.cat([net.features(x[i : i + 64].to(device)).cpu() for i in range(0, len(x), 64)])
    return feats.reshape(n, K, -1).double().numpy()


def map_scores(net: SegUNet, generated: torch.Tensor, real: torch.Tensor, ed_map: np.ndarray,
               structures: list[str]) -> dict:
    """The per-map anatomy scores of n generated clips (n, K, S, S) in [0, 1] against their input ED map
    (5 labels) and the real clip (K, S, S): Dice of each of `structures` on frame 0 (mean over samples), the
    EF proxy error, and the generated and real LV area roughness."""
    seg = segment(net, 2 * generated.numpy() - 1)
    target = camus_from_five(ed_map)
    labels = {name: k for k, name in CAMUS_LABELS.items()}
    scores = {f"Dice {SHORT_NAMES[s]}": float(np.mean([dice(frames[0], target, labels[s]) for frames in seg]))
              for s in structures}
    real_seg = segment(net, 2 * real.numpy() - 1)
    real_ef = ef_area_proxy(real_seg)
    scores["EF proxy error"] = finite_mean([abs(ef_area_proxy(frames) - real_ef) for frames in seg])
    scores["LV area roughness"] = finite_mean([roughness(lv_area_curve(frames)) for frames in seg])
    scores["real EF proxy"] = real_ef
    scores["real LV area roughness"] = roughness(lv_area_curve(real_seg))
    return scores


def feature_distances(net: SegUNet, generated: list[torch.Tensor], real: torch.Tensor) -> dict[str, float]:
    """FD-seg (all generated frames against all real frames) and FVD-seg (clips), pooled over maps.
    generated: per map (n, K, S, S) in [0, 1]; real: (maps, K, S, S) in [0, 1]."""
    gen = np.concatenate([frame_features(net, g) for g in generated])
    ref = frame_features(net, real)
    d = gen.shape[-1]
    return {"FD-seg": frechet_distance(*gaussian_statistics(gen.reshape(-1, d)), *gaussian_statistics(ref.reshape(-1, d))),
            "FVD-seg": frechet_distance(*gaussian_statistics(clip_features(gen)),
                                        *gaussian_statistics(clip_features(ref)))}
