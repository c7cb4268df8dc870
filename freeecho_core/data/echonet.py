"""EchoNet-Dynamic files (book/design.md, section 4): LV tracings, the method of disks, writing and reading the dataset.

Layout, identical for the real download and for the phantom:
    <root>/FileList.csv        FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split (no .avi)
    <root>/VolumeTracings.csv  FileName,X1,Y1,X2,Y2,Frame (with .avi; per traced frame the long axis, then chords)
    <root>/Videos/<FileName>.avi  112 x 112 MJPG, 3 equal channels
Tracing coordinates are pixels of the video frame, X the column and Y the row, pixel centres at integers. The LV is
the polygon X1[1:], Y1[1:] followed by the reversed X2[1:], Y2[1:]; ED is the traced frame with the larger area.
Volumes use the single-plane method of disks (Lang et al., J Am Soc Echocardiogr 2015, chamber quantification):
V = pi / 4 * h * sum_i d_i^2, with d_i the chord lengths and h = L / n the long-axis length over the chord count.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import map_coordinates

from freeecho_core.data.case import EchoCase
from freeecho_core.data.clips import pad_to_square
from freeecho_core.files import read_text_file, staged_folder

FILELIST_TYPES = {"FileName": str, "EF": float, "ESV": float, "EDV": float, "FrameHeight": int,
                  "FrameWidth": int, "FPS": float, "NumberOfFrames": int, "Split": str}
TRACING_TYPES = {"FileName": str, "X1": float, "Y1": float, "X2": float, "Y2": float, "Frame": int}
SPLITS = ("TRAIN", "VAL", "TEST")
VIDEO_SIZE = 112  # EchoNet frames are 112 x 112
LV = 1  # CAMUS label of the LV cavity in `EchoCase.labels`
SUPERSAMPLE = 8  # sub-pixels per pixel side when rasterising a tracing polygon
SHIFT = 4  # fractional bits of the polygon vertices given to cv2.fillPoly


@dataclass
class EchoNetRecord:
    """One EchoNet video with its labels.

    frames: (T, H, W) uint8 grey frames.
    ed_index, es_index: traced frames of end diastole (larger LV area) and end systole (smaller).
    ed_mask, es_mask: (H, W) bool LV masks rasterised from the tracings (`mask_from_tracings`).
    ed_tracing, es_tracing: (K, 4) tracing rows (X1, Y1, X2, Y2), the long axis first.
    ef: ejection fraction in percent; esv, edv: volumes in mL; fps; split: TRAIN, VAL or TEST (FileList.csv).
    """

    filename: str
    frames: np.ndarray
    ed_index: int
    es_index: int
    ed_mask: np.ndarray
    es_mask: np.ndarray
    ed_tracing: np.ndarray
    es_tracing: np.ndarray
    ef: float
    esv: float
    edv: float
    fps: float
    split: str


def lv_tracings(lv_mask: np.ndarray, n_chords: int = 20) -> np.ndarray:
    """EchoNet tracing of an (H, W) LV mask: (n_chords + 1, 4) rows (X1, Y1, X2, Y2) in pixel coordinates.

    Row 0 is the long axis from the apex (X1, Y1) to the base midpoint (X2, Y2): the principal axis of the mask
    pixels through their centroid, cut where it leaves the mask. The apex is the end nearer the top of the image
    (apical views have the probe at the top). Rows 1.. are chords perpendicular to the axis at the disk centres
    (i + 1/2) L / n_chords from the apex; (X1, Y1) lies on the -x side of an axis pointing down the image,
    (X2, Y2) on the other. The boundary is the 0.5 level of the bilinearly interpolated mask, i.e. the pixel
    edges, so chord lengths are the mask's own widths.
    """
    mask = np.asarray(lv_mask, bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f"lv_tracings needs a non-empty (H, W) LV mask, got shape {mask.shape}, "
                         f"{mask.sum()} pixels")
    field = mask.astype(np.float64)
    c, u = principal_axis(mask)
    to_base, to_apex = _boundary_distance(field, np.stack([c, c]), np.stack([u, -u]))
    apex, base = c - to_apex * u, c + to_base * u
    p = apex + ((np.arange(n_chords) + 0.5) / n_chords)[:, None] * (base - apex)
    v = np.broadcast_to([-u[1], u[0]], p.shape)
    d1, d2 = _boundary_distance(field, p, v), _boundary_distance(field, p, -v)
    chords = np.hstack([p + d1[:, None] * v, p - d2[:, None] * v])
    return np.vstack([np.concatenate([apex, base]), chords])


def mask_from_tracings(rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool LV mask of one traced frame: the pixels at least half inside the EchoNet polygon.

    The polygon X1[1:], Y1[1:] + reversed X2[1:], Y2[1:] is filled by cv2.fillPoly on a grid SUPERSAMPLE times
    finer; a pixel belongs to the mask when at least half of its sub-pixels do.
    """
    polygon = _polygon(rows)
    H, W = shape
    fine = np.zeros((H * SUPERSAMPLE, W * SUPERSAMPLE), np.uint8)
    vertices = np.round(((polygon + 0.5) * SUPERSAMPLE - 0.5) * 2**SHIFT).astype(np.int32)
    cv2.fillPoly(fine, [vertices], 1, lineType=cv2.LINE_8, shift=SHIFT)
    return fine.reshape(H, SUPERSAMPLE, W, SUPERSAMPLE).mean(axis=(1, 3)) >= 0.5


