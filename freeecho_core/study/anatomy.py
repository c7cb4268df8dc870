"""Anatomy-faithfulness of generated videos: does a video follow its input map and beat like a heart?

The paper claims videos "spatially aligned with the input segmentation map" with plausible motion but measures
neither; SSIM/PSNR compare grey levels and FID/FVD need weights that cannot be had offline. These metrics read
the videos through the project's own segmenter (`study.segmenter`, its held-out Dice stored with it):

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
- Map specificity (`map_specificity`): does a video follow *its* map, or would a video of another heart score as
  well? Dice LV of each video's ED frame against its own map and, as the wrong-map floor, its mean against the
  other test maps; their difference is the `map margin` (about 0 for a method that ignores its map). And the
  pixel correlation inside the sector between videos of different maps made with the same seed, beside that
  between videos of one map made with different seeds: when the first is the larger, the seed, not the map,
  decides the video.
"""
from __future__ import annotations

import numpy as np
import torch

from freeecho_core.data.case import CAMUS_LABELS
from freeecho_core.data.lv import LV, camus_from_five, dice, ef_area_proxy, lv_area_curve
from freeecho_core.study.metrics import frechet_distance, gaussian_statistics
from freeecho_core.study.segmenter import SegUNet, segment


SHORT_NAMES = {"LV cavity": "LV", "myocardium": "myo", "left atrium": "LA"}


ANATOMY_COLUMNS = ("Dice LV", "Dice myo", "Dice LA", "map margin", "EF proxy error", "LV area roughness",
                   "FD-seg", "FVD-seg")


SPECIFICITY_COLUMNS = ("Dice LV own map", "Dice LV other maps", "map margin", "map margin s.e.",
                       "corr across maps, same seed", "corr across seeds, same map")


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


def frame_distance(generated: list[np.ndarray], real: np.ndarray) -> float:
    """FD-seg of per-frame features: generated per map (n, K, d), real (maps, K, d), every frame pooled."""
    d = real.shape[-1]
    return frechet_distance(*gaussian_statistics(np.concatenate(generated).reshape(-1, d)),
                            *gaussian_statistics(real.reshape(-1, d)))


def feature_distances(net: SegUNet, generated: list[torch.Tensor], real: torch.Tensor,
                      resamples: int = 200) -> dict[str, float]:
    """FD-seg (all generated frames against all real frames) and FVD-seg (clips), pooled over maps, and the
    standard error of FD-seg: the spread of FD-seg over `resamples` bootstrap draws of the maps (each draw
    takes a map's generated videos with its real clip; given only when generated and real are paired by map,
    two maps or more). generated: per map (n, K, S, S) in [0, 1]; real: (maps, K, S, S) in [0, 1]."""
    gens = [frame_features(net, g) for g in generated]
    ref = frame_features(net, real)
    gen = np.concatenate(gens)
    rng = np.random.default_rng(0)
    paired = len(gens) == len(ref) > 1
    draws = [rng.integers(0, len(gens), len(gens)) for _ in range(resamples if paired else 0)]
    boot = [frame_distance([gens[i] for i in pick], ref[pick]) for pick in draws]
    return {"FD-seg": frame_distance(gens, ref),
            "FVD-seg": frechet_distance(*gaussian_statistics(clip_features(gen)),
                                        *gaussian_statistics(clip_features(ref)))} | (
        {"FD-seg s.e.": float(np.std(boot, ddof=1))} if len(boot) > 1 else {})


def video_correlation(a: torch.Tensor, b: torch.Tensor, region: np.ndarray) -> float:
    """Pearson correlation of two (K, S, S) videos over the pixels of `region` (S, S) in every frame."""
    x, y = (v[:, torch.from_numpy(region)].double().ravel() for v in (a, b))
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / torch.sqrt((x @ x) * (y @ y)).clamp_min(1e-12))


def seed_correlations(generated: list[torch.Tensor], ed_maps: list[np.ndarray]) -> dict[str, float]:
    """Mean pixel correlation inside the sector between sample s of map i and sample s of map j != i (same seed,
    other map; the sectors' overlap), and between samples s != s' of one map (same map, other seed). generated:
    per map (n, K, S, S), sample s of every map drawn with the same seed."""
    n = min(len(g) for g in generated)
    sectors = [np.asarray(m) != 0 for m in ed_maps]
    across_maps = [video_correlation(generated[i][s], generated[j][s], sectors[i] & sectors[j])
                   for i in range(len(generated)) for j in range(i + 1, len(generated)) for s in range(n)]
    across_seeds = [video_correlation(g[s], g[t], sector) for g, sector in zip(generated, sectors)
                    for s in range(n) for t in range(s + 1, n)]
    return {"corr across maps, same seed": finite_mean(across_maps),
            "corr across seeds, same map": finite_mean(across_seeds)}


def specificity_from_labels(first_frames: list[np.ndarray], ed_maps: list[np.ndarray]) -> dict:
    """Dice LV of segmented ED frames against their own map and the other maps. first_frames: per map (n, S, S)
    CAMUS labels of its n videos' frame 0; ed_maps: the 5-label maps, two or more. A method whose videos are
    the same whatever the map scores a margin of exactly 0."""
    if len(first_frames) < 2:
        raise ValueError("map specificity needs two or more maps")
    targets = [camus_from_five(m) for m in ed_maps]
    own, other = [], []
    for i, frames in enumerate(first_frames):
        own.append(np.mean([dice(f, targets[i], LV) for f in frames]))
        other.append(np.mean([dice(f, targets[j], LV) for f in frames for j in range(len(targets)) if j != i]))
    margin = np.array(own) - np.array(other)
    return {"Dice LV own map": float(np.mean(own)), "Dice LV other maps": float(np.mean(other)),
            "map margin": float(margin.mean()), "map margin s.e.": float(margin.std(ddof=1) / np.sqrt(len(margin))),
            "specificity_per_map": [{"own": float(o), "other": float(t)} for o, t in zip(own, other)]}


def map_specificity(net: SegUNet, generated: list[torch.Tensor], ed_maps: list[np.ndarray]) -> dict:
    """Whether videos follow their own map (module docstring). generated: per map (n, K, S, S) in [0, 1], sample
    s of every map made with the same seed; ed_maps: the 5-label ED maps. `specificity_from_labels` on the
    segmenter's reading of frame 0, and the seed correlations (`seed_correlations`) with two or more samples."""
    first = [segment(net, 2 * g[:, 0].numpy() - 1) for g in generated]
    out = specificity_from_labels(first, ed_maps)
    if min(len(g) for g in generated) > 1:
        out |= seed_correlations(generated, ed_maps)
    return out
