"""End-diastolic label maps from users' files: reading, label conventions, and the model's input map.

A map is a PNG (8- or 16-bit grey, or a palette PNG's indices) or a NIfTI file (.nii, .nii.gz, stored (W, H) or
(W, H, 1) as CAMUS does) of integer labels, of any size up to MAX_MAP_SIDE pixels a side, in one of three
conventions (`CONVENTIONS`; "auto" infers it from the values):
- "camus": 0 background, 1 LV cavity, 2 myocardium, 3 left atrium; the scan sector is added as a geometric fan
  with its apex at the top centre (`fan_sector`) that covers every labelled pixel;
- "five": the method's labels, 0 outside the sector, 1 sector tissue, 2 LV, 3 myocardium, 4 left atrium;
- "lv": an LV mask alone (0/1 or 0/255), as EchoNet-Dynamic traces it; the fan is added and a myocardium ring is
  grown around the LV with `clips.myocardium_ring`, exactly as the EchoNet training clips get theirs.
"auto" reads a map holding label 4 as "five", a binary mask as "lv", a map of labels 1-3 whose label 1 covers more
than twice the area of labels 2 and 3 together as "five" without an atrium (label 1 is then the sector's tissue;
a CAMUS LV cavity is never that large beside its myocardium), and anything else as "camus".

Labels are checked at the file's own resolution, before any resizing (a stray label between sampled pixels
would otherwise vanish). The model's input is then made by `clips.ed_map_from_labels`, the function that makes
the training clips' ED maps: padded to a square (never stretched), resized with nearest neighbour.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from freeecho_core.data.case import CAMUS_LABELS, FIVE_LABELS
from freeecho_core.data.clips import ed_map_from_labels, myocardium_ring

CONVENTIONS = ("auto", "camus", "five", "lv")
MAX_MAP_SIDE = 4096  # larger maps are refused before they are decoded into memory
MAP_SUFFIXES = (".nii.gz", ".nii", ".png")


def map_stem(path) -> str:
    """The file name without .png, .nii or .nii.gz."""
    name = Path(path).name
    for suffix in MAP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_side(shape, where: str) -> None:
    if max(shape[:2]) > MAX_MAP_SIDE:
        raise ValueError(f"{where}: a {shape[0]} x {shape[1]} map is larger than {MAX_MAP_SIDE} pixels a side; "
                         f"downsample it with nearest neighbour first")


def png_header(path: Path) -> tuple[int, int, int, int]:
    """(height, width, bit depth, colour type) from a PNG's header, without decoding it (ValueError if it is not a
    PNG). Colour type 3 is a palette PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file OpenCV can read")
    width, height = struct.unpack(">II", head[16:24])
    return height, width, head[24], head[25]


def palette_indices(path: Path) -> np.ndarray:
    """The (H, W) palette indices of a palette PNG, read with Pillow (OpenCV would give their colours)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image).astype(np.int64)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{path}: a palette PNG Pillow cannot read ({err})") from None


def read_map(path: str | os.PathLike) -> np.ndarray:
    """An (H, W) int64 label map from a PNG or NIfTI file, its size checked before it is decoded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: map file not found")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            image = nib.load(path)
        except Exception as err:
            raise ValueError(f"{path} is not a NIfTI file nibabel can read ({err})") from None
        _check_side(image.shape[:2][::-1], str(path))
        data = np.asanyarray(image.dataobj)
        data = data[..., 0] if data.ndim == 3 and data.shape[2] == 1 else data
        if data.ndim != 2:
            raise ValueError(f"{path}: a map must be one 2-D frame, got an array of shape {data.shape} "
                             f"(for a sequence, save the ED frame's labels)")
        data = data.T
    elif name.endswith(".png"):
        height, width, _, colour_type = png_header(path)
        _check_side((height, width), str(path))
        if colour_type == 3:
            return palette_indices(path)
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if data is None:
            raise ValueError(f"{path} is not a PNG file OpenCV can read")
        if data.ndim == 3:
            raise ValueError(f"{path}: a colour PNG ({data.shape[2]} channels); a map must be a grey PNG whose "
                             f"pixel values are the labels (CAMUS 0-3, the 5-label convention 0-4, or an LV mask)")
    else:
        raise ValueError(f"{path}: expected a .png, .nii or .nii.gz label map")
    if not np.issubdtype(data.dtype, np.integer) and not np.array_equal(data, np.round(data)):
        raise ValueError(f"{path}: the map holds non-integer values; labels must be integers")
    return np.asarray(data).astype(np.int64)


