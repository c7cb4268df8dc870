"""The data benchmark (`freeecho bench --suite data`): what the prepared-clip store costs and delivers.

For EchoNet-format phantoms of several sizes, at the paper's clip size (24 x 128 x 128): the seconds to prepare
each TRAIN video into the store and the store's bytes per video; then, each in a fresh process, two epochs of a
DataLoader (batch 16, shuffled) with 0, 2 and 8 workers: clips per second delivered in the second epoch (the
first also starts the workers), and the resident memory of the main process (after `release_free_heap`) and of
every worker at the end. The same runs with the clips decoded on every access and with the former per-process
dict of prepared clips (`DictCache`, reproduced here only to be measured) show what the store replaced. Linux
only: memory is read from /proc/<pid>/status.
"""
from __future__ import annotations

import ctypes
import gc
import json
import multiprocessing
import os
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from freeecho_core.bench.timing import environment
from freeecho_core.checkpoint import code_version
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.files import write_text_atomically

PAPER_CLIP = ClipConfig(frames=24, size=128)
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


class DictCache(Dataset):
    """The former EchoClips behaviour, kept for this benchmark only: every clip a process has prepared stays in
    its own dict, as float32 video and int64 labels."""

    def __init__(self, clips: EchoClips):
        self.clips, self.cached = clips, {}

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        if i not in self.cached:
            self.cached[i] = self.clips[i]
        return self.cached[i]


def memory_mb(pid: int) -> dict:
    """Resident memory of a process in MB: all of it, its private (anonymous) part, file-backed and shared."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in MEMORY_FIELDS:
            fields[name] = int(value.split()[0]) / 1024
    return fields


def release_free_heap() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc `malloc_trim`), so that the
    resident memory that follows is what the process holds, not what its allocator kept from freed batches."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the reading includes the allocator's free pages
        pass


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a DataLoader's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return sorted(found)


def loader_run(root: str, cache: str, clip: dict, mode: str, workers: int, batch: int, epochs: int) -> dict:
    """Two (`epochs`) shuffled passes of a DataLoader over the TRAIN split; run in a fresh process."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than cores: measured
    clips = EchoClips(root, "TRAIN", ClipConfig(**clip), cache_dir=cache, store=mode == "store", progress=False)
    if mode == "store":
        clips.prepare()
    dataset = DictCache(clips) if mode == "dict" else clips
    before = memory_mb(os.getpid())
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    delivered, epoch_seconds = 0, []
    for _ in range(epochs):
        start = time.perf_counter()
        for item in loader:
            delivered += len(item["video"])
        epoch_seconds.append(time.perf_counter() - start)
    worker_memory = [memory_mb(pid) for pid in children(os.getpid())] if workers else []
    untrimmed = memory_mb(os.getpid())
    del item
    release_free_heap()
    # The last epoch's rate is the steady one: the first also starts the workers (and, without the store or
    # for the dict's first pass, decodes every recording).
    record = {"mode": mode, "workers": workers, "videos": len(clips), "batch": batch, "epochs": epochs,
              "clips_delivered": delivered, "epoch_seconds": epoch_seconds,
              "clips_per_second": len(clips) / epoch_seconds[-1], "first_epoch_clips_per_second":
              len(clips) / epoch_seconds[0], "main_mb_before": before, "main_mb_untrimmed": untrimmed,
              "main_mb": memory_mb(os.getpid()), "worker_mb": worker_memory}
    del loader
    return record


def _child(queue, args):
    try:
        queue.put(loader_run(*args))
    except Exception as error:  # reported in the record, so that one failed run does not lose the others
        queue.put({"error": f"{type(error).__name__}: {error}"})


def in_fresh_process(*args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, args))
    process.start()
    record = queue.get()
    process.join()
    return record


