"""Clip preparation shared by the CAMUS and EchoNet readers (paper section 3, "Data").

From a recording and its labels to what the model and the pseudo-video step take: K frames from end
diastole, resized to S x S (labels with nearest neighbour), grey in [-1, 1], plus the ED label map in the
5-label convention of the method (0 outside the sector, 1 sector tissue, 2 LV, 3 myocardium, 4 LA).

Time policy (the paper takes "the first 24 frames" from ED, but CAMUS half sequences run only ED -> ES and hold
10-30 frames): when at least K frames follow ED, the first K are taken as they are; when fewer do, `short`
decides: "resample" (default) stretches the available frames to K by linear interpolation in time (labels:
nearest frame), "pad" repeats the last frame, "error" refuses the clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import binary_dilation, binary_opening, label as connected_components

from freeecho_core.data.case import to_five_labels

SHORT_POLICIES = ("resample", "pad", "error")
UNLABELLED = -1  # frame_labels value of frames without annotation


@dataclass(frozen=True)
class ClipConfig:
    frames: int = 24  # K frames from ED (paper: 24; the authors' script: 16)
    size: int = 128  # S: output height and width in pixels (paper: 128)
    short: str = "resample"  # clips with fewer than K frames from ED: "resample", "pad" or "error"

    def __post_init__(self):
        if self.short not in SHORT_POLICIES:
            raise ValueError(f"short must be one of {SHORT_POLICIES}, got {self.short!r}")
        if self.frames < 1 or self.size < 8:
            raise ValueError(f"need frames >= 1 and size >= 8, got {self.frames}, {self.size}")


@dataclass
class Clip:
    """A prepared clip.

    video: (K, S, S) float32 in [-1, 1].
    frame_labels: (K, S, S) int64 CAMUS labels (0-3), UNLABELLED (-1) on frames without annotation.
    ed_map: (S, S) int64 ED labels in the 5-label convention.
    sector: (S, S) bool scan fan.
    """

    case_id: str
    view: str
    video: np.ndarray
    frame_labels: np.ndarray
    ed_map: np.ndarray
    sector: np.ndarray


SECTOR_GREY = 16  # grey level a fan pixel reaches in some frame; codec noise and black borders stay below


def sector_from_frames(frames: np.ndarray, min_grey: int = SECTOR_GREY) -> np.ndarray:
    """The scan fan of a recording: pixels brighter than `min_grey` in some frame (codec noise outside the fan of
    MJPG and h264 files stays at grey 1-8), opened to cut thin links to depth markers and text, the largest
    connected component, then its convex hull (a fan is convex; the hull also closes the dark cavities inside
    it). frames: (T, H, W) uint8 -> (H, W) bool."""
    lit = binary_opening(frames.max(axis=0) > min_grey, iterations=1)
    components, n = connected_components(lit)
    if n == 0:
        raise ValueError(f"the frames are black: no pixel brighter than grey {min_grey}, no scan sector found")
    largest = components == 1 + np.argmax(np.bincount(components.ravel())[1:])
    points = np.argwhere(largest)[:, ::-1].astype(np.int32)
    hull = np.zeros(frames.shape[1:], np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return hull.astype(bool)


def myocardium_ring(lv: np.ndarray, sector: np.ndarray, thickness_fraction: float = 0.2) -> np.ndarray:
    """EchoNet gives only the LV: grow a myocardium ring around it by dilation (as the authors did), of a
    thickness proportional to the LV width, and return CAMUS labels (1 LV, 2 ring) within the sector."""
    width = np.ptp(np.nonzero(lv)[1]) + 1
    iterations = max(1, int(round(thickness_fraction * width)))
    ring = binary_dilation(lv, iterations=iterations) & ~lv & sector
    return np.where(lv, 1, np.where(ring, 2, 0)).astype(np.uint8)


def take_frames(n_available: int, K: int, short: str, where: str) -> np.ndarray:
    """Fractional source positions of K output frames from ED (frame 0) among n_available frames."""
    if n_available >= K:
        return np.arange(K, dtype=float)
    if short == "error":
        raise ValueError(f"{where}: {n_available} frames from end diastole, {K} asked (policy short='error')")
    if short == "pad":
        return np.minimum(np.arange(K), n_available - 1).astype(float)
    return np.linspace(0, n_available - 1, K)


def resample_in_time(frames: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation between neighbouring frames at fractional `positions`: (T, H, W) -> (K, H, W) float."""
    lo = np.floor(positions).astype(int)
    hi = np.minimum(lo + 1, len(frames) - 1)
    w = (positions - lo)[:, None, None]
    return frames[lo] * (1 - w) + frames[hi] * w


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W) images -> (T, size, size) float32, area averaging (cubic when enlarging)."""
    shrink = frames.shape[1] >= size and frames.shape[2] >= size
    method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f.astype(np.float32), (size, size), interpolation=method) for f in frames])


def resize_labels_nearest(labels: np.ndarray, size) -> np.ndarray:
    """(..., H, W) integer labels -> (..., h, w) for size = h = w or (h, w): each output pixel takes the label
    under its centre (nearest neighbour, never bilinear; integer factors are exact both ways)."""
    H, W = labels.shape[-2:]
    h, w = (size, size) if np.isscalar(size) else size
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(int), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(int), W - 1)
    return labels[..., rows[:, None], cols[None, :]]


def prepare_clip(case_id: str, view: str, frames: np.ndarray, labels: dict[int, np.ndarray], ed_index: int,
                 config: ClipConfig, sector: np.ndarray | None = None, ed_labels: np.ndarray | None = None,
                 where: str = "") -> Clip:
    """K frames from `ed_index`, resized and scaled, with the ED map in the 5-label convention.

    frames: (T, H, W) uint8; labels: {frame index: (H, W) CAMUS labels} for the annotated frames (the ED
    frame must be among them); sector: (H, W) bool, found from the frames when None; ed_labels: the CAMUS
    labels the ED map is made from, when they differ from labels[ed_index] (EchoNet: LV plus a grown ring).
    """
    where = where or case_id
    if ed_index not in labels:
        raise ValueError(f"{where}: the ED frame {ed_index} has no labels")
    if not (labels[ed_index] == 1).any():
        raise ValueError(f"{where}: the ED labels hold no LV (label 1)")
    sector = sector_from_frames(frames) if sector is None else sector
    positions = take_frames(len(frames) - ed_index, config.frames, config.short, where)
    video = resize_frames(resample_in_time(frames[ed_index:].astype(np.float32), positions), config.size)
    frame_labels = np.full((config.frames, frames.shape[1], frames.shape[2]), UNLABELLED, np.int64)
    for k, p in enumerate(positions):
        source = ed_index + int(round(p))
        if source in labels:
            frame_labels[k] = labels[source]
    sector_small = resize_labels_nearest(sector, config.size).astype(bool)
    ed_labels = labels[ed_index] if ed_labels is None else ed_labels
    ed_map = to_five_labels(resize_labels_nearest(ed_labels, config.size), sector_small)
    return Clip(case_id, view, (video / 127.5 - 1).clip(-1, 1).astype(np.float32),
                resize_labels_nearest(frame_labels, config.size), ed_map, sector_small)
