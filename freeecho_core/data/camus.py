"""CAMUS files, both public releases: write an `EchoCase` in either layout, read either back.

The current (NIfTI) release, identical for the real download and for the phantom:
    <root>/database_nifti/<patient>/<patient>_<view>_{half_sequence,ED,ES}[_gt].nii.gz
    <root>/database_nifti/<patient>/Info_<view>.cfg          (view "2CH" or "4CH"; a patient may hold both)
On disk nibabel gives (W, H, T) for sequences and (W, H) for single frames; in memory arrays are (T, H, W) and
(H, W). Images and labels are uint8, labels are CAMUS labels 0-3 (`case.CAMUS_LABELS`); the header zooms are the
pixel size in mm (x = column, y = row) and 1 for time. Every frame of the half sequence is labelled.

The original 2019 release (MetaImage: a text header .mhd beside its raw pixels .raw), read through SimpleITK (the
optional extra `pip install -e .[mhd]`):
    <root>/training/<patient>/<patient>_<view>_{sequence,ED,ES}.mhd, <patient>_<view>_{ED,ES}_gt.mhd (+ .raw)
    <root>/training/<patient>/Info_<view>.cfg
Only the ED and ES frames are labelled; the cfg gives LVedv, LVesv and LVef (percent) instead of EF, and no
FrameRate (the clips of such a dataset have an unknown frame rate).

Info_<view>.cfg holds "Key: value" lines; ED and ES are 1-based frame numbers in the sequence. Most real
half sequences run ED -> ES (ED 1, ES NbFrame), some run ES -> ED (ED NbFrame, ES 1): readers report the
indices as stored and never reorder frames (`ed_first` does, for the clips).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from freeecho_core.data.case import CAMUS_LABELS, EchoCase
from freeecho_core.files import read_text_file

VIEWS = ("2CH", "4CH")
INSTANTS = ("ED", "ES")
INFO_TYPES = {"ED": int, "ES": int, "NbFrame": int, "Sex": str, "Age": int,
              "ImageQuality": str, "EF": float, "FrameRate": float}  # every key of a current-release Info file
INFO_2019_TYPES = {"ED": int, "ES": int, "NbFrame": int, "Sex": str, "Age": int, "ImageQuality": str,
                   "LVedv": float, "LVesv": float, "LVef": float}  # every key of a 2019-release Info file
RELEASES = ("nifti", "mhd")  # the current release and the original 2019 one
MHD_EXTRA = "reading the 2019 CAMUS release (MetaImage .mhd files) needs SimpleITK: pip install -e '.[mhd]'"
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
    labelled: the frames whose labels are annotations (every frame in the current release, ED and ES in the
    2019 one, whose other frames hold zeros in `labels`).
    """

    patient: str
    view: str
    frames: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float]
    ed_index: int
    es_index: int
    info: dict
    labelled: tuple[int, ...] = field(default=())


def release_of(patient_dir: str | Path, view: str) -> str:
    """"mhd" when the patient's view is stored as the 2019 release's <patient>_<view>_sequence.mhd, else "nifti"."""
    patient_dir = Path(patient_dir)
    return "mhd" if (patient_dir / f"{patient_dir.name}_{_check_view(view)}_sequence.mhd").is_file() else "nifti"


def camus_path(patient_dir: str | Path, view: str, part: str) -> Path:
    """The file of one `part` ("half_sequence", "ED", "ES", each optionally + "_gt") of a patient's view.

    Some copies of CAMUS are gunzipped: a plain .nii is used when the .nii.gz is absent. In the 2019 release
    the files are .mhd and the sequence is called "sequence".
    """
    patient_dir = Path(patient_dir)
    if release_of(patient_dir, view) == "mhd":
        return patient_dir / f"{patient_dir.name}_{view}_{part.replace('half_sequence', 'sequence')}.mhd"
    path = _gz_path(patient_dir, view, part)
    plain = path.with_suffix("")
    return plain if not path.exists() and plain.exists() else path


def write_camus_case(root: str | Path, case: EchoCase, release: str = "nifti") -> Path:
    """Write `case` as CAMUS files of `release` ("nifti": under `root`/database_nifti/<case_id>/; "mhd": the
    2019 layout under `root`/training/<case_id>/) and return that folder.

    The half sequence is frames 0..es_index (ED -> ES); the ED and ES files are its first and last frames.
    """
    _check_view(case.view)
    _check_labels(case.labels, f"case {case.case_id}")
    if release not in RELEASES:
        raise ValueError(f"release must be one of {RELEASES}, got {release!r}")
    if case.sex not in SEXES or case.image_quality not in IMAGE_QUALITIES:
        raise ValueError(f"case {case.case_id}: sex {case.sex!r} must be one of {SEXES} and image_quality "
                         f"{case.image_quality!r} one of {IMAGE_QUALITIES}")
    patient_dir = Path(root) / ("database_nifti" if release == "nifti" else "training") / case.case_id
    patient_dir.mkdir(parents=True, exist_ok=True)
    half = slice(0, case.es_index + 1)
    parts = [("half_sequence", case.frames[half], case.labels[half]), ("ED", case.frames[0], case.labels[0]),
             ("ES", case.frames[case.es_index], case.labels[case.es_index])]
    for part, frames, labels in parts:
        if release == "nifti":
            _save_nifti(_gz_path(patient_dir, case.view, part), frames, case.pixel_spacing_mm)
            _save_nifti(_gz_path(patient_dir, case.view, part + "_gt"), labels, case.pixel_spacing_mm)
        else:
            stem = f"{case.case_id}_{case.view}_{part.replace('half_sequence', 'sequence')}"
            _save_mhd(patient_dir / f"{stem}.mhd", frames, case.pixel_spacing_mm)
            if part != "half_sequence":  # the 2019 release labels only ED and ES
                _save_mhd(patient_dir / f"{stem}_gt.mhd", labels, case.pixel_spacing_mm)
    text = _info_text(case) if release == "nifti" else _info_2019_text(case)
    (patient_dir / f"Info_{case.view}.cfg").write_text(text)
    return patient_dir


