"""Videos from a user's own end-diastolic map (paper section 2 end to end): `freeecho generate` and notebook 06.

A map is a PNG or NIfTI file of integer labels, of any size, in either convention (DESIGN.md section 2):
- CAMUS: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium; the scan sector is added as a geometric
  fan (apex at the top centre) that covers every labelled pixel;
- the method's 5 labels: 0 outside the sector, 1 sector tissue, 2 LV, 3 myocardium, 4 left atrium.
It is resized to the model's size with nearest neighbour (then given its fan), turned into the OT-matched pseudo video, noised to
sigma[t_i] and denoised from there (`evaluate.generate`, the same code as the study). Each sample is written as
an AVI (MJPG) or MP4 file, atomically, with the uint8 frames and a JSON record of how they were made.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from freeecho_core.checkpoint import code_version
from freeecho_core.data.case import CAMUS_LABELS, FIVE_LABELS, to_five_labels
from freeecho_core.data.clips import resize_frames, resize_labels_nearest
from freeecho_core.data.phantom import PhantomConfig, make_case
from freeecho_core.evaluate import AUTHORS_CHURN, EvalConfig, Method, generate, load_denoiser
from freeecho_core.pseudo import check_labels, intensity_histogram

CONVENTIONS = ("auto", "camus", "five")
VIDEO_FORMATS = {"avi": "MJPG", "mp4": "mp4v"}  # container -> OpenCV fourcc
# The stored model trained on a 2-core CPU (the cpu profile: 16 frames x 64 x 64, phantom CAMUS data).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "cpu" / "phantom-camus" / \
    "unconditional" / "ema.pt"


@dataclass(frozen=True)
class GenerateConfig:
    start_step: int = 15  # t_i of the 64-step schedule (paper: 15 is best)
    samples: int = 4  # videos per map
    mapping: str = "barycentric"  # OT map: "barycentric" (the paper's reading) or "stochastic" (ours)
    solver: str = "heun"  # "heun" (EDM Algorithm 2) or "euler"
    stochastic_sampler: bool = True  # the authors' churn (S_churn 80)
    seed: int = 0  # sample k uses seed + k
    fps: float = 25.0  # frame rate written into the video files


def read_map(path: str | os.PathLike) -> np.ndarray:
    """An (H, W) int64 label map from a PNG (8- or 16-bit grey; a palette PNG gives its indices) or a NIfTI
    file (.nii, .nii.gz; stored (W, H) or (W, H, 1) as CAMUS does)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: map file not found")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            data = np.asanyarray(nib.load(path).dataobj)
        except Exception as err:
            raise ValueError(f"{path} is not a NIfTI file nibabel can read ({err})") from None
        data = data[..., 0] if data.ndim == 3 and data.shape[2] == 1 else data
        if data.ndim != 2:
            raise ValueError(f"{path}: a map must be one 2-D frame, got an array of shape {data.shape} "
                             f"(for a sequence, save the ED frame's labels)")
        data = data.T
    elif name.endswith(".png"):
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if data is None:
            raise ValueError(f"{path} is not a PNG file OpenCV can read")
        if data.ndim == 3:
            raise ValueError(f"{path}: a colour PNG ({data.shape[2]} channels); a map must be a grey PNG whose "
                             f"pixel values are the labels (CAMUS 0-3 or the 5-label convention 0-4)")
    else:
        raise ValueError(f"{path}: expected a .png, .nii or .nii.gz label map")
    values = np.asarray(data)
    if not np.issubdtype(values.dtype, np.integer) and not np.array_equal(values, np.round(values)):
        raise ValueError(f"{path}: the map holds non-integer values; labels must be integers")
    return values.astype(np.int64)


def map_stem(path) -> str:
    """The file name without .png, .nii or .nii.gz."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


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


def five_label_map(labels: np.ndarray, convention: str = "auto", where: str = "the map") -> np.ndarray:
    """A map in either convention -> the 5-label convention. auto: a map holding label 4 is 5-label, one whose
    largest label is 3 or less is CAMUS (a 5-label map without the left atrium needs convention='five')."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    values = set(np.unique(labels).tolist())
    if convention == "auto":
        convention = "five" if 4 in values else "camus"
    allowed = FIVE_LABELS if convention == "five" else CAMUS_LABELS
    unknown = sorted(values - set(allowed))
    if unknown:
        raise ValueError(f"{where}: labels {unknown} are not in the {convention} convention {allowed}")
    if convention == "camus":
        labels = to_five_labels(labels, fan_sector(labels.shape, labels))
    try:
        return check_labels(labels)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def prepare_map(path: str | os.PathLike, size: int, convention: str = "auto") -> np.ndarray:
    """read_map, nearest-neighbour resize to (size, size), then five_label_map (a CAMUS map's fan is drawn at
    the model's size, so a map gives the same input whatever its resolution)."""
    return five_label_map(resize_labels_nearest(read_map(path), size), convention, where=str(path))


