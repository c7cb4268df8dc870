"""Videos from a user's own end-diastolic map (paper section 2 end to end): `freeecho generate` and notebook 06.

The map file is read and prepared by `data.maps` (PNG or NIfTI, any size and aspect, CAMUS, 5-label or LV-only
labels), turned into videos by `synthesis.FreeEcho` (the same code as the study), and each sample is written as
an AVI (MJPG) or MP4 file, atomically, at the frame rate of the data the model was trained on, with the uint8
frames and a JSON record of how they were made.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from freeecho_core.checkpoint import code_version, load_model
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.maps import camus_labels_and_sector, map_stem, read_map
from freeecho_core.guidance import Guide
from freeecho_core.files import (check_output_folder, remove_abandoned_staging, save_array_atomically, shared_mode,
                                 write_text_atomically)
from freeecho_core.motion import EF_RANGE, es_frame_of_clips
from freeecho_core.options import at_least, finite_number, option, positive_number, start_step
from freeecho_core.sampler import DEFAULT_SAMPLER, SamplerConfig
from freeecho_core.synthesis import DEFAULT_CHECKPOINT, ECHONET_CHECKPOINT, FreeEcho
from freeecho_core.validate import as_float

VIDEO_FORMATS = {"avi": "MJPG", "mp4": "mp4v"}  # container -> OpenCV fourcc
FPS_RANGE = (1.0, 1000.0)  # frame rates of the video files (echo: 20-200; OpenCV's writers fail far below 1)


def frame_rate(text: str) -> float:
    """An argparse type: a frame rate in FPS_RANGE."""
    return as_float("value", text, *FPS_RANGE)


frame_rate.__name__ = f"frame rate in {FPS_RANGE[0]:g}..{FPS_RANGE[1]:g}"


@dataclass(frozen=True)
class GenerateConfig:
    start_step: int = field(default=15, metadata=option("start step t_i of 64 (paper: 15)", start_step,
                                                        flag="--t-start"))
    samples: int = field(default=4, metadata=option("videos per map; sample k uses seed + k", at_least(1)))
    mapping: str = field(default="barycentric", metadata=option(
        "the OT map of the pseudo image: barycentric (the paper's reading) or stochastic (ours)",
        choices=["barycentric", "stochastic"]))
    sampler: SamplerConfig = DEFAULT_SAMPLER  # the paper's: sampler.PAPER_SAMPLER
    guide: Guide | None = None  # training-free guidance towards the pseudo video (`guidance`); None: the paper's
    seed: int = field(default=0, metadata=option("seed of the first video", at_least(0)))
    fps: float | None = field(default=None, metadata=option(
        "frame rate of the written videos (default: that of the model's training data)", frame_rate))
    ef: float | None = field(default=None, metadata=option(
        "a target ejection fraction (0.05-0.85): the pseudo video beats, its LV contracting to the ES volume this "
        "EF implies (default: a still pseudo video, the paper's)", finite_number))
    es_frame: float | None = field(default=None, metadata=option(
        "frame of end systole in a beating video (default: the median of --data's clips, else the last frame, as in "
        "CAMUS's ED-to-ES sequences)", positive_number))


def write_video(path: Path, video: np.ndarray, fps: float) -> Path:
    """(K, S, S) uint8 frames -> an AVI (MJPG) or MP4 (mp4v) file, written to a temporary name then renamed;
    read back to check that every frame decodes. Nothing is left behind when it fails."""
    container = path.suffix.lstrip(".")
    if container not in VIDEO_FORMATS:
        raise ValueError(f"{path}: video format must be one of {sorted(VIDEO_FORMATS)}")
    fps = as_float("fps", fps, *FPS_RANGE)
    tmp = path.with_name(f".{path.stem}.tmp.{container}")
    K, H, W = video.shape
    try:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*VIDEO_FORMATS[container]), fps, (W, H),
                                 isColor=True)
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot open a {container} writer ({VIDEO_FORMATS[container]}) here")
        for frame in video:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        writer.release()
        written = int(cv2.VideoCapture(str(tmp)).get(cv2.CAP_PROP_FRAME_COUNT))
        if written != K:
            full = shutil.disk_usage(path.parent).free < video.nbytes
            raise OSError(f"{path}: " + ("no space left on device" if full else
                                         f"wrote {K} frames but {written} decode"))
        shared_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_sample_set(out: Path, stem: str, videos: np.ndarray, fps: float, container: str, record: dict) -> list[Path]:
    """One map's videos as a set in `out`: <stem>_<k>.<container> for each sample, <stem>.npy (all frames) and,
    last, <stem>.json (`record`). All are written into a staging folder first and moved into place only when
    every one is complete; the samples of an earlier run of the same map that the new set lacks (more of them,
    or the other container) are removed with the old record. A run that fails or is interrupted leaves `out`
    as it was. Returns the video files."""
    out.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(out / stem)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.partial-{os.getpid()}-", dir=out))
    try:
        names = [f"{stem}_{k}.{container}" for k in range(len(videos))]
        for name, video in zip(names, videos):
            write_video(staging / name, video, fps)
        save_array_atomically(staging / f"{stem}.npy", videos)
        write_text_atomically(staging / f"{stem}.json", json.dumps(record, indent=1) + "\n")
        # Everything is written; renames within the folder need no space.
        sample = re.compile(rf"{re.escape(stem)}_\d+\.({'|'.join(VIDEO_FORMATS)})")
        (out / f"{stem}.json").unlink(missing_ok=True)  # first: videos without their record are not a set
        for old in out.iterdir():
            if sample.fullmatch(old.name) and old.name not in names:
                old.unlink()
        for name in [*names, f"{stem}.npy", f"{stem}.json"]:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / name for name in names]


def video_bytes(video: np.ndarray, fps: float, container: str = "avi") -> bytes:
    """(K, S, S) uint8 frames as the bytes of an AVI (MJPG) or MP4 file (`write_video`, through a temporary
    folder), e.g. for a download link in a page."""
    with tempfile.TemporaryDirectory() as folder:
        return write_video(Path(folder) / f"video.{container}", video, fps).read_bytes()


def model_for_map(map_path, convention: str = "auto") -> Path:
    """The stored unconditional model for a map given without a checkpoint: for an LV-only map (what
    EchoNet-Dynamic's tracings give) the model trained on the EchoNet look (`synthesis.ECHONET_CHECKPOINT`), for a
    map with more structures the CAMUS-look one (`synthesis.DEFAULT_CHECKPOINT`); a ValueError naming the map when
    the model it needs is not stored."""
    _, _, read_as = camus_labels_and_sector(read_map(map_path), convention, str(map_path))
    if read_as != "lv":
        return DEFAULT_CHECKPOINT
    if not ECHONET_CHECKPOINT.is_file():
        raise ValueError(f"{map_path}: an LV-only map takes the model trained on the EchoNet look, and none is stored "
                         f"at {os.path.relpath(ECHONET_CHECKPOINT)}; give --checkpoint (e.g. "
                         f"{os.path.relpath(DEFAULT_CHECKPOINT)}, the CAMUS-look model, which reads the map with a "
                         f"myocardium ring grown around the LV)")
    return ECHONET_CHECKPOINT


def generate_from_map(map_path, checkpoint=None, out=None, config: GenerateConfig = GenerateConfig(),
                      *, convention: str = "auto", data=None, target=None, video_format: str = "avi",
                      device="cpu", progress: bool = False, es_map_path=None) -> dict:
    """Generate `config.samples` videos from the ED map at `map_path` with the unconditional model at
    `checkpoint` (default: the stored model for the map, `model_for_map`). The OT target (centres, weights): `target`, else that of `data`, the model's training dataset
    (`synthesis.ot_target`; its clips also give a beating video's ES frame), else the phantom's
    (`synthesis.phantom_target`). progress: a bar over the sampling steps. With `out`,
    writes <stem>_<k>.<video_format>, <stem>.npy (uint8 (n, K, h, w)) and <stem>.json; returns {"map": (S, S)
    5-label map, "videos": (n, K, h, w) uint8 cropped to the map's aspect, "convention", "fps", "files",
    "label_maps"}. `config.ef` or `es_map_path` (the ES map of the same recording) make the pseudo video beat."""
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"video format must be one of {sorted(VIDEO_FORMATS)}, got {video_format!r}")
    if config.fps is not None:
        as_float("fps", config.fps, *FPS_RANGE)
    if config.ef is not None and not EF_RANGE[0] <= as_float("ef", config.ef) <= EF_RANGE[1]:
        raise ValueError(f"the target EF must lie in [{EF_RANGE[0]}, {EF_RANGE[1]}], got {config.ef}")
    if config.es_frame is not None:
        as_float("es_frame", config.es_frame, above=0)
    if es_map_path is not None and not Path(es_map_path).is_file():
        raise ValueError(f"{es_map_path}: no such ES map file")
    if es_map_path is not None and config.ef is not None:
        raise ValueError("give a target EF or an ES map (which sets the EF), one of the two")
    if out is not None:
        check_output_folder(out, "--out")
    checkpoint = model_for_map(map_path, convention) if checkpoint is None else checkpoint
    model = load_model(checkpoint, device)
    if model.role == "clsfree":
        raise ValueError(f"{checkpoint} is a conditional (Cls-Free) model; Free-Echo samples the unconditional one")
    pipe = FreeEcho.from_model(model, data=data, target=target)
    beating = config.ef is not None or es_map_path is not None
    if beating and config.es_frame is None and data is not None:
        train = EchoClips(data, "TRAIN", model.clip, seed=model.seed)
        config = replace(config, es_frame=es_frame_of_clips(train.clip(i) for i in range(len(train))))
    kind = "free-echo" if config.mapping == "barycentric" else "free-echo-stochastic"
    if (beating or config.guide is not None) and kind != "free-echo":
        raise ValueError(f"{'a guide (--guide)' if config.guide is not None else 'a beating pseudo video (--ef, --es-map)'}"
                         f" takes the barycentric mapping")
    result = pipe(map_path, config.samples, config.start_step, config.seed, method=kind, convention=convention,
                  sampler=config.sampler, progress=progress, ef=config.ef, es_map=es_map_path, es_frame=config.es_frame,
                  guide=config.guide)
    if result.label_maps is not None:
        config = replace(config, es_frame=config.es_frame if config.es_frame is not None else pipe.frames - 1)
    config = replace(config, fps=config.fps or pipe.fps)
    files = []
    if out is not None:
        record = {"map": str(map_path), "es_map": None if es_map_path is None else str(es_map_path),
                  "map_shape": list(result.videos.shape[-2:]), "checkpoint": str(checkpoint),
                  "config": asdict(config), "seeds": result.seeds,
                  "frames": pipe.frames, "steps_after_t_i": len(config.sampler.schedule(config.start_step)) - 1,
                  "size": pipe.size, "convention": result.convention, "code_version": code_version()}
        files = write_sample_set(Path(out), map_stem(map_path), result.videos, config.fps, video_format, record)
    return {"map": result.ed_map, "videos": result.videos, "convention": result.convention, "fps": config.fps,
            "files": files, "label_maps": result.label_maps}
