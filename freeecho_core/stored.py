"""Stored full-scale runs for the book (`make rerun PROFILE=...`): notebooks executed by papermill at a profile
into results/<profile>/, and the numbers they glued (myst_nb.glue), read back for the Results page."""
from __future__ import annotations

import ast
import json
from pathlib import Path

from freeecho_core.study.videos import file_digest

# The glue key under which a notebook that runs stored models records their sha256 (`weights_used`).
WEIGHTS_KEY = "weights_used"
# The notebooks that run the stored models (the others run none, or only train tiny ones at the smoke profile).
MODEL_NOTEBOOKS = ("02_training", "04_ablation_ti", "05_evaluation", "06_generate")


def glued_values(notebook: str | Path) -> dict:
    """key -> value of every `glue(key, value)` output of an executed notebook (numbers and strings parsed
    from their text/plain form; anything else kept as that text)."""
    path = Path(notebook)
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not an executed notebook ({err})") from None
    values = {}
    for cell in cells:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if not record:
                continue
            text = output.get("data", {}).get(record.get("mime_prefix", "") + "text/plain")
            text = "".join(text) if isinstance(text, list) else text
            try:
                values[record["name"]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                values[record["name"]] = text
    return values


def stored_runs(results_dir: str | Path) -> dict[str, dict[str, dict]]:
    """profile -> notebook name -> glued values, for every results/<profile>/*.ipynb (bench/ holds JSON only)."""
    runs = {}
    for folder in sorted(p for p in Path(results_dir).iterdir() if p.is_dir()):
        notebooks = sorted(folder.glob("*.ipynb"))
        if notebooks:
            runs[folder.name] = {nb.stem: glued_values(nb) for nb in notebooks}
    return runs


def weights_used(*paths: str | Path) -> dict[str, str]:
    """path -> sha256 of every checkpoint a notebook runs (models and segmenters), for it to glue under
    `WEIGHTS_KEY`: a stored run then says which weights made its numbers (`runs_on_other_weights`)."""
    return {str(p): file_digest(p) for p in paths}


def runs_on_other_weights(notebooks: dict[str, dict], base: str | Path) -> dict[str, str]:
    """Stored notebook -> why its numbers are not those of the checkpoints there now, for each of
    `MODEL_NOTEBOOKS` that is stored: made before it recorded its weights, or a checkpoint it ran has changed or
    gone since. `notebooks`: one profile of `stored_runs`; `base`: the folder the notebooks ran in (their
    checkpoint paths are relative to it)."""
    stale = {}
    for name in MODEL_NOTEBOOKS:
        if name not in notebooks:
            continue
        used = notebooks[name].get(WEIGHTS_KEY)
        if not isinstance(used, dict):
            stale[name] = "made before notebooks recorded the weights they ran"
            continue
        changed = [path for path, digest in used.items()
                   if not (Path(base) / path).is_file() or file_digest(Path(base) / path) != digest]
        if changed:
            stale[name] = "ran on other weights than those stored now at " + ", ".join(f"`{p}`" for p in changed)
    return stale