def phantom_target(size: int, frames: int, cases: int = 4, bins: int = 256):
    """The OT target when no dataset is given: the grey-level histogram of a few phantom recordings at the
    model's size (the embedded default data), (centres, weights)."""
    pooled = 0.0
    for index in range(cases):
        case = make_case(0, index, ("2CH", "4CH")[index % 2], PhantomConfig(height=size, frames=frames))
        video = (resize_frames(case.frames, size) / 255.0).clip(0, 1)  # frame by frame: OpenCV takes <= 4 channels
        sector = resize_labels_nearest(case.sector, size).astype(bool)
        centres, weights = intensity_histogram(video, sector, bins)
        pooled = pooled + weights
    return centres, pooled / pooled.sum()


def write_video(path: Path, video: np.ndarray, fps: float) -> Path:
    """(K, S, S) uint8 frames -> an AVI (MJPG) or MP4 (mp4v) file, written to a temporary name then renamed;
    read back to check that every frame decodes."""
    container = path.suffix.lstrip(".")
    if container not in VIDEO_FORMATS:
        raise ValueError(f"{path}: video format must be one of {sorted(VIDEO_FORMATS)}")
    tmp = path.with_name(f".{path.stem}.tmp.{container}")
    K, H, W = video.shape
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*VIDEO_FORMATS[container]), fps, (W, H), isColor=True)
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write {container} files here")
    for frame in video:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    written = int(cv2.VideoCapture(str(tmp)).get(cv2.CAP_PROP_FRAME_COUNT))
    if written != K:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: wrote {K} frames but {written} decode")
    os.replace(tmp, path)
    return path


def generate_from_map(map_path, checkpoint=DEFAULT_CHECKPOINT, out=None, config: GenerateConfig = GenerateConfig(),
                      *, convention: str = "auto", target=None, video_format: str = "avi", device="cpu") -> dict:
    """Generate `config.samples` videos from the ED map at `map_path` with the unconditional model at
    `checkpoint`. target: the OT target (centres, weights), e.g. `EchoClips(...).intensity_histogram()` of the
    training data; default `phantom_target`. With `out`, writes <stem>_<k>.<video_format>, <stem>.npy (uint8
    (n, K, S, S)) and <stem>.json; returns {"map": (S, S) 5-label map, "videos": (n, K, S, S) uint8, "files"}."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint there; train one (freeecho train --profile ...) and "
                                f"pass its ema.pt with --checkpoint")
    D, train_config = load_denoiser(checkpoint, device)
    frames, size = train_config.get("frames", 24), train_config.get("size", 128)
    if D.net.config.cond_channels:
        raise ValueError(f"{checkpoint} is a conditional (Cls-Free) model; Free-Echo samples the unconditional one")
    ed_map = prepare_map(map_path, size, convention)
    target = phantom_target(size, frames) if target is None else target
    kind = "free-echo" if config.mapping == "barycentric" else "free-echo-stochastic"
    method = Method(f"{kind}@{config.start_step}", kind, config.start_step)
    eval_config = EvalConfig(solver=config.solver, stochastic_sampler=config.stochastic_sampler)
    seeds = [config.seed + k for k in range(config.samples)]
    videos = generate(method, ed_map, seeds, {"unconditional": D}, target, frames, eval_config, device)
    videos = ((videos + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    result = {"map": ed_map, "videos": videos, "files": []}
    if out is not None:
        out, stem = Path(out), map_stem(map_path)
        out.mkdir(parents=True, exist_ok=True)
        result["files"] = [write_video(out / f"{stem}_{k}.{video_format}", v, config.fps) for k, v in enumerate(videos)]
        np.save(out / f"{stem}.npy", videos)
        record = {"map": str(map_path), "checkpoint": str(checkpoint), "config": asdict(config), "seeds": seeds,
                  "churn": AUTHORS_CHURN if config.stochastic_sampler else None, "frames": frames, "size": size,
                  "convention": convention, "code_version": code_version()}
        (out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    return result
