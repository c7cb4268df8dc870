"""Checkpoints that load with `torch.load(weights_only=True)`: tensors, numbers, strings, lists, dicts.

No pickled code: a model is stored as its config (a plain dict) and its state dict, and rebuilt from
them. Every checkpoint records the code version that wrote it.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from freeecho_core import __version__
from freeecho_core.unet3d import UNet3D, UNet3DConfig


def code_version() -> dict:
    """The package version and, when the package lives in a git checkout, its commit and dirty flag."""
    here = Path(__file__).resolve().parent
    version = {"package": __version__, "commit": "unknown", "dirty": False}
    try:
        git = ["git", "-C", str(here)]
        version["commit"] = subprocess.run(
            git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        # Dirty means the package's own code differs from the commit; results written elsewhere in the
        # checkout (a benchmark JSON being filled in, say) do not count.
        status = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no", "--", "."],
                                capture_output=True, text=True, check=True).stdout
        version["dirty"] = bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return version


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write `payload` atomically: to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with `weights_only=True`; a clear error names the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a weights-only Free-Echo checkpoint: {err}") from err
    if not isinstance(payload, dict) or "config" not in payload:
        raise ValueError(f"{path} holds no model config: expected a dict with a 'config' entry")
    return payload


def unet_payload(model: UNet3D, **extra) -> dict:
    """The checkpoint entries of a UNet3D: its config, weights and the code version."""
    return {"config": asdict(model.config), "model": model.state_dict(), "code_version": code_version(), **extra}


def config_from_dict(config: dict) -> UNet3DConfig:
    return UNet3DConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def unet_from_payload(payload: dict, weights: str = "model") -> UNet3D:
    """Rebuild the UNet3D of a checkpoint with the weights stored under `weights` ('model' or 'ema')."""
    if weights not in payload:
        raise KeyError(f"checkpoint has no {weights!r} weights; it has {sorted(payload)}")
    model = UNet3D(config_from_dict(payload["config"]))
    model.load_state_dict(payload[weights])
    return model
