"""Folders written all at once: work in a staging folder beside the target, move it into place at the end."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(out: Path, what: str):
    """Yield an empty staging folder beside `out`; on success it becomes `out`, on any error it is removed.

    `out` must not exist or be an empty folder (FileExistsError naming it otherwise): a dataset is written to
    a new folder, never over an old one. `what` names the content in that error.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; {what} are written to a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
