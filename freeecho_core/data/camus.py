"""CAMUS files (DESIGN.md section 3, current NIfTI release): write an `EchoCase` in that format, read it back.

Layout, identical for the real download and for the phantom:
    <root>/database_nifti/<patient>/<patient>_<view>_{half_sequence,ED,ES}[_gt].nii.gz
    <root>/database_nifti/<patient>/Info_<view>.cfg          (view "2CH" or "4CH"; a patient may hold both)
On disk nibabel gives (W, H, T) for sequences and (W, H) for single frames; in memory arrays are (T, H, W) and
(H, W). Images and labels are uint8, labels are CAMUS labels 0-3 (`case.CAMUS_LABELS`); the header zooms are the
pixel size in mm (x = column, y = row) and 1 for time.
Info_<view>.cfg holds "Key: value" lines; ED and ES are 1-based frame numbers in the half sequence. Most real
half sequences run ED -> ES (ED 1, ES NbFrame), some run ES -> ED (ED NbFrame, ES 1): readers report the
indices as stored and never reorder frames.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from freeecho_core.data.case import CAMUS_LABELS, EchoCase

VIEWS = ("2CH", "4CH")
INSTANTS = ("ED", "ES")
INFO_TYPES = {"ED": int, "ES": int, "NbFrame": int, "Sex": str, "Age": int,
              "ImageQuality": str, "EF": float, "FrameRate": float}  # every key of a current-release Info file
SEXES = ("M", "F")
IMAGE_QUALITIES = ("Good", "Medium", "Poor")
LV = 1  # CAMUS label of the LV cavity


@dataclass
class CamusRecord:
    """One view of one CAMUS patient: the half sequence with its labels.

    frames: (T, H, W) uint8 grey images.
    labels: (T, H, W) uint8 CAMUS labels 0-3, aligned with `frames`.
    spacing_mm: (row, column) pixel size in mm, from the NIfTI header.
    ed_index, es_index: 0-based frames of end diastole and end systole in `frames` (Info ED/ES minus 1).
    info: the typed contents of Info_<view>.cfg (`read_camus_info`).
    """

    patient: str
    view: str
    frames: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float]
    ed_index: int
    es_index: int
    info: dict


def camus_path(patient_dir: str | Path, view: str, part: str) -> Path:
    """The file of one `part` ("half_sequence", "ED", "ES", each optionally + "_gt") of a patient's view.

    Some copies of CAMUS are gunzipped: a plain .nii is used when the .nii.gz is absent.
    """
    path = _gz_path(Path(patient_dir), view, part)
    plain = path.with_suffix("")
    return plain if not path.exists() and plain.exists() else path


def write_camus_case(root: str | Path, case: EchoCase) -> Path:
    """Write `case` as CAMUS files under `root`/database_nifti/<case_id>/ and return that folder.

    The half sequence is frames 0..es_index (ED -> ES); the ED and ES files are its first and last frames.
    """
    _check_view(case.view)
    _check_labels(case.labels, f"case {case.case_id}")
    if case.sex not in SEXES or case.image_quality not in IMAGE_QUALITIES:
        raise ValueError(f"case {case.case_id}: sex {case.sex!r} must be one of {SEXES} and image_quality "
                         f"{case.image_quality!r} one of {IMAGE_QUALITIES}")
    patient_dir = Path(root) / "database_nifti" / case.case_id
    patient_dir.mkdir(parents=True, exist_ok=True)
    half = slice(0, case.es_index + 1)
    for part, frames, labels in (("half_sequence", case.frames[half], case.labels[half]),
                                 ("ED", case.frames[0], case.labels[0]),
                                 ("ES", case.frames[case.es_index], case.labels[case.es_index])):
        _save_nifti(_gz_path(patient_dir, case.view, part), frames, case.pixel_spacing_mm)
        _save_nifti(_gz_path(patient_dir, case.view, part + "_gt"), labels, case.pixel_spacing_mm)
    (patient_dir / f"Info_{case.view}.cfg").write_text(_info_text(case))
    return patient_dir


def read_camus_info(cfg_path: str | Path) -> dict:
    """Parse an Info_<view>.cfg into typed values: ED, ES, NbFrame, Age int; EF, FrameRate float; others str.

    Keys outside `INFO_TYPES` are kept as strings. Raises ValueError naming the file for a malformed line, a
    missing key, a value of the wrong type, or ED/ES outside 1..NbFrame.
    """
    cfg_path = Path(cfg_path)
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: CAMUS info file not found")
    info = {}
    for n, line in enumerate(cfg_path.read_text().splitlines(), start=1):
        if line.strip():
            key, value = _split_info_line(cfg_path, n, line)
            info[key] = _typed(cfg_path, key, value)
    missing = [key for key in INFO_TYPES if key not in info]
    if missing:
        raise ValueError(f"{cfg_path}: missing key(s) {missing}; a CAMUS info file has {list(INFO_TYPES)}")
    if not (1 <= info["ED"] <= info["NbFrame"] and 1 <= info["ES"] <= info["NbFrame"]):
        raise ValueError(f"{cfg_path}: ED {info['ED']} and ES {info['ES']} must lie in "
                         f"1..NbFrame {info['NbFrame']}")
    return info


def read_camus_sequence(patient_dir: str | Path, view: str) -> CamusRecord:
    """Read the half sequence, its labels and Info_<view>.cfg of one patient folder.

    Raises FileNotFoundError or ValueError naming the file for: a missing file, a file that is not NIfTI,
    labels outside 0-3, image and label shapes that disagree, NbFrame that disagrees with the sequence, an
    empty LV (no label 1) in the ED frame.
    """
    patient_dir = Path(patient_dir)
    info = read_camus_info(patient_dir / f"Info_{_check_view(view)}.cfg")
    image_path, label_path = (camus_path(patient_dir, view, p) for p in ("half_sequence", "half_sequence_gt"))
    frames, zooms = _load_nifti(image_path, ndim=3)
    labels, _ = _load_nifti(label_path, ndim=3)
    if frames.shape != labels.shape:
        raise ValueError(f"{label_path}: labels {labels.shape} and {image_path.name} {frames.shape} "
                         f"must have the same (T, H, W) shape")
    if len(frames) != info["NbFrame"]:
        raise ValueError(f"{image_path}: {len(frames)} frames but NbFrame {info['NbFrame']} in Info_{view}.cfg")
    labels = _as_labels(labels, label_path)
    ed_index, es_index = info["ED"] - 1, info["ES"] - 1
    _check_lv(labels[ed_index], f"{label_path} (ED frame {ed_index})")
    return CamusRecord(patient_dir.name, view, _as_uint8(frames), labels, (zooms[1], zooms[0]),
                       ed_index, es_index, info)


def ed_first(record: CamusRecord) -> tuple[np.ndarray, np.ndarray, int]:
    """(frames, labels, ED index) of a half sequence in time order from ED: the few stored ES -> ED are
    reversed, the others returned as they are."""
    if record.ed_index > record.es_index:
        return record.frames[::-1], record.labels[::-1], len(record.frames) - 1 - record.ed_index
    return record.frames, record.labels, record.ed_index


def read_camus_frame(patient_dir: str | Path, view: str, instant: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Read the single-frame ED or ES image and labels: ((H, W) uint8, (H, W) uint8 labels 0-3, (row, col) mm).

    Raises like `read_camus_sequence`; the LV must be present in the frame.
    """
    if instant not in INSTANTS:
        raise ValueError(f"instant {instant!r} must be one of {INSTANTS}")
    image_path, label_path = (camus_path(patient_dir, view, p) for p in (instant, instant + "_gt"))
    image, zooms = _load_nifti(image_path, ndim=2)
    labels, _ = _load_nifti(label_path, ndim=2)
    if image.shape != labels.shape:
        raise ValueError(f"{label_path}: labels {labels.shape} and {image_path.name} {image.shape} "
                         f"must have the same (H, W) shape")
    labels = _as_labels(labels, label_path)
    _check_lv(labels, str(label_path))
    return _as_uint8(image), labels, (zooms[1], zooms[0])


