"""The prepared-clip store: a split's clips decoded, cut, resized and labelled once, kept on disk as compact
arrays that every process on the machine reads.

A store is a folder `clips-<key>` in the cache folder (default `<dataset>/.freeecho_cache/`):

- `video.npy`   (N, K, S, S) uint8 grey levels (`clips.unit_from_grey` gives the model's [-1, 1] back exactly);
- `labels.npy`  (N, K, S, S) uint8 CAMUS labels, 255 on frames without annotation;
- `ed_map.npy`  (N, S, S) uint8 ED maps in the 5-label convention;
- `sector.npy`  (N, S, S) uint8 scan fans;
- `index.json`  what the store was made from (preparation version, split, clip config, views, seed, dataset
  root), each clip's case id, view and frame rate, and the size and modification time of every source file.

A clip is read with positioned reads (`os.pread`) of its own bytes, so a process holds only the clips it is
using: the operating system's page cache keeps the files once for all DataLoader workers and all processes.
At paper size (24 x 128 x 128) a clip takes 0.8 MB here against 4.9 MB as float32 video and int64 labels.

A store is built by parallel processes into a staging folder that is renamed into place when complete, under
an exclusive lock, so that processes started together build it once and never see it half-written. It is
rebuilt when its index no longer matches: another clip config, code that prepares clips differently
(`clips.PREPARATION_VERSION`), another list of recordings or a source file whose size or time changed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from freeecho_core.data.clips import UNLABELLED, Clip, grey_from_unit, unit_from_grey
from freeecho_core.files import staged_folder
from freeecho_core.progress import progress_bar

NO_LABEL = 255  # stored value of UNLABELLED
ARRAYS = ("video", "labels", "ed_map", "sector")


class SourceError(ValueError):
    """A recording of the dataset could not be read: the data's fault, not the cache folder's."""


def source_stats(root: Path, files: list[Path]) -> dict[str, list[int]]:
    """{path relative to root: [size, modification time in ns]} of `files`."""
    stats = {}
    for path in files:
        try:
            st = path.stat()
        except OSError as err:
            raise SourceError(f"{path}: a recording of {root} is missing or unreadable ({err.strerror}); restore "
                              f"it, or remove it from the dataset") from None
        stats[path.relative_to(root).as_posix()] = [st.st_size, st.st_mtime_ns]
    return stats


def compact(clip: Clip) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A clip's arrays as the store keeps them (uint8 each)."""
    labels = np.where(clip.frame_labels == UNLABELLED, NO_LABEL, clip.frame_labels).astype(np.uint8)
    return grey_from_unit(clip.video), labels, clip.ed_map.astype(np.uint8), clip.sector.astype(np.uint8)


class ClipStore:
    """A built store, opened read-only. `clip(i)` reads clip i from disk into fresh arrays."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.index = json.loads((self.folder / "index.json").read_text())
        self.clips = self.index["clips"]
        self._layout = {name: self._array_layout(self.folder / f"{name}.npy") for name in ARRAYS}
        self._fds: dict[str, int] = {}
        self._pid = None

    @staticmethod
    def _array_layout(path: Path) -> tuple[int, tuple[int, ...]]:
        """(byte offset of the data, shape) of a C-ordered uint8 .npy file."""
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if fortran or dtype != np.uint8:
                raise ValueError(f"{path}: expected a C-ordered uint8 array, got {dtype} (fortran {fortran})")
            return f.tell(), shape

    def __len__(self) -> int:
        return len(self.clips)

    def __getstate__(self):  # file descriptors are per process: a DataLoader worker opens its own
        return {**self.__dict__, "_fds": {}, "_pid": None}

    def __del__(self):
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._fds.values():
                os.close(fd)

    def _read(self, name: str, i: int) -> np.ndarray:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        if name not in self._fds:
            self._fds[name] = os.open(self.folder / f"{name}.npy", os.O_RDONLY)
        offset, shape = self._layout[name]
        item = shape[1:]
        size = int(np.prod(item))
        data = os.pread(self._fds[name], size, offset + i * size)
        if len(data) != size:
            raise ValueError(f"{self.folder / name}.npy: clip {i} is cut short ({len(data)} of {size} bytes)")
        return np.frombuffer(data, np.uint8).reshape(item)

    def clip(self, i: int) -> Clip:
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} of a store of {len(self)}")
        labels = self._read("labels", i).astype(np.int64)
        labels[labels == NO_LABEL] = UNLABELLED
        meta = self.clips[i]
        return Clip(meta["case_id"], meta["view"], unit_from_grey(self._read("video", i)), labels,
                    self._read("ed_map", i).astype(np.int64), self._read("sector", i).astype(bool), meta["fps"])

    def nbytes(self) -> int:
        return sum((self.folder / f"{name}.npy").stat().st_size for name in ARRAYS) + \
            (self.folder / "index.json").stat().st_size


def is_current(folder: Path, key: dict, items: list[str], sources: dict[str, list[int]]) -> bool:
    """Whether the store in `folder` was built from this key, these recordings and these source files."""
    index_path = folder / "index.json"
    if not index_path.is_file():
        return False
    try:
        index = json.loads(index_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):  # a damaged store is rebuilt
        return False
    return index.get("key") == key and index.get("items") == items and index.get("sources") == sources


@contextmanager
def exclusive_lock(path: Path):
    """An exclusive advisory lock on `path` (created if needed), held for the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_PREPARER = None  # the dataset a preparation worker reads from (set once per worker)


