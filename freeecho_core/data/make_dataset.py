"""Phantom datasets on disk in the real CAMUS and EchoNet-Dynamic formats (`freeecho phantom`).

Cases are rendered in parallel processes; everything is written into a staging folder beside the target
and moved into place at the end, so an interrupted run leaves nothing half-written. A `phantom.json`
manifest records the seed, the configuration, the code version and each case's drawn parameters.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from freeecho_core.checkpoint import code_version
from freeecho_core.data.camus import write_camus_case
from freeecho_core.data.clips import Clip, ClipConfig
from freeecho_core.data.dataset import load_camus_clip
from freeecho_core.data.echonet import VIDEO_SIZE, write_echonet_dataset
from freeecho_core.data.phantom import PhantomConfig, case_rng, make_case
from freeecho_core.files import staged_folder
from freeecho_core.profiles import profile_section
from freeecho_core.progress import progress_bar

FORMATS = ("camus", "camus-2019", "echonet")  # camus-2019: the original CAMUS release's MetaImage layout


def camus_patient_id(index: int) -> str:
    return f"patient{index + 1:04d}"


def echonet_file_name(seed: int, index: int) -> str:
    """A name in EchoNet's style ("0X" and 16 hex digits), fixed by (seed, index)."""
    return "0X" + "".join(f"{w:08X}" for w in case_rng(seed, index, 5).integers(0, 2**32, 2, dtype=np.uint64))


def echonet_splits(count: int) -> list[str]:
    """TRAIN / VAL / TEST by position, 80 / 10 / 10 (at least one VAL and one TEST case from 3 cases on)."""
    n_val = n_test = max(1, round(0.1 * count)) if count >= 3 else 0
    return ["TRAIN"] * (count - n_val - n_test) + ["VAL"] * n_val + ["TEST"] * n_test


def _summary(case) -> dict:
    return {"case_id": case.case_id, "view": case.view, "ef": case.ef, "es_index": case.es_index,
            "frames": int(case.frames.shape[0]), "shape": list(case.frames.shape[1:]), "fps": case.fps}


def _camus_patient(args) -> list[dict]:
    staging, seed, index, config, release = args
    summaries = []
    for view in ("2CH", "4CH"):
        case = make_case(seed, index, view, config, case_id=camus_patient_id(index))
        write_camus_case(staging, case, release)
        summaries.append(_summary(case))
    return summaries


def _echonet_case(args):
    seed, index, config = args
    return make_case(seed, index, "4CH", config, case_id=echonet_file_name(seed, index))


def exit_with_parent(parent: int) -> None:
    """Pool worker initializer: end this worker when the process that started it is gone (killed with
    SIGKILL, a pool cannot tell its workers), instead of waiting on its pipe forever."""
    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def make_phantom_dataset(out: str | os.PathLike, fmt: str, count: int, seed: int = 0,
                         config: PhantomConfig = PhantomConfig(), workers: int | None = None,
                         progress: bool = True) -> Path:
    """Render `count` phantom patients (CAMUS, either release: 2CH and 4CH each; EchoNet: one 4CH video each)
    into `out`, with the scanner look of that format (`phantom.LOOKS`: gain, grey curve, fan and framing).
    EchoNet videos are rendered at least as tall as the format's 112 x 112 frames: rendered smaller and enlarged
    by the writer, their speckle would grow as wide as the enlargement (5 px instead of real EchoNet's 2-3)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out, config = Path(out), replace(config, look="echonet" if fmt == "echonet" else "camus")
    if fmt == "echonet":
        config = replace(config, height=max(config.height, VIDEO_SIZE))
    with staged_folder(out, "phantom datasets") as staging:
        summaries = _render_into(staging, fmt, count, seed, config, workers or os.cpu_count(), progress)
        manifest = {"format": fmt, "count": count, "seed": seed, "config": asdict(config),
                    "code_version": code_version(), "cases": summaries}
        (staging / "phantom.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def _render_into(staging: Path, fmt: str, count: int, seed: int, config: PhantomConfig, workers: int,
                 progress: bool) -> list[dict]:
    bar = dict(total=count, disable=not progress, desc=f"phantom {fmt}", unit="case")
    with ProcessPoolExecutor(max_workers=min(workers, count), initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        if fmt.startswith("camus"):
            release = "mhd" if fmt == "camus-2019" else "nifti"
            jobs = pool.map(_camus_patient, [(staging, seed, i, config, release) for i in range(count)])
            return [s for patient in progress_bar(jobs, **bar) for s in patient]
        cases = list(progress_bar(pool.map(_echonet_case, [(seed, i, config) for i in range(count)]), **bar))
    write_echonet_dataset(staging, cases, echonet_splits(count))
    return [_summary(case) for case in cases]


def profile_phantom(root: str | os.PathLike, fmt: str, profile: str, progress: bool = False) -> Path:
    """The phantom dataset a profile's notebooks read: rendered into `root` with the profile's `01_data`
    settings (count, frame height and count, seed) unless a phantom is already there. A folder whose name does
    not say `phantom` is a user's real dataset and is returned as it is."""
    root = Path(root)
    if "phantom" in root.name and not (root / "phantom.json").is_file():
        data = profile_section(profile, "01_data")
        make_phantom_dataset(root, fmt, int(data["phantom_count"]), int(data["seed"]),
                             PhantomConfig(height=int(data["phantom_height"]), frames=int(data["phantom_frames"])),
                             progress=progress)
    return root


def phantom_manifest(root: str | os.PathLike, needed_for: str) -> dict:
    """The phantom.json of a phantom dataset: what it was rendered with (format, count, seed, `PhantomConfig`);
    a one-line error saying what it is `needed_for` when `root` has none (a real dataset)."""
    manifest_path = Path(root) / "phantom.json"
    if not manifest_path.is_file():
        raise ValueError(f"{root}: no phantom.json; {needed_for}")
    return json.loads(manifest_path.read_text())


def rescan_clip(root: str | os.PathLike, case_id: str, view: str, clip: ClipConfig, scan: int = 1) -> Clip:
    """A second scan of one recording of a CAMUS-format phantom dataset, prepared like the dataset's clips:
    the same heart, beat and labels recorded with new scatterers, tissue texture and noise (`make_case`'s
    `scan`). What a generator that got everything right but the speckle would produce: the ceiling of a
    pixel-wise comparison (SSIM, PSNR) with the recording."""
    manifest_path = Path(root) / "phantom.json"
    manifest = phantom_manifest(root, "a second scan exists only for phantom datasets")
    if not manifest["format"].startswith("camus"):
        raise ValueError(f"{manifest_path}: a {manifest['format']} phantom; second scans are made for the CAMUS "
                         f"formats only")
    number = case_id.removeprefix("patient")
    index = int(number) - 1 if case_id.startswith("patient") and number.isdigit() else -1
    if not 0 <= index < manifest["count"]:
        raise ValueError(f"{case_id!r} is not a patient of {manifest_path} (patient0001 .. "
                         f"{camus_patient_id(manifest['count'] - 1)})")
    case = make_case(manifest["seed"], index, view, PhantomConfig(**manifest["config"]), case_id, scan)
    with tempfile.TemporaryDirectory() as staging:
        release = "mhd" if manifest["format"] == "camus-2019" else "nifti"
        return load_camus_clip(write_camus_case(staging, case, release), view, clip)
