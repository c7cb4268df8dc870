"""One echo recording with its labels: what the phantom renders and what the dataset writers store.

Label conventions (book/design.md, section 3):
- CAMUS labels, used in files and in `EchoCase.labels`: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium.
- The 5-label pseudo-image convention of the method: 0 outside the scan sector, 1 sector tissue, 2 LV cavity,
  3 myocardium, 4 left atrium (`to_five_labels`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CAMUS_LABELS = {0: "background", 1: "LV cavity", 2: "myocardium", 3: "left atrium"}
FIVE_LABELS = {0: "outside sector", 1: "sector tissue", 2: "LV cavity", 3: "myocardium", 4: "left atrium"}
FIVE_LV, FIVE_LA = 2, 4  # the LV cavity and the left atrium in FIVE_LABELS


@dataclass
class EchoCase:
    """An apical recording starting at end diastole (frame 0).

    frames: (T, H, W) uint8 B-mode images, scan-converted to a fan, zero outside it.
    labels: (T, H, W) uint8 CAMUS labels, aligned pixel for pixel with `frames`.
    sector: (H, W) bool, the scan fan.
    """

    case_id: str  # e.g. "patient0001" or "0X1A2B3C4D5E6F70"
    view: str  # "2CH" or "4CH"
    frames: np.ndarray
    labels: np.ndarray
    sector: np.ndarray
    es_index: int  # frame of end systole in the first beat (ED is frame 0)
    ef: float  # ejection fraction as a fraction in [0, 1], as drawn for the phantom
    fps: float  # frames per second
    pixel_spacing_mm: float  # isotropic pixel size
    sex: str = "F"  # "M" or "F"
    age: int = 60
    image_quality: str = "Good"  # "Good", "Medium" or "Poor" (CAMUS)

    def __post_init__(self):
        T, H, W = self.frames.shape
        if self.labels.shape != (T, H, W) or self.sector.shape != (H, W):
            raise ValueError(
                f"case {self.case_id}: frames {self.frames.shape}, labels {self.labels.shape} and "
                f"sector {self.sector.shape} must agree as (T, H, W), (T, H, W), (H, W)"
            )
        if not 0 < self.es_index < T:
            raise ValueError(f"case {self.case_id}: es_index {self.es_index} outside 1..{T - 1}")


def one_hot_maps(ed_map: torch.Tensor) -> torch.Tensor:
    """(B, S, S) 5-label maps -> (B, 5, S, S) float one-hot: the condition of the Cls-Free baseline's network."""
    return F.one_hot(ed_map, len(FIVE_LABELS)).permute(0, 3, 1, 2).float()


def to_five_labels(camus_labels: np.ndarray, sector: np.ndarray) -> np.ndarray:
    """CAMUS labels (0-3) plus a sector mask -> the 5-label convention (0 outside, 1 tissue, 2 LV, 3 myo, 4 LA)."""
    out = np.where(sector, 1, 0).astype(np.int64)
    out = np.broadcast_to(out, camus_labels.shape).copy()
    for camus, five in ((1, 2), (2, 3), (3, 4)):
        out[camus_labels == camus] = five
    return out