def method_of_disks_volume(rows: np.ndarray, pixel_spacing_cm: float) -> float:
    """LV volume in mL (cm^3) of one traced frame by the method of disks: pi / 4 * h * sum d_i^2, h = L / n."""
    rows = _check_rows(rows)
    L = np.hypot(*(rows[0, 2:] - rows[0, :2]))
    d = np.hypot(*(rows[1:, 2:] - rows[1:, :2]).T)
    h = L / len(d)
    return float(np.pi / 4 * h * np.sum(d**2) * pixel_spacing_cm**3)


def write_echonet_dataset(root: str | Path, cases: list[EchoCase], splits: list[str]) -> Path:
    """Write `cases` as an EchoNet-Dynamic folder at `root` (new or empty) and return it.

    Each frame is zero-padded to a square (at the bottom, or equally left and right) so that pixels stay square,
    then resized to 112 x 112 (cv2.INTER_AREA); the pixel size becomes pixel_spacing_mm * side / 112. The ED
    (frame 0) and ES (es_index) LVs are traced at the case's resolution and the tracings scaled to 112 pixels;
    EDV, ESV and EF come from those tracings. VolumeTracings lists ES before ED: the EchoNet-Dynamic loader
    (echonet/datasets/echo.py) takes a video's last traced frame as the large (diastolic) one. Everything is
    written into a temporary folder beside `root` and moved into place at the end.
    """
    root, cases, splits = Path(root), list(cases), list(splits)
    _check_write_request(root, cases, splits)
    with staged_folder(root, "EchoNet datasets") as staging:
        _write_dataset(staging, cases, splits)
    return root


def read_filelist(root: str | Path) -> list[dict]:
    """Rows of `root`/FileList.csv, typed (`FILELIST_TYPES`); FileName without .avi, Split upper-case.

    Raises a ValueError naming the file and line for a Split other than TRAIN/VAL/TEST, a frame rate, size or
    frame count that is not positive, and a FileName listed twice."""
    path = Path(root) / "FileList.csv"
    rows, first_line = [], {}
    for n, row in _read_csv(path, FILELIST_TYPES):
        typed = {c: _value(path, n, c, row[c], kind) for c, kind in FILELIST_TYPES.items()}
        typed |= {"FileName": _stem(typed["FileName"]), "Split": typed["Split"].upper()}
        if typed["Split"] not in SPLITS:
            raise ValueError(f"{path}: line {n}, Split is {row['Split']!r}, expected one of {', '.join(SPLITS)}")
        for column in ("FPS", "FrameHeight", "FrameWidth", "NumberOfFrames"):
            if not typed[column] > 0:
                raise ValueError(f"{path}: line {n}, {column} is {row[column]!r}, expected a positive number")
        if typed["FileName"] in first_line:
            raise ValueError(f"{path}: line {n} lists {typed['FileName']} again (first on line "
                             f"{first_line[typed['FileName']]}); each video must appear once")
        first_line[typed["FileName"]] = n
        rows.append(typed)
    return rows


