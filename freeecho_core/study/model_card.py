"""Model cards: what a stored model is, written beside its checkpoint as `model_card.json`.

A card records the training configuration and step count, the wall time of training summed over every resumed
segment of its log.csv, the machine, the data it was trained on (the phantom manifest's seed and settings when
the data is a phantom), the command that trains or resumes it, the code version, and any held-out scores.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from freeecho_core.bench.timing import cpu_model
from freeecho_core.checkpoint import MODEL_CARD, code_version, load_checkpoint
from freeecho_core.files import read_json, write_text_atomically
from freeecho_core.train import read_log

CARD_NAME = MODEL_CARD


def training_seconds(log_path: str | os.PathLike) -> float:
    """Wall seconds of training in a log.csv. Logs continue their clock on resume; older logs restarted it in
    every resumed process, so the last time of every segment (where the clock falls back) is summed."""
    seconds = read_log(log_path)["seconds"]
    ends = np.flatnonzero(np.diff(seconds) < 0)
    return float(seconds[ends].sum() + seconds[-1])


def data_summary(data_root: str | os.PathLike) -> dict:
    """The dataset a model was trained on: its path and, for a phantom, the manifest's format, count and settings."""
    root = Path(data_root)
    summary = {"path": str(data_root)}
    manifest = root / "phantom.json"
    if manifest.is_file():
        phantom = json.loads(manifest.read_text())
        summary |= {"phantom": {k: phantom[k] for k in ("format", "count", "seed", "config")}}
    return summary


def training_stages(old: dict | None, train_config: dict, steps: int, command: str) -> list[dict]:
    """The stages a run was trained in, oldest first: each its last step, settings and command. A run resumed
    with other settings than the card's (a later section of the profile, e.g. `train_high_noise`) starts a new
    stage, and the card's held-out scores, which describe the earlier weights, move into the stage they scored."""
    if old is None:
        stages = []
    else:
        stages = list(old.get("stages") or []) or [{"until_step": old["steps"], "train_config": old["train_config"],
                                        "command": old["command"]}]
        stages[-1] = stages[-1] | ({"held_out_scores": old["held_out_scores"]} if old.get("held_out_scores") else {})
    current = {"until_step": steps, "train_config": train_config, "command": command}
    same = stages and without_steps(stages[-1]["train_config"]) == without_steps(train_config)
    return stages[:-1] + [current] if same else stages + [current]


def without_steps(train_config: dict) -> dict:
    return {k: v for k, v in train_config.items() if k != "steps"}


def write_model_card(run_dir: str | os.PathLike, data_root: str | os.PathLike, command: str,
                     scores: dict | None = None) -> Path:
    """Write `run_dir`/model_card.json for the checkpoint in `run_dir` (checkpoint.pt, or ema.pt alone), with the
    stages of its training (`training_stages`) when an earlier card is there."""
    run_dir = Path(run_dir)
    source = run_dir / "checkpoint.pt" if (run_dir / "checkpoint.pt").is_file() else run_dir / "ema.pt"
    payload = load_checkpoint(source)
    path = run_dir / CARD_NAME
    old = json.loads(path.read_text()) if path.is_file() else None
    stages = training_stages(old, payload["train_config"], int(payload["step"]), command)
    files = {p.name: round(p.stat().st_size / 1e6, 2) for p in sorted(run_dir.glob("*.pt"))}
    card = {
        "model": str(run_dir), "steps": int(payload["step"]), "train_config": payload["train_config"],
        "unet_config": payload["config"], "training_seconds": training_seconds(run_dir / "log.csv"),
        "machine": f"{cpu_model()} ({os.cpu_count()} cores), {platform.system()}, torch {torch.__version__}",
        "data": data_summary(data_root), "command": command, "stages": stages, "file_sizes_mb": files,
        "held_out_scores": scores or {}, "code_version": code_version(),
    }
    write_text_atomically(path, json.dumps(card, indent=1) + "\n")
    return path


HELD_OUT_COLUMNS = ("SSIM", "PSNR", "Dice LV", "Dice myo", "Dice LA", "map margin", "map margin s.e.",
                    "EF proxy error", "FD-seg", "FVD-seg")


def held_out_scores(report: dict, command: str) -> dict:
    """The scores of an evaluation report (`scoring.evaluate`) per model role: the unconditional model is scored
    by SDEdit and Free-Echo, the Cls-Free model by its own row. Each entry names the split, the number of maps
    and samples, the sampler and the command that made it."""
    by_role = {}
    for name, row in report["methods"].items():
        role = "clsfree" if name == "clsfree" else "unconditional"
        by_role.setdefault(role, {})[name] = {k: round(row[k], 4) for k in HELD_OUT_COLUMNS if k in row}
    config = report["config"]
    about = {"split": report["split"], "maps": next(iter(report["methods"].values()))["maps"],
             "samples_per_map": config["samples"], "solver": config["sampler"]["solver"],
             "sampler": "ode" if config["sampler"]["churn"] is None else "churn", "sampler_steps": config["sampler"]["steps"],
             "command": command}
    return {role: {"evaluation": about, "methods": methods} for role, methods in by_role.items()}


def record_held_out_scores(checkpoint: str | os.PathLike, scores: dict) -> Path | None:
    """Add `scores` (one evaluation, from `held_out_scores`) to the model card beside `checkpoint`, keyed by the
    evaluation's split, size and sampler, so that evaluations with other settings are kept side by side.
    Returns the card's path, or None when the checkpoint has no card."""
    card_path = Path(checkpoint).parent / CARD_NAME
    if not card_path.is_file():
        return None
    card = read_json(card_path, "model card")
    about = scores["evaluation"]
    key = f"{about['split']}, {about['maps']} maps x {about['samples_per_map']}, {about['solver']} {about['sampler']}"
    if about.get("sampler_steps"):  # the schedule's own steps are the unmarked default
        key += f", {about['sampler_steps']} steps"
    card["held_out_scores"] = {**card.get("held_out_scores", {}), key: scores}
    write_text_atomically(card_path, json.dumps(card, indent=1) + "\n")
    return card_path


def write_segmenter_card(path: str | os.PathLike, command: str, seconds: float | None = None) -> Path:
    """Write <path minus .pt>.card.json for the segmenter checkpoint at `path`: its config, the data, the VAL
    Dice (its held-out score), training seconds (stored by `train_segmenter`, or given), machine and command."""
    path = Path(path)
    payload = load_checkpoint(path)
    card = {
        "model": str(path), "steps": payload["config"]["steps"], "seg_config": payload["config"],
        "training_seconds": payload.get("training_seconds", seconds),
        "machine": f"{cpu_model()} ({os.cpu_count()} cores), {platform.system()}, torch {torch.__version__}",
        "data": data_summary(payload["data_root"]), "train_frames": payload["train_frames"], "command": command,
        "file_size_mb": round(path.stat().st_size / 1e6, 2), "held_out_scores": {"VAL Dice": payload["val_dice"]},
        "code_version": code_version(),
    }
    card_path = path.with_suffix(".card.json")
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    return card_path

