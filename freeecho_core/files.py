"""Outputs written all at once or not at all, with one permission rule: every file and folder the project
writes gets the mode a plain `open` or `mkdir` would give under the user's umask (temporary files and folders
are created 0600 / 0700 and widened before they are moved into place)."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode(path: Path) -> None:
    """Give a temporary file or folder the mode a plain `open` (0666) or `mkdir` (0777) gives under the umask."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(binary file object) on a temporary file beside `path`, then rename it over `path`; on any
    error the temporary file is removed and the old `path` (if any) is left as it was (`atomic_write_all`)."""
    atomic_write_all({Path(path): write})
    return Path(path)


def atomic_write_all(writes: dict) -> None:
    """`atomic_write` for several files as one: every write(binary file) of `writes` ({path: write}) goes to a
    temporary file first, and only when all are complete do they replace their paths (a full disk leaves every
    old file as it was). A full disk is an OSError naming the file and "no space left on device"."""
    temporaries = {}
    try:
        for path, write in writes.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporaries[path] = Path(tmp)
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise OSError(err.errno, f"{path}: no space left on device") from None
                raise
            shared_mode(Path(tmp))
        for path, tmp in temporaries.items():
            os.replace(tmp, path)
    finally:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_array_atomically(path: str | os.PathLike, array: np.ndarray) -> Path:
    """An .npy file written atomically (a full disk leaves no truncated array)."""
    return atomic_write(path, lambda f: np.save(f, array))


def check_output_folder(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any work, an output folder that is an existing file or that cannot be created or written:
    a ValueError naming the option and the path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: is a file; expected a folder to write into")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {existing} is not writable")
    return path


def lock_holder(folder: Path) -> str:
    """The process holding an flock on `folder`, from /proc/locks (Linux): "process PID", or "another process"."""
    info = folder.stat()
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and len(fields) > 5 and fields[5] == inode:
                return f"process {fields[4]}"
    except OSError:
        pass
    return "another process"


@contextmanager
def folder_lock(folder: str | os.PathLike, option: str):
    """Hold an exclusive lock on the output `folder` (created if needed) for the block: a second run into the same
    folder is refused at once with a ValueError "<option> FOLDER is in use by process PID". The lock is an flock
    on the folder itself, so no file is added; a folder the block created and left empty is removed."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{option} {folder} is in use by {lock_holder(folder)}; wait for it to finish or "
                             f"write elsewhere") from None
        yield folder
    finally:
        os.close(handle)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@contextmanager
def staged_folder(out: str | os.PathLike, what: str):
    """Yield an empty staging folder beside `out`; on success it becomes `out`, on any error it is removed.

    `out` must not exist or be an empty folder (FileExistsError naming it otherwise): a dataset is written to
    a new folder, never over an old one. `what` names the content in that error. The staging folder's name
    carries this process's id, so staging folders of killed processes are found and removed by the next run.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        kind = "a file" if out.is_file() else "a folder that is not empty"
        raise FileExistsError(f"{out} is {kind}; {what} are written to a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    shared_mode(staging)
    try:
        yield staging
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if err.errno == errno.ENOSPC and str(out) not in str(err):
            raise OSError(err.errno, f"{out}: no space left on device") from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_abandoned_staging(out: Path) -> None:
    """Remove the staging folders beside `out` (of any output there) whose process no longer runs: it was killed
    before it could clean up."""
    for folder in out.parent.glob(".*.partial-*"):
        pid = folder.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def read_json(path: str | os.PathLike, what: str):
    """The JSON content of a file the project wrote, or a ValueError naming the file (damaged, or not JSON) and
    what it should have been."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: damaged, not the JSON {what} ({err}); delete it to have it made again") from None


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped), or a ValueError naming the file and what
    it should have been when it holds binary bytes."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start} is {data[err.start]:#04x}); expected "
                         f"{what}") from None
    if "\x00" in text:
        raise ValueError(f"{path}: holds NUL bytes, so it is binary; expected {what}")
    return text