def list_camus_patients(root: str | Path) -> list[Path]:
    """Sorted patient folders (those holding an Info_<view>.cfg) under the dataset root or its database_nifti."""
    root = Path(root)
    base = root / "database_nifti" if (root / "database_nifti").is_dir() else root
    if not base.is_dir():
        raise FileNotFoundError(f"{root}: CAMUS folder not found")
    patients = sorted(p for p in base.iterdir() if p.is_dir() and any(p.glob("Info_*.cfg")))
    if not patients:
        raise ValueError(f"{base}: no patient folders with an Info_2CH.cfg or Info_4CH.cfg")
    return patients


def _gz_path(patient_dir: Path, view: str, part: str) -> Path:
    return patient_dir / f"{patient_dir.name}_{_check_view(view)}_{part}.nii.gz"


def _check_view(view: str) -> str:
    if view not in VIEWS:
        raise ValueError(f"view {view!r} must be one of {VIEWS}")
    return view


def _info_text(case: EchoCase) -> str:
    """Info_<view>.cfg of a case written as frames 0..es_index; EF in integer percent as in the release."""
    n = case.es_index + 1
    lines = ["ED: 1", f"ES: {n}", f"NbFrame: {n}", f"Sex: {case.sex}", f"Age: {int(case.age)}",
             f"ImageQuality: {case.image_quality}", f"EF: {round(100 * case.ef)}", f"FrameRate: {case.fps:g}"]
    return "\n".join(lines) + "\n"