def fan_sector(shape: tuple[int, int], labels: np.ndarray, half_angle_deg: float = 40.0) -> np.ndarray:
    """A scan fan with its apex at the top centre (the phantom's apical geometry: 80 degrees, depth = the
    image height), widened to cover every labelled pixel. (H, W) bool."""
    H, W = shape
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    x, z = cols + 0.5 - W / 2, rows + 0.5
    angle = np.degrees(np.arctan2(np.abs(x), z))
    labelled = labels > 0
    needed = angle[labelled].max() if labelled.any() else 0.0
    return ((np.hypot(x, z) <= H) & (angle <= max(half_angle_deg, needed))) | labelled


def infer_convention(values: set, labels: np.ndarray | None = None) -> str:
    """"five" for a map holding label 4, "lv" for a binary mask (0/1 or 0/255), "five" for labels 1-3 whose label 1
    covers more than twice the area of labels 2 and 3 (sector tissue around an LV and myocardium, no atrium; needs
    `labels`), "camus" otherwise."""
    if 4 in values:
        return "five"
    if values <= {0, 1} or values <= {0, 255}:
        return "lv"
    if labels is not None and {1, 2} <= values <= {0, 1, 2, 3}:
        if (labels == 1).sum() > 2 * np.isin(labels, (2, 3)).sum():
            return "five"
    return "camus"


@dataclass
class MapInput:
    """A user's map made ready for the model.

    ed_map: (S, S) int64 5-label map, the model's input (padded to a square, resized with nearest neighbour).
    shape: (H, W) of the map as given; generated videos are cropped back to its aspect (`clips.crop_to_aspect`).
    convention: the convention the map was read in ("camus", "five" or "lv"; never "auto").
    """

    ed_map: np.ndarray
    shape: tuple[int, int]
    convention: str


def camus_labels_and_sector(labels: np.ndarray, convention: str = "auto",
                            where: str = "the map") -> tuple[np.ndarray, np.ndarray, str]:
    """A map in any convention, checked at its own resolution -> (CAMUS labels (H, W) uint8, sector (H, W)
    bool, the convention it was read in)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: a map must be a 2-D array of integer labels, got {labels.dtype} {labels.shape}")
    _check_side(labels.shape, where)
    values = set(np.unique(labels).tolist())
    if convention == "auto":
        convention = infer_convention(values, labels)
    allowed = {"five": set(FIVE_LABELS), "camus": set(CAMUS_LABELS), "lv": {0, 1, 255}}[convention]
    unknown = sorted(values - allowed)
    if unknown:
        raise ValueError(f"{where}: labels {unknown} are not in the {convention} convention {sorted(allowed)}")
    lv_value = {"five": 2, "camus": 1, "lv": max(values)}[convention]
    if lv_value == 0 or not (labels == lv_value).any():
        raise ValueError(f"{where}: the label map has no LV cavity (label {lv_value or 1} in the {convention} "
                         f"convention): nothing to condition the video on")
    if convention == "five":
        sector = labels > 0
        camus = np.select([labels == 2, labels == 3, labels == 4], [1, 2, 3], 0)
    elif convention == "camus":
        sector, camus = fan_sector(labels.shape, labels), labels
    else:
        lv = labels == lv_value
        sector = fan_sector(labels.shape, lv)
        camus = myocardium_ring(lv, sector)
    return camus.astype(np.uint8), sector, convention


def prepare_map(source, size: int, convention: str = "auto") -> MapInput:
    """A map file (path) or an (H, W) integer array -> the model's (size, size) input, as the training clips'
    ED maps are made (`clips.ed_map_from_labels`)."""
    if isinstance(source, (str, os.PathLike)):
        labels, where = read_map(source), str(source)
    else:
        labels, where = np.asarray(source), "the map"
    camus, sector, convention = camus_labels_and_sector(labels, convention, where)
    ed_map = ed_map_from_labels(camus, sector, size)
    if not (ed_map == 2).any():
        raise ValueError(f"{where}: the LV cavity is too small to survive resizing to {size} x {size} pixels")
    return MapInput(ed_map, tuple(labels.shape), convention)