def read_camus_info(cfg_path: str | Path) -> dict:
    """Parse an Info_<view>.cfg into typed values: ED, ES, NbFrame, Age int; EF, FrameRate float; others str.

    Both releases: a 2019 file (LVedv, LVesv, LVef, no EF or FrameRate) gets EF = LVef and no FrameRate. Keys
    outside the release's set are kept as strings. Raises ValueError naming the file for a malformed line, a
    missing key, a value of the wrong type, or ED/ES outside 1..NbFrame.
    """
    cfg_path = Path(cfg_path)
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: CAMUS info file not found")
    info = {}
    for n, line in enumerate(read_text_file(cfg_path, "a CAMUS info file of 'Key: value' lines").splitlines(),
                             start=1):
        if line.strip():
            key, value = _split_info_line(cfg_path, n, line)
            info[key] = _typed(cfg_path, key, value)
    expected = INFO_2019_TYPES if "LVef" in info and "EF" not in info else INFO_TYPES
    missing = [key for key in expected if key not in info]
    if missing:
        raise ValueError(f"{cfg_path}: missing key(s) {missing}; a CAMUS info file has {list(INFO_TYPES)} "
                         f"(the 2019 release: {list(INFO_2019_TYPES)})")
    if expected is INFO_2019_TYPES:
        info["EF"] = info["LVef"]
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
    image_path = camus_path(patient_dir, view, "half_sequence")
    frames, zooms = _load_image(image_path, ndim=3)
    if len(frames) != info["NbFrame"]:
        raise ValueError(f"{image_path}: {len(frames)} frames but NbFrame {info['NbFrame']} in Info_{view}.cfg")
    ed_index, es_index = info["ED"] - 1, info["ES"] - 1
    if release_of(patient_dir, view) == "mhd":  # labels of ED and ES only, from their own files
        labels, label_path = np.zeros(frames.shape, np.uint8), camus_path(patient_dir, view, "ED_gt")
        for index, instant in ((ed_index, "ED"), (es_index, "ES")):
            path = camus_path(patient_dir, view, f"{instant}_gt")
            frame = _as_labels(_load_image(path, ndim=2)[0], path)
            if frame.shape != frames.shape[1:]:
                raise ValueError(f"{path}: labels {frame.shape} and {image_path.name} frames {frames.shape[1:]} "
                                 f"must have the same (H, W) shape")
            labels[index] = frame
        labelled = tuple(sorted({ed_index, es_index}))
    else:
        label_path = camus_path(patient_dir, view, "half_sequence_gt")
        labels, _ = _load_image(label_path, ndim=3)
        if frames.shape != labels.shape:
            raise ValueError(f"{label_path}: labels {labels.shape} and {image_path.name} {frames.shape} "
                             f"must have the same (T, H, W) shape")
        labels, labelled = _as_labels(labels, label_path), tuple(range(len(frames)))
    _check_lv(labels[ed_index], f"{label_path} (ED frame {ed_index})")
    _check_ed_larger(labels, ed_index, es_index, patient_dir / f"Info_{view}.cfg")
    return CamusRecord(patient_dir.name, view, _as_uint8(frames), labels, (zooms[1], zooms[0]),
                       ed_index, es_index, info, labelled)


def ed_first(record: CamusRecord) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """(frames, {frame: labels} of the labelled frames, ED index) of a half sequence in time order from ED: the
    few stored ES -> ED are reversed, the others returned as they are."""
    labels = {k: record.labels[k] for k in record.labelled}
    if record.ed_index > record.es_index:
        last = len(record.frames) - 1
        return record.frames[::-1], {last - k: v for k, v in labels.items()}, last - record.ed_index
    return record.frames, labels, record.ed_index