def _split_info_line(path: Path, n: int, line: str) -> tuple[str, str]:
    key, sep, value = line.partition(":")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"{path}: line {n} {line!r} is not a 'Key: value' line")
    return key.strip(), value.strip()


def _typed(path: Path, key: str, value: str):
    kind = INFO_TYPES.get(key, str)
    if kind is str:
        return value
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{path}: {key} is {value!r}, expected a number") from None
    if kind is int and not number.is_integer():
        raise ValueError(f"{path}: {key} is {value!r}, expected an integer")
    return kind(number)


def _save_nifti(path: Path, array: np.ndarray, spacing_mm: float) -> None:
    """Save (T, H, W) or (H, W) uint8 as CAMUS stores it: (W, H, T) or (W, H), zooms (spacing, spacing[, 1])."""
    affine = np.diag([spacing_mm, spacing_mm, 1.0, 1.0])
    image = nib.Nifti1Image(np.ascontiguousarray(np.asarray(array, np.uint8).T), affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _load_nifti(path: Path, ndim: int) -> tuple[np.ndarray, tuple]:
    """Load a NIfTI file as (T, H, W) (ndim 3) or (H, W) (ndim 2) in its stored dtype, with its zooms."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CAMUS file not found")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as error:
        raise ValueError(f"{path} is not a NIfTI file nibabel can read ({error})") from None
    if ndim == 2 and data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim != ndim:
        raise ValueError(f"{path}: array of shape {data.shape}, expected {ndim} axes")
    return data.T, tuple(float(z) for z in image.header.get_zooms())


def _as_uint8(images: np.ndarray) -> np.ndarray:
    """Grey images as uint8; float or wider integer data is rounded and clipped to 0..255."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _as_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.rint(labels)):
        raise ValueError(f"{path}: labels must be whole numbers in {sorted(CAMUS_LABELS)}")
    _check_labels(labels, str(path))
    return labels.astype(np.uint8)


def _check_labels(labels: np.ndarray, where: str) -> None:
    bad = np.setdiff1d(np.unique(labels), list(CAMUS_LABELS))
    if bad.size:
        raise ValueError(f"{where}: label values {bad.tolist()} outside the CAMUS labels {CAMUS_LABELS}")


def _check_lv(labels: np.ndarray, where: str) -> None:
    if not (labels == LV).any():
        raise ValueError(f"{where}: empty LV, no pixel has label {LV} ({CAMUS_LABELS[LV]})")