def read_tracings(root: str | Path) -> dict[str, dict[int, np.ndarray]]:
    """`root`/VolumeTracings.csv as {file name without .avi: {frame: (K, 4) rows (X1, Y1, X2, Y2)}}, file order."""
    path = Path(root) / "VolumeTracings.csv"
    tracings = {}
    for n, row in _read_csv(path, TRACING_TYPES):
        xy = [_value(path, n, c, row[c], float) for c in ("X1", "Y1", "X2", "Y2")]
        frame = _value(path, n, "Frame", row["Frame"], int)
        name = _stem(_value(path, n, "FileName", row["FileName"], str))
        tracings.setdefault(name, {}).setdefault(frame, []).append(xy)
    return {name: {f: np.array(r) for f, r in frames.items()} for name, frames in tracings.items()}


def traced_videos(filelist: list[dict], tracings: dict[str, dict]) -> tuple[list[dict], list[str]]:
    """Split FileList rows into those with usable ED and ES tracings and the names of those without: the real
    release has videos with no or one traced frame, which EchoNet's own loader skips; a tracing that is not a
    polygon (fewer than 3 rows, non-finite values) or encloses less than one pixel gives no LV mask either."""
    usable, skipped = [], []
    for row in filelist:
        (usable if usable_tracings(tracings.get(row["FileName"], {})) else skipped).append(row)
    return usable, [row["FileName"] for row in skipped]


def usable_tracings(tracings_for_video: dict[int, np.ndarray]) -> bool:
    """Two or more traced frames, each a polygon of at least one square pixel."""
    try:
        return len(tracings_for_video) >= 2 and all(_polygon_area(_polygon(rows)) >= 1.0
                                                    for rows in tracings_for_video.values())
    except ValueError:
        return False


def skipped_message(root: str | Path, skipped: list[str], total: int, what: str = "videos") -> str:
    """The one-line summary of the videos left out for lack of usable tracings."""
    return (f"{Path(root) / 'VolumeTracings.csv'}: skipped {len(skipped)} of {total} {what} without usable ED/ES "
            f"tracings (fewer than two traced frames, or a tracing of less than one pixel), e.g. "
            f"{', '.join(skipped[:3])}")


def read_video(path: str | Path, n_frames: int | None = None) -> np.ndarray:
    """(T, H, W) uint8 grey frames of a video (all of them, or the first `n_frames`) via cv2.VideoCapture.

    Raises FileNotFoundError or ValueError naming the file when it is missing, cannot be opened, decodes no
    frame, or has fewer than `n_frames` frames.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open it as a video")
    frames = []
    while n_frames is None or len(frames) < n_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    capture.release()
    if not frames:
        raise ValueError(f"{path}: decodes zero frames")
    if n_frames is not None and len(frames) < n_frames:
        raise ValueError(f"{path}: has {len(frames)} frames, {n_frames} were asked for")
    return np.stack(frames)


def ed_es_frames(tracings_for_video: dict[int, np.ndarray]) -> tuple[int, int]:
    """(ED, ES) frame numbers of one video's tracings: the traced frames with the largest and smallest LV area."""
    if len(tracings_for_video) < 2:
        raise ValueError(f"ED and ES need two traced frames, got frames {sorted(tracings_for_video)}")
    area = {frame: _polygon_area(_polygon(rows)) for frame, rows in tracings_for_video.items()}
    by_area = sorted(area, key=area.get)
    return by_area[-1], by_area[0]