def _set_preparer(dataset) -> None:
    global _PREPARER
    _PREPARER = dataset


def _prepare_one(i: int):
    try:
        clip = _PREPARER.decode(i)
    except OSError as err:  # a recording deleted or unreadable since the dataset was listed
        raise SourceError(f"{err.filename or _PREPARER.item_names()[i]}: cannot read this recording of "
                          f"{_PREPARER.root} ({err.strerror or err})") from None
    return compact(clip), {"case_id": clip.case_id, "view": clip.view, "fps": clip.fps}


def build_store(folder: Path, dataset, key: dict, items: list[str], sources: dict[str, list[int]],
                workers: int | None = None, progress: bool = True) -> dict:
    """Prepare every clip of `dataset` (its `decode(i)`) with `workers` processes and write the store into
    `folder` (replacing an outdated one). Returns the build's statistics."""
    n, K, S = len(dataset), dataset.config.frames, dataset.config.size
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    if multiprocessing.current_process().daemon:  # a DataLoader worker: it may not start processes of its own
        workers = 1
    start = time.perf_counter()
    new = folder.with_name(f"{folder.name}.new")  # the old store stays until the new one is complete
    if new.exists():
        shutil.rmtree(new)
    with staged_folder(new, "prepared clips") as staging:
        arrays = {name: allocated_memmap(staging / f"{name}.npy", shape)
                  for name, shape in (("video", (n, K, S, S)), ("labels", (n, K, S, S)), ("ed_map", (n, S, S)),
                                      ("sector", (n, S, S)))}
        # Shown from the second second on: the quick stores of a notebook or a test leave no bar behind.
        bar = dict(total=n, disable=not progress, desc=f"preparing {dataset.split} clips", unit="clip", delay=2.0)
        pool = ProcessPoolExecutor(workers, initializer=_set_preparer, initargs=(dataset,)) if workers > 1 \
            else nullcontext()
        with pool:
            if workers > 1:
                results = pool.map(_prepare_one, range(n), chunksize=max(1, min(16, n // (4 * workers))))
            else:
                _set_preparer(dataset)
                results = map(_prepare_one, range(n))
            clips = _fill(arrays, progress_bar(results, **bar))
        for array in arrays.values():
            array.flush()
        del arrays
        seconds = time.perf_counter() - start
        index = {"key": key, "items": items, "sources": sources, "clips": clips,
                 "build": {"seconds": seconds, "workers": workers, "clips": n}}
        (staging / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    if folder.exists():
        old = folder.with_name(f"{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        new.rename(folder)
        shutil.rmtree(old)
    else:
        new.rename(folder)
    return index["build"]


def allocated_memmap(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A uint8 .npy file of `shape` mapped for writing, its blocks allocated on disk first: a full disk is then
    an OSError naming the folder here, not a SIGBUS on the first write into a page it cannot hold."""
    size = int(np.prod(shape))
    try:
        array = np.lib.format.open_memmap(path, "w+", np.uint8, shape)
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OSError(err.errno, f"{path.parent}: no space left on device for the prepared clips "
                                     f"({size / 1e6:.1f} MB for {path.name})") from None
        raise OSError(err.errno, f"{path}: {err.strerror}") from None
    return array


def _fill(arrays: dict, results) -> list[dict]:
    clips = []
    for i, (parts, meta) in enumerate(results):
        for name, part in zip(ARRAYS, parts):
            arrays[name][i] = part
        clips.append(meta)
    return clips


def open_store(cache: Path, name: str, dataset, key: dict, items: list[str], sources: dict[str, list[int]],
               workers: int | None = None, progress: bool = True) -> ClipStore:
    """The store `cache/name` for `dataset`, built first if it is missing or outdated."""
    folder, lock = cache / name, cache / f"{name}.lock"
    if not is_current(folder, key, items, sources):
        created = not cache.exists()
        cache.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive_lock(lock):
                if not is_current(folder, key, items, sources):  # another process may have built it meanwhile
                    build_store(folder, dataset, key, items, sources, workers, progress)
        except BaseException:  # a recording that cannot be prepared: leave the cache as it was
            if not any(p != lock for p in cache.iterdir()):
                lock.unlink(missing_ok=True)
                if created:
                    cache.rmdir()
            raise
    return ClipStore(folder)
