"""A torch Dataset of prepared clips from a CAMUS or EchoNet-Dynamic folder (real or phantom).

Splits: CAMUS by patient, seeded, 80 / 10 / 10 (the paper: 400 / 50 / 50 of 500); EchoNet by its Split
column. Split names are TRAIN, VAL and TEST for both.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from freeecho_core.data.camus import (ed_first, list_camus_patients, read_camus_frame, read_camus_info,
                                      read_camus_sequence)
from freeecho_core.data.clips import (PREPARATION_VERSION, Clip, ClipConfig, annotated_at_size, myocardium_ring,
                                      prepare_clip, sector_from_frames)
from freeecho_core.data.echonet import (lv_tracings, method_of_disks_volume, read_echonet_video, read_filelist,
                                        read_tracings, skipped_message, traced_videos)
from freeecho_core.data.histogram import intensity_histogram
from freeecho_core.data.store import ClipStore, open_store, source_stats
from freeecho_core.files import atomic_write

CACHE_DIR = ".freeecho_cache"  # default cache folder inside a dataset root
CACHE_DIR_VARIABLE = "FREEECHO_CACHE_DIR"  # a cache folder for every dataset (`freeecho --cache-dir`)

SPLITS = ("TRAIN", "VAL", "TEST")


def detect_format(root: str | Path) -> str:
    """'camus' when `root` holds database_nifti/ (the current release), training/ (the 2019 release) or patient
    folders, 'echonet' when it holds FileList.csv."""
    root = Path(root)
    if (root / "FileList.csv").is_file():
        return "echonet"
    if (root / "database_nifti").is_dir() or any(root.glob("training/patient*/Info_*.cfg")) or \
            any(root.glob("patient*/Info_*.cfg")):
        return "camus"
    raise FileNotFoundError(f"{root}: neither a CAMUS folder (database_nifti/ or the 2019 release's training/) nor "
                            f"an EchoNet-Dynamic folder (FileList.csv)")


def dataset_fingerprint(root: str | Path) -> str:
    """A short hash of a dataset folder's content: the relative path and size of every file, and the full text
    of its metadata files (.csv, .cfg). Hidden entries (caches, staging folders) and the phantom's manifest
    (which records the code version that rendered it) are left out, so a re-rendered phantom keeps its
    fingerprint while another dataset, a changed split or a re-encoded video does not."""
    root, digest = Path(root), hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "phantom.json"
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
        if path.suffix.lower() in (".csv", ".cfg"):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def camus_splits(patients: list[str], seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> dict[str, str]:
    """A seeded split of patients: 80 / 10 / 10 (400 / 50 / 50 of 500), at least one VAL and TEST from 3 on."""
    order = np.random.default_rng(seed).permutation(len(patients))
    n = len(patients)
    n_val = n_test = max(1, round(fractions[1] * n)) if n >= 3 else 0
    names = ["TEST"] * n_test + ["VAL"] * n_val + ["TRAIN"] * (n - n_val - n_test)
    return {patients[i]: names[rank] for rank, i in enumerate(order)}


def cache_folder(root: Path, cache_dir: str | Path | None) -> tuple[Path, bool]:
    """(the cache folder for a dataset root, whether it was chosen explicitly): `cache_dir`, else the
    FREEECHO_CACHE_DIR environment variable, else `<root>/.freeecho_cache`."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_DIR_VARIABLE) or None
    return (Path(chosen), True) if chosen is not None else (root / CACHE_DIR, False)


def load_camus_clip(patient_dir: str | Path, view: str, config: ClipConfig) -> Clip:
    """The clip of one CAMUS patient folder's view: its half sequence from ED, prepared by `prepare_clip`."""
    record = read_camus_sequence(patient_dir, view)
    frames, labels, ed = ed_first(record)
    return prepare_clip(record.patient, view, frames, labels, ed, config, record.info.get("FrameRate"),
                        where=f"{patient_dir} ({view})")


