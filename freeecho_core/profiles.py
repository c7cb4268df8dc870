"""Papermill profiles (params/<name>.yaml): notebook parameters and the `train` section, shared by the
notebooks and the `freeecho` command."""
from __future__ import annotations

from pathlib import Path

import yaml

PARAMS_DIR = Path(__file__).resolve().parents[1] / "params"  # the repository's params/ (editable install)


def load_profile(name: str | Path) -> dict:
    """A profile by name (smoke, gpu-short, paper: params/<name>.yaml in the repository) or by YAML path."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = PARAMS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"profile {name!r} not found ({path}); known profiles: {known}")
    return yaml.safe_load(path.read_text())
