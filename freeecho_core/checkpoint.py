"""Checkpoints that load with `torch.load(weights_only=True)`: tensors, numbers, strings, lists, dicts.

No pickled code: a model is stored as its config (a plain dict) and its state dict, and rebuilt from
them. Every checkpoint records the code version that wrote it. `load_model` is the one loader of a trained
denoiser: it returns the network with what sampling and scoring read from its checkpoint (`LoadedModel`).
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from freeecho_core import __version__
from freeecho_core.data.clips import ClipConfig
from freeecho_core.edm import EDMPrecond
from freeecho_core.files import atomic_write_all, read_json
from freeecho_core.unet3d import UNet3D, UNet3DConfig
from freeecho_core.validate import first_reason


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
    """Write `payload` atomically (`files.atomic_write`). A failed write (a full disk, say) leaves the old file in
    place and raises an OSError naming `path`."""
    save_checkpoints({Path(path): payload})
    return Path(path)


def save_checkpoints(payloads: dict) -> None:
    """Write several checkpoints ({path: payload}) as one (`files.atomic_write_all`): a failed write leaves
    every old file in place and raises an OSError naming the file, "no space left on device" for a full disk."""
    def writer(path, payload):
        def write(f):
            try:
                torch.save(payload, f)
            except RuntimeError as err:  # torch's writer reports a failed write (ENOSPC, EIO) as a RuntimeError
                size = sum(t.numel() * t.element_size() for t in tensors(payload))
                if shutil.disk_usage(Path(path).parent).free < size:
                    raise OSError(errno.ENOSPC, f"{path}: no space left on device") from None
                raise OSError(f"{path}: could not write the checkpoint ({err})") from err
        return write
    atomic_write_all({path: writer(path, payload) for path, payload in payloads.items()})


def tensors(value):
    """The tensors inside a checkpoint payload (nested dicts and lists)."""
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with `weights_only=True`; a ValueError or FileNotFoundError names the file when it is
    missing, a folder, empty, not a weights-only torch file, has no model config, or holds NaN or infinite
    weights."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a checkpoint file such as <run>/ema.pt")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; expected a Free-Echo checkpoint (ema.pt or checkpoint.pt)")
    with path.open("rb") as f:
        if not f.read(4).startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (old: a pickle)
            raise ValueError(f"{path} is not a torch checkpoint (no zip archive inside); expected a Free-Echo "
                             f"checkpoint (ema.pt or checkpoint.pt)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a weights-only Free-Echo checkpoint ({first_reason(err)})") from None
    if not isinstance(payload, dict) or "config" not in payload:
        raise ValueError(f"{path} holds no model config: expected a dict with a 'config' entry")
    for entry in ("model", "ema"):
        bad = [name for name, t in (payload.get(entry) or {}).items()
               if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise ValueError(f"{path}: {len(bad)} {entry} weight tensor(s) hold NaN or infinite values "
                             f"(e.g. {bad[0]}); the run diverged or the file is damaged")
    return payload


def unet_payload(model: UNet3D, **extra) -> dict:
    """The checkpoint entries of a UNet3D: its config, weights and the code version."""
    return {"config": asdict(model.config), "model": model.state_dict(), "code_version": code_version(), **extra}


def config_from_dict(config: dict) -> UNet3DConfig:
    """A UNet3DConfig from a checkpoint's config dict; a ValueError names unknown or mistyped entries."""
    unknown = sorted(set(config) - set(UNet3DConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown UNet3D config entries {unknown}; this version knows "
                         f"{sorted(UNet3DConfig.__dataclass_fields__)}")
    return UNet3DConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def unet_from_payload(payload: dict, weights: str = "model", source: str = "checkpoint") -> UNet3D:
    """Rebuild the UNet3D of a checkpoint with the weights stored under `weights` ('model' or 'ema');
    `source` (the file) names it in errors."""
    if weights not in payload:
        raise ValueError(f"{source} has no {weights!r} weights; it has {sorted(payload)}")
    try:
        model = UNet3D(config_from_dict(payload["config"]))
        model.load_state_dict(payload[weights])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{source}: its weights do not fit its UNet3D config ({first_reason(err)})") from None
    return model


DEFAULT_FPS = 25.0  # the frame rate of models whose checkpoint records none
ROLES = ("unconditional", "clsfree")  # Free-Echo and SDEdit sample the first, the Cls-Free baseline the second


def clip_config(train_config: dict) -> ClipConfig:
    """The clips a model was trained on, from its stored training config (older checkpoints: the paper's size)."""
    return ClipConfig(frames=train_config.get("frames", 24), size=train_config.get("size", 128),
                      fps=train_config.get("clip_fps"))


MODEL_CARD = "model_card.json"  # what a stored model is, written beside its checkpoint (`study.model_card`)


def trained_look(path: str | os.PathLike) -> str:
    """The phantom look ("camus" or "echonet") of the data the model at `path` was trained on, as its model card
    records it; "camus" for a model without a card or trained on other data than the phantom."""
    card = Path(path).parent / MODEL_CARD
    if not card.is_file():
        return "camus"
    phantom = read_json(card, "model card").get("data", {}).get("phantom") or {}
    return phantom.get("config", {}).get("look", "camus")


@dataclass
class LoadedModel:
    """A trained denoiser (EMA weights, in eval mode) and what its checkpoint says about it.

    clip: the clips it was trained on; seed: its training seed, which also fixed the TRAIN/VAL/TEST split of its
    data; fps: the frame rate of that data; role: "unconditional" or "clsfree" (a conditional network)."""

    denoiser: EDMPrecond
    clip: ClipConfig
    seed: int
    fps: float
    role: str
    train_config: dict
    path: Path


def load_model(path: str | os.PathLike, device="cpu", role: str | None = None) -> LoadedModel:
    """The model of a checkpoint file (ema.pt, or checkpoint.pt's 'ema' entry); `role` "unconditional" or
    "clsfree" refuses a model of the other kind (a ValueError naming the file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint there; train one (freeecho train --profile ...) and "
                                f"pass its ema.pt")
    payload = load_checkpoint(path)
    weights = "ema" if "ema" in payload else "model"
    denoiser = EDMPrecond(unet_from_payload(payload, weights, str(path))).to(device).eval()
    found = ROLES[1] if denoiser.net.config.cond_channels else ROLES[0]
    if role is not None and role != found:
        kind = "a conditional (Cls-Free) model" if found == "clsfree" else "an unconditional model"
        wanted = "the Cls-Free baseline's conditional model" if role == "clsfree" else "an unconditional model"
        raise ValueError(f"{path} is {kind}; expected {wanted} here")
    train_config = payload.get("train_config", {})
    fps = (payload.get("data") or {}).get("fps") or DEFAULT_FPS
    return LoadedModel(denoiser, clip_config(train_config), train_config.get("seed", 0), float(fps), found,
                       train_config, path)