class EchoClips(Dataset):
    """Clips of one split; item i is a dict with
    video (1, K, S, S) float32 in [-1, 1], ed_map (S, S) int64 (5 labels), frame_labels (K, S, S) int64
    (CAMUS labels, -1 where a frame has no annotation), case_id, view.

    Clips come from the split's prepared-clip store (`data.store`), built on first use in the cache folder
    (`cache_folder`) and shared by every process that opens the same split with the same clip config; with
    `store=False`, or when the default cache folder cannot be written (a read-only dataset: pass `cache_dir`),
    every access decodes the recording again. Both paths give identical clips.
    """

    def __init__(self, root: str | Path, split: str = "TRAIN", clip: ClipConfig = ClipConfig(),
                 views=("2CH", "4CH"), seed: int = 0, store: bool = True, cache_dir: str | Path | None = None,
                 workers: int | None = None, progress: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root, self.split, self.config = Path(root), split, clip
        self.views, self.seed, self.use_store, self.workers, self.progress = tuple(views), seed, store, workers, progress
        self.cache, self.explicit_cache = cache_folder(self.root, cache_dir)
        self.format = detect_format(self.root)
        self._store: ClipStore | None = None
        self.skipped: list[str] = []  # EchoNet videos left out for lack of ED/ES tracings
        if self.format == "camus":
            patients = list_camus_patients(self.root)
            split_of = camus_splits([p.name for p in patients], seed)
            self.items = [(p, v) for p in patients if split_of[p.name] == split for v in views
                          if (p / f"Info_{v}.cfg").is_file()]
        else:
            self._filelist, self._tracings = read_filelist(self.root), read_tracings(self.root)
            in_split = [row for row in self._filelist if row["Split"] == split]
            usable, self.skipped = traced_videos(in_split, self._tracings)
            self.items = [row["FileName"] for row in usable]
            if self.skipped:
                warnings.warn(skipped_message(self.root, self.skipped, len(in_split), f"{split} videos"),
                              stacklevel=2)

    def __len__(self) -> int:
        return len(self.items)

    def clip(self, i: int) -> Clip:
        store = self.prepare() if self.use_store else None
        return self.decode(i) if store is None else store.clip(i)

    def decode(self, i: int) -> Clip:
        """Clip i prepared from its source files (what the store holds)."""
        return self._load_camus(*self.items[i]) if self.format == "camus" else self._load_echonet(self.items[i])

    def annotated_frames(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Every annotated frame of recording i at the clip size, from its source files, also those outside its
        clip of K frames from ED (`clips.annotated_at_size`): (M, S, S) grey in [-1, 1] and CAMUS labels."""
        if self.format == "camus":
            patient_dir, view = self.items[i]
            frames, labels, _ = ed_first(read_camus_sequence(patient_dir, view))
        else:
            record = read_echonet_video(self.root, self.items[i], self._filelist, self._tracings)
            frames, labels = record.frames, traced_labels(record)
        return annotated_at_size(frames, labels, self.config.size)

    def prepare(self) -> ClipStore | None:
        """Open this split's store, building it first where it is missing or outdated (`data.store`); None
        when the default cache folder cannot be written, after a warning (clips are then decoded on every
        access). An explicit cache folder that cannot be written raises."""
        if self._store is None and self.use_store and len(self):
            try:
                self._store = open_store(self.cache, self.store_name(), self, self.store_key(),
                                         self.item_names(), self.sources(), self.workers, self.progress)
            except OSError as error:
                if self.explicit_cache or error.errno == errno.ENOSPC:  # a full disk is for the user to free
                    raise
                warnings.warn(f"{self.cache}: cannot keep prepared clips there ({error.strerror}); every clip is "
                              f"decoded again on each use; pass a writable cache folder (--cache-dir)", stacklevel=2)
                self.use_store = False
        return self._store

    def store_key(self) -> dict:
        return {"preparation_version": PREPARATION_VERSION, "format": self.format, "split": self.split,
                "clip": asdict(self.config), "views": list(self.views), "seed": self.seed,
                "root": str(self.root.resolve())}

    def store_name(self) -> str:
        rate = "" if self.config.fps is None else f"-fps{self.config.fps:g}"
        digest = hashlib.sha1(json.dumps(self.store_key(), sort_keys=True).encode()).hexdigest()[:8]
        return f"clips-{self.split}-f{self.config.frames}-s{self.config.size}{rate}-{digest}"

    def item_names(self) -> list[str]:
        return [f"{p.name}_{v}" for p, v in self.items] if self.format == "camus" else list(self.items)

    def sources(self) -> dict[str, list[int]]:
        """Size and time of every file the split's clips are read from."""
        if self.format == "camus":
            files = [f for p, v in self.items for f in sorted(p.iterdir()) if f"_{v}" in f.name]
        else:
            files = [self.root / "FileList.csv", self.root / "VolumeTracings.csv"]
            files += [self.root / "Videos" / f"{name}.avi" for name in self.items]
        return source_stats(self.root, files)

    def __getstate__(self):  # a DataLoader worker reopens the store itself
        return {**self.__dict__, "_store": None}

    def __getitem__(self, i: int) -> dict:
        c = self.clip(i)
        return {"video": torch.from_numpy(c.video)[None], "ed_map": torch.from_numpy(c.ed_map),
                "frame_labels": torch.from_numpy(c.frame_labels), "case_id": c.case_id, "view": c.view}

    def frame_rate(self) -> float | None:
        """The median frame rate of this split's clips (what a model trained on them has learnt as real time);
        None when no clip's rate is known (the 2019 CAMUS release records none)."""
        if len(self) == 0:
            raise ValueError(f"{self.root}: split {self.split} has no clips")
        known = [fps for i in range(len(self)) if (fps := self.clip(i).fps) is not None]
        return float(np.median(known)) if known else None

    def intensity_histogram(self, bins: int = 256, cache_dir: str | Path | None = None):
        """The target distribution of paper eq. (3) for this split: `data.histogram.intensity_histogram` of the
        grey levels (video + 1) / 2 inside the sector of every frame of every clip, (centres, weights).

        Computed once from the clips (read from the split's store) and cached as an .npz in `cache_dir`
        (default: the dataset's cache folder, `cache_folder`), keyed by
        the clip preparation's version, split, clip config (frames, size, short, fps), views, seed, bins and the
        dataset root; the file is written atomically (temporary file, then os.replace). When the default
        folder cannot be created or written (a read-only dataset root), the histogram is computed every time
        without caching; an explicit `cache_dir` that cannot be written raises. Returns float64 (bins,)
        arrays; the pixel counts are summed one clip at a time.
        """
        folder, explicit = (Path(cache_dir), True) if cache_dir is not None else (self.cache, self.explicit_cache)
        rate = "" if self.config.fps is None else f"-fps{self.config.fps:g}"
        key = (f"v{PREPARATION_VERSION}-{self.split}-f{self.config.frames}-s{self.config.size}-"
               f"{self.config.short}{rate}-{'_'.join(self.views)}-seed{self.seed}-b{bins}")
        # The root is part of the key too, so one explicit cache_dir can serve several datasets.
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:8]
        path = folder / f"intensity_histogram-{key}-{digest}.npz"
        if path.is_file():
            with np.load(path) as cached:
                return cached["centres"], cached["weights"]
        centres, weights = self._sector_histogram(bins)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: np.savez(f, centres=centres, weights=weights))
        except OSError:
            if explicit:
                raise
        return centres, weights

    def _sector_histogram(self, bins: int):
        """Pixel counts of all clips summed, one clip at a time, then normalised."""
        if len(self) == 0:
            raise ValueError(f"{self.root}: split {self.split} has no clips to take a histogram of")
        counts = 0.0
        for i in range(len(self)):
            c = self.clip(i)
            centres, weights = intensity_histogram(((c.video + 1) / 2).clip(0, 1), c.sector, bins)
            counts = counts + weights * (c.sector.sum() * len(c.video))
        return centres, counts / counts.sum()

    def _load_camus(self, patient_dir: Path, view: str) -> Clip:
        return load_camus_clip(patient_dir, view, self.config)

    def _load_echonet(self, name: str) -> Clip:
        record = read_echonet_video(self.root, name, self._filelist, self._tracings)
        sector = sector_from_frames(record.frames)
        ring = myocardium_ring(record.ed_mask, sector)
        return prepare_clip(name, "4CH", record.frames, traced_labels(record), record.ed_index, self.config, record.fps,
                            sector=sector, ed_labels=ring, where=str(self.root / "Videos" / f"{name}.avi"))


