"""Stored full-scale runs for the book (`make rerun PROFILE=...`): notebooks executed by papermill at a profile
into results/<profile>/, and the numbers they glued (myst_nb.glue), read back for the Results page."""
from __future__ import annotations

import ast
import json
from pathlib import Path


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