def data_suite(counts=(50, 500), workers=(0, 2, 8), *, clip: ClipConfig = PAPER_CLIP, batch: int = 16,
               epochs: int = 2, folder="runs/bench-data", compare_workers=(0, 2), out=None, log=print) -> dict:
    """Render (once, in `folder`) an EchoNet-format phantom per count, prepare its TRAIN split into a fresh store
    and time it, then measure the DataLoader runs with `workers`; with `compare_workers` also the decoding path
    and the former dict (whose memory grows with every clip). Writes `out` (JSON) and returns the report."""
    folder = Path(folder)
    report = {"benchmark": "data", "clip": asdict(clip), "batch": batch, "epochs": epochs, "datasets": [],
              **environment("cpu"), "cores": os.cpu_count()}
    for count in counts:
        root = folder / f"echonet-{count}"
        if not (root / "phantom.json").is_file():
            log(f"rendering an EchoNet-format phantom of {count} videos into {root}")
            make_phantom_dataset(root, "echonet", count, 0, PhantomConfig(height=64, frames=32), progress=False)
        cache = folder / f"cache-{count}"
        shutil.rmtree(cache, ignore_errors=True)
        clips = EchoClips(root, "TRAIN", clip, cache_dir=cache, progress=False)
        start = time.perf_counter()
        store = clips.prepare()
        seconds = time.perf_counter() - start
        entry = {"videos": count, "train_videos": len(clips), "prepare_seconds": seconds,
                 "prepare_seconds_per_video": seconds / len(clips), "prepare_workers": store.index["build"]["workers"],
                 "store_bytes": store.nbytes(), "store_mb_per_video": store.nbytes() / len(clips) / 1e6,
                 "source_mb_per_video": sum(p.stat().st_size for p in (root / "Videos").iterdir()) / count / 1e6,
                 "runs": []}
        log(f"{count} videos: prepared {len(clips)} TRAIN clips in {seconds:.1f} s "
            f"({entry['store_mb_per_video']:.2f} MB per video on disk)")
        runs = [("store", w) for w in workers] + [(mode, w) for mode in ("decode", "dict") for w in compare_workers]
        for mode, w in runs:
            record = in_fresh_process(str(root), str(cache), asdict(clip), mode, w, batch, epochs)
            entry["runs"].append(record)
            log(summary_line(count, record))
        report["datasets"].append(entry)
    report["growth"] = growth_per_video(report["datasets"])
    report["code_version"] = code_version()
    if out:
        write_text_atomically(out, json.dumps(report, indent=1) + "\n")
    return report


def summary_line(count: int, r: dict) -> str:
    if "error" in r:
        return f"{count} videos: failed: {r['error']}"
    workers = ", ".join(f"{w['VmRSS']:.0f}" for w in r["worker_mb"]) or "-"
    return (f"{count} videos, {r['mode']}, {r['workers']} workers: {r['clips_per_second']:.1f} clips/s; resident "
            f"MB main {r['main_mb']['VmRSS']:.0f}, workers {workers}")


def mean_worker_mb(run: dict) -> float:
    return float(np.mean([w["VmRSS"] for w in run["worker_mb"]]))


def growth_per_video(datasets: list[dict]) -> list[dict]:
    """Resident MB per TRAIN video, from the smallest to the largest dataset, of the main process and of the
    mean worker, per (mode, workers) measured at both sizes."""
    if len(datasets) < 2:
        return []
    small, large = datasets[0], datasets[-1]
    extra = large["train_videos"] - small["train_videos"]
    rows = []
    for a in small["runs"]:
        b = next((r for r in large["runs"] if (r.get("mode"), r.get("workers")) == (a.get("mode"), a.get("workers"))), None)
        if b is None or "error" in a or "error" in b:
            continue
        row = {"mode": a["mode"], "workers": a["workers"],
               "main_mb_per_video": (b["main_mb"]["VmRSS"] - a["main_mb"]["VmRSS"]) / extra}
        if a["worker_mb"] and b["worker_mb"]:
            row["worker_mb_per_video"] = (mean_worker_mb(b) - mean_worker_mb(a)) / extra
        rows.append(row)
    return rows
