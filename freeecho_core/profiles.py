"""Papermill profiles (params/<name>.yaml): notebook parameters and the `train` section, shared by the
notebooks and the `freeecho` command.

A profile's sections: one per notebook (its file name without .ipynb), `train` and `segment`, and later stages or
variants of those two named `train_<what>` and `segment_<what>`. Any other section is refused with the nearest
valid name: a misspelt section would otherwise be skipped silently."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from freeecho_core.validate import check_known

PARAMS_DIR = Path(__file__).resolve().parents[1] / "params"  # the repository's params/ (editable install)
NOTEBOOKS_DIR = PARAMS_DIR.parent / "notebooks"
STAGES = ("train", "segment")  # sections of settings; `<stage>_<what>` names a later stage or a variant


def profile_file(name: str | Path) -> Path:
    """The YAML file of a profile given by name (params/<name>.yaml in the repository) or by path."""
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else PARAMS_DIR / f"{name}.yaml"


def load_profile(name: str | Path) -> dict:
    """A profile by name (smoke, cpu, gpu-short, paper: params/<name>.yaml in the repository) or by YAML path.

    Raises FileNotFoundError or ValueError naming the file when it is missing, not YAML, empty, or not a
    mapping of sections."""
    path = profile_file(name)
    if not path.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"profile {name!r} not found ({path}); known profiles: {known}")
    try:
        profile = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; a profile is YAML") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"{path}: not valid YAML{line} ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(profile, dict) or not profile:
        raise ValueError(f"{path}: empty or not a mapping of sections; a profile has a `train` section and one "
                         f"section per notebook")
    notebooks = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    stages = [s for s in map(str, profile) if re.fullmatch(rf"({'|'.join(STAGES)})(_\w+)?", s)]
    try:
        check_known("sections", profile, [*STAGES, *stages, *notebooks])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return profile


def profile_section(name: str | Path, section: str) -> dict:
    """One section of a profile (e.g. `train`), or a ValueError naming the file and the sections it has."""
    profile = load_profile(name)
    value = profile.get(section)
    if not isinstance(value, dict):
        state = "is not a mapping of settings" if section in profile else "is missing"
        raise ValueError(f"profile {name}: section `{section}` {state}; it has {sorted(map(str, profile))}")
    return value