def read_echonet_video(root: str | Path, filename: str, filelist: list[dict] | None = None,
                       tracings: dict | None = None) -> EchoNetRecord:
    """Read one video of an EchoNet folder with its ED/ES frames, LV masks and FileList values.

    `filename` may carry .avi or not. `filelist` and `tracings` (from `read_filelist`, `read_tracings`) can be
    passed to avoid parsing the CSV files again for every video.
    """
    root, name = Path(root), _stem(filename)
    filelist = read_filelist(root) if filelist is None else filelist
    entry = next((row for row in filelist if row["FileName"] == name), None)
    if entry is None:
        raise ValueError(f"{root / 'FileList.csv'}: no row for FileName {name}")
    traced = (read_tracings(root) if tracings is None else tracings).get(name, {})
    try:
        ed, es = ed_es_frames(traced)
    except ValueError as error:
        raise ValueError(f"{root / 'VolumeTracings.csv'}: {name}.avi: {error}") from None
    video = root / "Videos" / f"{name}.avi"
    frames = read_video(video)
    if frames.shape[1:] != (entry["FrameHeight"], entry["FrameWidth"]):
        raise ValueError(f"{video}: decodes to {frames.shape[2]} x {frames.shape[1]} pixels, but FileList.csv gives "
                         f"{entry['FrameWidth']} x {entry['FrameHeight']} (the tracings are in its pixels)")
    if len(frames) < entry["NumberOfFrames"]:
        raise ValueError(f"{video}: decodes {len(frames)} frames, but FileList.csv gives NumberOfFrames "
                         f"{entry['NumberOfFrames']} (a truncated or damaged video?)")
    if max(ed, es) >= len(frames) or min(ed, es) < 0:
        raise ValueError(f"{root / 'VolumeTracings.csv'}: traced frames {ed}, {es} of {name}.avi lie outside "
                         f"its {len(frames)} frames")
    ed_mask, es_mask = (mask_from_tracings(traced[f], frames.shape[1:]) for f in (ed, es))
    for frame, mask in ((ed, ed_mask), (es, es_mask)):
        if not mask.any():
            raise ValueError(f"{root / 'VolumeTracings.csv'}: the tracing of {name}.avi frame {frame} covers no "
                             f"pixel centre; an LV mask cannot be made from it")
    return EchoNetRecord(name, frames, ed, es, ed_mask, es_mask, traced[ed], traced[es], entry["EF"],
                         entry["ESV"], entry["EDV"], entry["FPS"], entry["Split"])