def traced_labels(record) -> dict[int, np.ndarray]:
    """The CAMUS labels of an EchoNet-Dynamic video's two traced frames (LV only): {ED index: mask, ES index: mask}."""
    return {record.ed_index: record.ed_mask.astype(np.uint8), record.es_index: record.es_mask.astype(np.uint8)}


def ejection_fractions(root: str | Path) -> list[dict]:
    """Per recording: the EF recorded with the dataset (Info_<view>.cfg or FileList.csv) and the EF measured
    from its ED and ES LV labels by the single-plane method of disks (`echonet.method_of_disks_volume`)."""
    root, rows = Path(root), []
    if detect_format(root) == "camus":
        for patient in list_camus_patients(root):
            for view in ("2CH", "4CH"):
                if (patient / f"Info_{view}.cfg").is_file():
                    lvs = [read_camus_frame(patient, view, instant)[1] == 1 for instant in ("ED", "ES")]
                    rows.append({"case": patient.name, "view": view, "lv": lvs,
                                 "recorded": read_camus_info(patient / f"Info_{view}.cfg")["EF"] / 100})
    else:
        filelist, tracings = read_filelist(root), read_tracings(root)
        usable, skipped = traced_videos(filelist, tracings)
        if skipped:
            warnings.warn(skipped_message(root, skipped, len(filelist)), stacklevel=2)
        for entry in usable:
            record = read_echonet_video(root, entry["FileName"], filelist, tracings)
            rows.append({"case": record.filename, "view": "4CH", "lv": [record.ed_mask, record.es_mask],
                         "recorded": record.ef / 100})
    for row in rows:
        edv, esv = (method_of_disks_volume(lv_tracings(lv), 1.0) for lv in row.pop("lv"))
        row["measured"] = 1 - esv / edv
    return rows
