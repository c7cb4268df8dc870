"""Clip preparation shared by the CAMUS and EchoNet readers (paper section 3, "Data").

From a recording and its labels to what the model and the pseudo-video step take: K frames from end
diastole, zero-padded to a square (`pad_to_square`: pixels stay square, the probe stays at the top centre),
resized to S x S (labels with nearest neighbour), grey in [-1, 1], plus the ED label map in the 5-label
convention of the method (0 outside the sector, 1 sector tissue, 2 LV, 3 myocardium, 4 LA).

Time policy (the paper takes "the first 24 frames" from ED, but CAMUS half sequences run only ED -> ES and hold
10-30 frames): when at least K frames follow ED, the first K are taken as they are; when fewer do, `short`
decides: "resample" (default) stretches the available frames to K by linear interpolation in time (labels:
nearest frame), "pad" repeats the last frame, "error" refuses the clip. Real recordings run at different frame
rates (EchoNet-Dynamic: 18-138 fps), so K frames span different times; `ClipConfig.fps` resamples every
recording to one rate from ED first (linear interpolation between frames). Each clip records the frame rate
it ends up at (`Clip.fps`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import binary_dilation, binary_opening, label as connected_components

from freeecho_core.data.case import to_five_labels

# Bumped whenever prepare_clip makes different clips from the same files; part of every cache key built on clips.
PREPARATION_VERSION = 3  # 2: frames padded to a square instead of stretched; ClipConfig.fps; 3: whole grey levels
SHORT_POLICIES = ("resample", "pad", "error")
UNLABELLED = -1  # frame_labels value of frames without annotation


@dataclass(frozen=True)
class ClipConfig:
    frames: int = 24  # K frames from ED (paper: 24; the authors' script: 16)
    size: int = 128  # S: output height and width in pixels (paper: 128)
    short: str = "resample"  # clips with fewer than K frames from ED: "resample", "pad" or "error"
    fps: float | None = None  # None: K consecutive frames (the paper); a rate: resample every recording to it

    def __post_init__(self):
        if self.short not in SHORT_POLICIES:
            raise ValueError(f"short must be one of {SHORT_POLICIES}, got {self.short!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be a positive frame rate or None, got {self.fps!r}")
        if self.frames < 1 or self.size < 8:
            raise ValueError(f"need frames >= 1 and size >= 8, got {self.frames}, {self.size}")


@dataclass
class Clip:
    """A prepared clip.

    video: (K, S, S) float32 in [-1, 1].
    frame_labels: (K, S, S) int64 CAMUS labels (0-3), UNLABELLED (-1) on frames without annotation.
    ed_map: (S, S) int64 ED labels in the 5-label convention.
    sector: (S, S) bool scan fan.
    fps: frames per second of `video` (the recording's rate, changed where the clip was resampled in time), None
    when the recording does not say (the 2019 CAMUS release).
    """

    case_id: str
    view: str
    video: np.ndarray
    frame_labels: np.ndarray
    ed_map: np.ndarray
    sector: np.ndarray
    fps: float | None


def unit_from_grey(grey: np.ndarray) -> np.ndarray:
    """uint8 grey levels -> float32 in [-1, 1]. A prepared clip holds whole grey levels (the source files do,
    and resizing is rounded back to them), so the prepared-clip store keeps a video as uint8 without loss."""
    return grey.astype(np.float32) / np.float32(127.5) - np.float32(1)


def grey_from_unit(video: np.ndarray) -> np.ndarray:
    """The inverse of `unit_from_grey`: float32 video in [-1, 1] on whole grey levels -> uint8."""
    return np.rint((video.astype(np.float32) + 1) * np.float32(127.5)).clip(0, 255).astype(np.uint8)


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


def take_frames(n_available: int, K: int, short: str, where: str, step: float = 1.0) -> tuple[np.ndarray, float]:
    """Fractional source positions of K output frames from ED (frame 0) among n_available frames, `step` source
    frames apart (1: consecutive frames), and the step the positions end up with (the `short` policy for too few
    frames: "resample" spreads the available ones over K, "pad" repeats the last, "error" refuses)."""
    positions = np.arange(K) * step
    if positions[-1] <= n_available - 1:
        return positions, step
    if short == "error":
        raise ValueError(f"{where}: {n_available} frames from end diastole, {K} asked (policy short='error')")
    if short == "pad":
        return np.minimum(positions, n_available - 1), step
    return np.linspace(0, n_available - 1, K), (n_available - 1) / max(K - 1, 1)


def resample_in_time(frames: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation between neighbouring frames at fractional `positions`: (T, H, W) -> (K, H, W) float."""
    lo = np.floor(positions).astype(int)
    hi = np.minimum(lo + 1, len(frames) - 1)
    w = (positions - lo)[:, None, None]
    return frames[lo] * (1 - w) + frames[hi] * w


def pad_to_square(images: np.ndarray) -> np.ndarray:
    """(..., H, W) -> (..., S, S), S = max(H, W): zeros below a wide image, or equally left and right of a tall
    one, so that pixels stay square and an apical probe stays at the top centre (no stretching)."""
    H, W = images.shape[-2:]
    S = max(H, W)
    left = (S - W) // 2
    return np.pad(images, [(0, 0)] * (images.ndim - 2) + [(0, S - H), (left, S - W - left)])


def crop_to_aspect(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The inverse of `pad_to_square` at any size: the part of (..., s, s) images that an (H, W) image padded to
    a square and resized to s covers, (..., round(s H / S), round(s W / S)), S = max(H, W)."""
    H, W = shape
    s, S = images.shape[-1], max(H, W)
    h, w = max(1, round(s * H / S)), max(1, round(s * W / S))
    left = (s - w) // 2
    return images[..., :h, left : left + w]


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


def ed_map_from_labels(camus_labels: np.ndarray, sector: np.ndarray, size: int) -> np.ndarray:
    """The model's ED map: (H, W) CAMUS labels and scan sector, padded to a square, resized to (size, size) with
    nearest neighbour, in the 5-label convention. The one function that makes training clips' maps and users'."""
    sector = resize_labels_nearest(pad_to_square(sector), size).astype(bool)
    return to_five_labels(resize_labels_nearest(pad_to_square(camus_labels), size), sector)


def annotated_at_size(frames: np.ndarray, labels: dict[int, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every annotated frame of a recording, wherever it lies (a clip holds only the K frames from ED, and an
    EchoNet-Dynamic ES tracing often lies before ED or beyond them), prepared as a clip's frames are: (M, S, S)
    float32 grey in [-1, 1] and (M, S, S) int64 CAMUS labels, in frame order. frames: (T, H, W) uint8; labels:
    {frame index: (H, W) CAMUS labels}."""
    order = sorted(labels)
    grey = resize_frames(pad_to_square(frames[order]).astype(np.float32), size)
    masks = resize_labels_nearest(pad_to_square(np.stack([labels[k] for k in order])), size)
    return unit_from_grey(np.rint(grey).clip(0, 255).astype(np.uint8)), masks.astype(np.int64)


def prepare_clip(case_id: str, view: str, frames: np.ndarray, labels: dict[int, np.ndarray], ed_index: int,
                 config: ClipConfig, fps: float, sector: np.ndarray | None = None, ed_labels: np.ndarray | None = None,
                 where: str = "") -> Clip:
    """K frames from `ed_index`, padded to a square, resized and scaled, with the ED map in the 5-label convention.

    frames: (T, H, W) uint8; labels: {frame index: (H, W) CAMUS labels} for the annotated frames (the ED
    frame must be among them); fps: the recording's frame rate (None: unknown); sector: (H, W) bool, found from the frames when None; ed_labels: the CAMUS
    labels the ED map is made from, when they differ from labels[ed_index] (EchoNet: LV plus a grown ring).
    """
    where = where or case_id
    if fps is not None and not fps > 0:
        raise ValueError(f"{where}: the frame rate must be positive, got {fps!r}")
    if fps is None and config.fps is not None:
        raise ValueError(f"{where}: the recording has no frame rate, so it cannot be resampled to "
                         f"{config.fps:g} fps (use fps: null, consecutive frames)")
    if ed_index not in labels:
        raise ValueError(f"{where}: the ED frame {ed_index} has no labels")
    if not (labels[ed_index] == 1).any():
        raise ValueError(f"{where}: the ED labels hold no LV (label 1)")
    sector = sector_from_frames(frames) if sector is None else sector
    ed_labels = labels[ed_index] if ed_labels is None else ed_labels
    frames, sector, ed_labels = pad_to_square(frames), pad_to_square(sector), pad_to_square(ed_labels)
    labels = {k: pad_to_square(v) for k, v in labels.items()}
    step = 1.0 if config.fps is None else fps / config.fps
    positions, step = take_frames(len(frames) - ed_index, config.frames, config.short, where, step)
    video = resize_frames(resample_in_time(frames[ed_index:].astype(np.float32), positions), config.size)
    frame_labels = np.full((config.frames, frames.shape[1], frames.shape[2]), UNLABELLED, np.int64)
    for k, p in enumerate(positions):
        source = ed_index + int(round(p))
        if source in labels:
            frame_labels[k] = labels[source]
    sector_small = resize_labels_nearest(sector, config.size).astype(bool)
    ed_map = ed_map_from_labels(ed_labels, sector, config.size)
    return Clip(case_id, view, unit_from_grey(np.rint(video).clip(0, 255).astype(np.uint8)),
                resize_labels_nearest(frame_labels, config.size), ed_map, sector_small,
                None if fps is None else float(fps / step))