def principal_axis(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (x, y) of the mask pixels and the unit major axis of their scatter, pointing down the image."""
    ys, xs = np.nonzero(mask)
    P = np.stack([xs, ys], axis=1).astype(np.float64)
    c = P.mean(axis=0)
    _, eigenvectors = np.linalg.eigh((P - c).T @ (P - c))
    u = eigenvectors[:, -1]
    return c, (-u if (u[1], u[0]) < (0, 0) else u)


def _boundary_distance(field: np.ndarray, origins: np.ndarray, directions: np.ndarray,
                       step: float = 1 / 32) -> np.ndarray:
    """(K,) distance from each origin along its unit direction to the first 0.5 crossing of `field`.

    field: (H, W) float in [0, 1], sampled bilinearly (zero outside); origins, directions: (K, 2) as (x, y).
    """
    H, W = field.shape
    s = np.arange(0.0, np.hypot(H, W) + 2, step)
    xy = origins[:, None, :] + s[None, :, None] * directions[:, None, :]
    values = map_coordinates(field, [xy[..., 1].ravel(), xy[..., 0].ravel()], order=1,
                             mode="grid-constant").reshape(xy.shape[:2])
    first = np.argmax(values < 0.5, axis=1)
    k, before = np.arange(len(origins)), np.maximum(first - 1, 0)
    v0, v1 = values[k, before], values[k, first]
    crossing = s[before] + step * (v0 - 0.5) / np.maximum(v0 - v1, 1e-12)
    return np.where(first > 0, crossing, 0.0)


def _check_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2 or rows.shape[1] != 4 or len(rows) < 3 or not np.isfinite(rows).all():
        raise ValueError(f"tracing rows must be finite (K >= 3, 4) as (X1, Y1, X2, Y2), got shape {rows.shape}")
    return rows


def _polygon(rows: np.ndarray) -> np.ndarray:
    """(2 (K - 1), 2) LV polygon (x, y) of tracing rows: X1[1:], Y1[1:] then reversed X2[1:], Y2[1:]."""
    rows = _check_rows(rows)
    return np.concatenate([rows[1:, 0:2], rows[:0:-1, 2:4]])


def _polygon_area(polygon: np.ndarray) -> float:
    """Shoelace area of an (N, 2) polygon in square pixels."""
    x, y = polygon.T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _check_write_request(root: Path, cases: list[EchoCase], splits: list[str]) -> None:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; an EchoNet dataset is written "
                              f"to a new one")
    if len(splits) != len(cases):
        raise ValueError(f"{len(cases)} cases but {len(splits)} splits; give one split per case")
    bad = sorted({s for s in splits if s not in SPLITS})
    if bad:
        raise ValueError(f"splits {bad} must be one of {SPLITS}")
    names = [case.case_id for case in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case ids must be unique (they name the videos), got {names}")


def _write_dataset(folder: Path, cases: list[EchoCase], splits: list[str]) -> None:
    (folder / "Videos").mkdir()
    filelist, tracings = [], []
    for case, split in zip(cases, splits):
        row, rows = _write_case(folder / "Videos", case, split)
        filelist.append(row)
        tracings.extend(rows)
    _write_csv(folder / "FileList.csv", list(FILELIST_TYPES), filelist)
    _write_csv(folder / "VolumeTracings.csv", list(TRACING_TYPES), tracings)


def _write_case(videos: Path, case: EchoCase, split: str) -> tuple[list, list[list]]:
    """Write one case's AVI; return its FileList row and its VolumeTracings rows (ES then ED)."""
    frames, lv = pad_to_square(case.frames), pad_to_square(case.labels == LV)
    scale = VIDEO_SIZE / frames.shape[1]
    _write_avi(videos / f"{case.case_id}.avi", _resize(frames), case.fps)
    traced = {}
    for frame in (case.es_index, 0):
        if not lv[frame].any():
            raise ValueError(f"case {case.case_id}: empty LV (no label {LV}) in frame {frame}")
        traced[frame] = (lv_tracings(lv[frame]) + 0.5) * scale - 0.5
    spacing_cm = case.pixel_spacing_mm / 10 / scale
    edv, esv = (method_of_disks_volume(traced[f], spacing_cm) for f in (0, case.es_index))
    row = [case.case_id, 100 * (edv - esv) / edv, esv, edv, VIDEO_SIZE, VIDEO_SIZE, case.fps, len(frames), split]
    return row, [[f"{case.case_id}.avi", *xy, frame] for frame, rows in traced.items() for xy in rows]


def _resize(frames: np.ndarray) -> np.ndarray:
    """(T, S, S) uint8 -> (T, 112, 112) with cv2.INTER_AREA."""
    size = (VIDEO_SIZE, VIDEO_SIZE)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def _write_avi(path: Path, frames: np.ndarray, fps: float) -> None:
    """(T, H, W) uint8 -> MJPG AVI with 3 equal channels, as the EchoNet videos are stored."""
    _, H, W = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (W, H), True)
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open an MJPG writer at {fps} fps")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[f"{v:.10g}" if isinstance(v, float) else v for v in row] for row in rows])


def _read_csv(path: Path, columns: dict) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a CSV file that must have all `columns`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EchoNet file not found")
    reader = csv.DictReader(io.StringIO(read_text_file(path, f"a CSV file with the header {','.join(columns)}"),
                                        newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected the header {','.join(columns)}")
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as err:
        raise ValueError(f"{path}: line {reader.line_num} is not valid CSV ({err})") from None


def _value(path: Path, line: int, column: str, text: str | None, kind: type):
    """One CSV cell as `kind` (str, float or int), or a ValueError naming the file, line and column."""
    if kind is str:
        if not text or not text.strip():
            raise ValueError(f"{path}: line {line}, {column} is empty")
        return text.strip()
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: line {line}, {column} is {text!r}, expected a {kind.__name__}") from None
    if kind is int and not number.is_integer():
        raise ValueError(f"{path}: line {line}, {column} is {text!r}, expected an integer")
    return kind(number)


def _stem(filename: str) -> str:
    """A video name without its .avi extension."""
    return filename[:-4] if filename.lower().endswith(".avi") else filename
