"""The left ventricle in CAMUS label maps: its area, long axis and single-plane area-length volume
V = 8 A^2 / (3 pi L) per frame, the EF they give, and the Dice overlap of one label in two maps. The pseudo video's
motion (`motion`), the anatomy metrics (`study.anatomy`) and the phantom statistics (`data.anatomy_stats`) measure
with these.
"""
from __future__ import annotations

import numpy as np

from freeecho_core.data.echonet import principal_axis

LV = 1  # CAMUS label of the LV cavity


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


def dice(pred: np.ndarray, target: np.ndarray, label: int) -> float:
    """Dice coefficient 2 |P and T| / (|P| + |T|) of one label in two label maps; 1 when both lack it."""
    p, t = np.asarray(pred) == label, np.asarray(target) == label
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(p, t).sum() / total)