def read_camus_frame(patient_dir: str | Path, view: str, instant: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Read the single-frame ED or ES image and labels: ((H, W) uint8, (H, W) uint8 labels 0-3, (row, col) mm).

    Raises like `read_camus_sequence`; the LV must be present in the frame.
    """
    if instant not in INSTANTS:
        raise ValueError(f"instant {instant!r} must be one of {INSTANTS}")
    image_path, label_path = (camus_path(patient_dir, view, p) for p in (instant, instant + "_gt"))
    image, zooms = _load_image(image_path, ndim=2)
    labels, _ = _load_image(label_path, ndim=2)
    if image.shape != labels.shape:
        raise ValueError(f"{label_path}: labels {labels.shape} and {image_path.name} {image.shape} "
                         f"must have the same (H, W) shape")
    labels = _as_labels(labels, label_path)
    _check_lv(labels, str(label_path))
    return _as_uint8(image), labels, (zooms[1], zooms[0])


def list_camus_patients(root: str | Path) -> list[Path]:
    """Sorted patient folders (those holding an Info_<view>.cfg) under the dataset root, its database_nifti (the
    current release) or its training folder (the 2019 release)."""
    root = Path(root)
    base = next((root / sub for sub in ("database_nifti", "training") if (root / sub).is_dir()), root)
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


def _info_2019_text(case: EchoCase) -> str:
    """Info_<view>.cfg as the 2019 release writes it: LV volumes in ml and LVef in percent, no frame rate.
    The volumes are the single-plane method of disks of the case's ED and ES LV labels."""
    from freeecho_core.data.echonet import lv_tracings, method_of_disks_volume

    n = case.es_index + 1
    edv, esv = (method_of_disks_volume(lv_tracings(case.labels[k] == LV), case.pixel_spacing_mm / 10)
                for k in (0, case.es_index))
    lines = ["ED: 1", f"ES: {n}", f"NbFrame: {n}", f"Sex: {case.sex}", f"Age: {int(case.age)}",
             f"ImageQuality: {case.image_quality}", f"LVedv: {edv:.2f}", f"LVesv: {esv:.2f}",
             f"LVef: {100 * case.ef:.2f}"]
    return "\n".join(lines) + "\n"


def _split_info_line(path: Path, n: int, line: str) -> tuple[str, str]:
    key, sep, value = line.partition(":")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"{path}: line {n} {line!r} is not a 'Key: value' line")
    return key.strip(), value.strip()


def _typed(path: Path, key: str, value: str):
    kind = (INFO_TYPES | INFO_2019_TYPES).get(key, str)
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


def _save_mhd(path: Path, array: np.ndarray, spacing_mm: float) -> None:
    """Save (T, H, W) or (H, W) uint8 as the 2019 release stores it: a MetaImage header path (.mhd) naming its raw
    pixels (.raw), always 3-D (a single frame is W x H x 1), x fastest."""
    array = np.asarray(array, np.uint8)
    volume = array[None] if array.ndim == 2 else array
    T, H, W = volume.shape
    raw = path.with_suffix(".raw")
    raw.write_bytes(np.ascontiguousarray(volume).tobytes())
    header = ["ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
              "CompressedData = False", "TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = 0 0 0",
              "CenterOfRotation = 0 0 0", "AnatomicalOrientation = RAI",
              f"ElementSpacing = {spacing_mm:g} {spacing_mm:g} 1", f"DimSize = {W} {H} {T}",
              "ElementType = MET_UCHAR", f"ElementDataFile = {raw.name}"]
    path.write_text("\n".join(header) + "\n")


def _load_image(path: Path, ndim: int) -> tuple[np.ndarray, tuple]:
    """A CAMUS image or label file of either release as (T, H, W) (ndim 3) or (H, W) (ndim 2), with its
    zooms (x, y[, t])."""
    return _load_mhd(path, ndim) if path.suffix == ".mhd" else _load_nifti(path, ndim)


def _load_mhd(path: Path, ndim: int) -> tuple[np.ndarray, tuple]:
    """Load a MetaImage file through SimpleITK (whose arrays are already (T, H, W)), with its spacing."""
    try:
        import SimpleITK as sitk
    except ImportError:
        raise ImportError(f"{path}: {MHD_EXTRA}") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CAMUS file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise ValueError(f"{path} is not a MetaImage file SimpleITK can read ({reason})") from None
    data = sitk.GetArrayFromImage(image)
    if ndim == 2 and data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != ndim:
        raise ValueError(f"{path}: array of shape {data.shape}, expected {ndim} axes")
    return data, tuple(float(z) for z in image.GetSpacing())


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


def _check_ed_larger(labels: np.ndarray, ed_index: int, es_index: int, cfg_path: Path) -> None:
    """End diastole is the largest LV of the cycle: a cfg whose ED frame has a smaller LV than its ES frame has
    ED and ES swapped (the clip would be taken in reverse), so it is refused."""
    ed_area, es_area = (int((labels[k] == 1).sum()) for k in (ed_index, es_index))
    if es_area > ed_area:
        raise ValueError(f"{cfg_path}: ED {ed_index + 1} and ES {es_index + 1} look swapped: the LV has {ed_area} "
                         f"pixels in the ED frame but {es_area} in the ES frame; end diastole is the larger")


def _check_lv(labels: np.ndarray, where: str) -> None:
    if not (labels == LV).any():
        raise ValueError(f"{where}: empty LV, no pixel has label {LV} ({CAMUS_LABELS[LV]})")
