"""Videos from a user's own end-diastolic map (paper section 2 end to end): `freeecho generate` and notebook 06.

The map file is read and prepared by `data.maps` (PNG or NIfTI, any size and aspect, CAMUS, 5-label or LV-only
labels), turned into videos by `synthesis.FreeEcho` (the same code as the study), and each sample is written as
an AVI (MJPG) or MP4 file, atomically, at the frame rate of the data the model was trained on, with the uint8
frames and a JSON record of how they were made.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from freeecho_core.checkpoint import code_version
from freeecho_core.data.maps import map_stem
from freeecho_core.edm import karras_sigmas
from freeecho_core.files import check_output_folder, save_array_atomically, shared_mode, write_text_atomically
from freeecho_core.motion import EF_RANGE
from freeecho_core.synthesis import AUTHORS_CHURN, DEFAULT_CHECKPOINT, FreeEcho, SamplerConfig
from freeecho_core.validate import as_float

VIDEO_FORMATS = {"avi": "MJPG", "mp4": "mp4v"}  # container -> OpenCV fourcc


@dataclass(frozen=True)
class GenerateConfig:
    start_step: int = 15  # t_i of the 64-step schedule (paper: 15 is best)
    samples: int = 4  # videos per map
    mapping: str = "barycentric"  # OT map: "barycentric" (the paper's reading) or "stochastic" (ours)
    # The deterministic ODE: the authors' churn (S_churn 80) washed the map out of the stored models' videos
    # (notebook 05). DPM-Solver++(2M) in 13 steps: 13 network evaluations a video, the fewest at which the quality
    # study (results/bench/nfe-quality.json, the benchmark page) kept Dice LV and SSIM within one standard error
    # of the paper's Heun over the schedule's 49 steps (97 evaluations). The paper's sampler: solver "heun",
    # stochastic_sampler True, sampler_steps None.
    solver: str = "dpmpp2m"  # "dpmpp2m" (DPM-Solver++(2M), ODE only), "heun" (EDM Algorithm 2) or "euler"
    stochastic_sampler: bool = False  # True: the authors' churn
    sampler_steps: int | None = 13  # steps after t_i, at most the schedule's own 64 - t_i (`steps_after`); None: those
    seed: int = 0  # sample k uses seed + k
    fps: float | None = None  # frame rate of the video files; None: the training data's, from the checkpoint
    ef: float | None = None  # a target EF: the pseudo video beats (motion.beating_maps); None: held still
    es_frame: float | None = None  # frame of end systole in a beating video; None: the last (CAMUS half sequences)


def steps_after(config: GenerateConfig) -> int | None:
    """The sampler steps after t_i: `config.sampler_steps`, but never more than the schedule's own 64 - t_i (a
    late start, t_i > 51 for the default 13, keeps the schedule's steps); None: the schedule's own."""
    own = len(karras_sigmas()) - 1 - config.start_step
    return None if config.sampler_steps is None or config.sampler_steps >= own else config.sampler_steps


def write_video(path: Path, video: np.ndarray, fps: float) -> Path:
    """(K, S, S) uint8 frames -> an AVI (MJPG) or MP4 (mp4v) file, written to a temporary name then renamed;
    read back to check that every frame decodes. Nothing is left behind when it fails."""
    container = path.suffix.lstrip(".")
    if container not in VIDEO_FORMATS:
        raise ValueError(f"{path}: video format must be one of {sorted(VIDEO_FORMATS)}")
    fps = as_float("fps", fps, above=0)
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
            raise OSError(f"{path}: wrote {K} frames but {written} decode (is the disk full?)")
        shared_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def video_bytes(video: np.ndarray, fps: float, container: str = "avi") -> bytes:
    """(K, S, S) uint8 frames as the bytes of an AVI (MJPG) or MP4 file (`write_video`, through a temporary
    folder), e.g. for a download link in a page."""
    with tempfile.TemporaryDirectory() as folder:
        return write_video(Path(folder) / f"video.{container}", video, fps).read_bytes()


def generate_from_map(map_path, checkpoint=DEFAULT_CHECKPOINT, out=None, config: GenerateConfig = GenerateConfig(),
                      *, convention: str = "auto", target=None, video_format: str = "avi", device="cpu",
                      progress: bool = False, es_map_path=None) -> dict:
    """Generate `config.samples` videos from the ED map at `map_path` with the unconditional model at
    `checkpoint`. target: the OT target (centres, weights), e.g. `EchoClips(...).intensity_histogram()` of the
    training data; default `synthesis.phantom_target`. progress: a bar over the sampling steps. With `out`,
    writes <stem>_<k>.<video_format>, <stem>.npy (uint8 (n, K, h, w)) and <stem>.json; returns {"map": (S, S)
    5-label map, "videos": (n, K, h, w) uint8 cropped to the map's aspect, "convention", "fps", "files",
    "label_maps"}. `config.ef` or `es_map_path` (the ES map of the same recording) make the pseudo video beat."""
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"video format must be one of {sorted(VIDEO_FORMATS)}, got {video_format!r}")
    if config.fps is not None:
        as_float("fps", config.fps, above=0)
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
    sampler = SamplerConfig(solver=config.solver, stochastic_sampler=config.stochastic_sampler,
                            steps=steps_after(config))  # checked before the model and the OT target load
    pipe = FreeEcho.from_checkpoint(checkpoint, target=target, device=device)
    if pipe.conditional:
        raise ValueError(f"{checkpoint} is a conditional (Cls-Free) model; Free-Echo samples the unconditional one")
    kind = "free-echo" if config.mapping == "barycentric" else "free-echo-stochastic"
    if (config.ef is not None or es_map_path is not None) and kind != "free-echo":
        raise ValueError("a beating pseudo video (--ef, --es-map) takes the barycentric mapping")
    result = pipe(map_path, config.samples, config.start_step, config.seed, method=kind, convention=convention,
                  sampler=sampler, progress=progress, ef=config.ef, es_map=es_map_path, es_frame=config.es_frame)
    if result.label_maps is not None:
        config = replace(config, es_frame=config.es_frame if config.es_frame is not None else pipe.frames - 1)
    config = replace(config, fps=config.fps or pipe.fps)
    files = []
    if out is not None:
        out, stem = Path(out), map_stem(map_path)
        out.mkdir(parents=True, exist_ok=True)
        files = [write_video(out / f"{stem}_{k}.{video_format}", v, config.fps) for k, v in enumerate(result.videos)]
        save_array_atomically(out / f"{stem}.npy", result.videos)
        record = {"map": str(map_path), "es_map": None if es_map_path is None else str(es_map_path),
                  "map_shape": list(result.videos.shape[-2:]), "checkpoint": str(checkpoint),
                  "config": asdict(config), "seeds": result.seeds,
                  "churn": AUTHORS_CHURN if config.stochastic_sampler else None, "frames": pipe.frames,
                  "steps_after_t_i": sampler.steps or len(karras_sigmas()) - 1 - config.start_step,
                  "size": pipe.size, "convention": result.convention, "code_version": code_version()}
        write_text_atomically(out / f"{stem}.json", json.dumps(record, indent=1) + "\n")
    return {"map": result.ed_map, "videos": result.videos, "convention": result.convention, "fps": config.fps,
            "files": files, "label_maps": result.label_maps}
