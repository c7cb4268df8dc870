"""The prepared-clip store: clips identical to freshly decoded ones, built once per key, rebuilt when the
sources change, nothing half-written, shared by DataLoader workers and processes, and the same numbers for
training, evaluation and the segmenter as the decoding path."""
import json
import multiprocessing
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import CACHE_DIR, CACHE_DIR_VARIABLE, EchoClips
from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.data.store import ClipStore
from freeecho_core.sampler import SamplerConfig
from freeecho_core.study.scoring import evaluate
from freeecho_core.study.segmenter import SegConfig, train_segmenter
from freeecho_core.study.videos import EvalConfig
from freeecho_core.train import TrainConfig, train

CLIP = ClipConfig(frames=8, size=32)  # 8 frames: more than the 6 the CAMUS phantom holds, so clips are resampled


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    camus = make_phantom_dataset(root / "camus", "camus", 4, 1, PhantomConfig(height=32, frames=6), workers=2,
                                 progress=False)
    echonet = make_phantom_dataset(root / "echonet", "echonet", 10, 1, PhantomConfig(height=32, frames=12),
                                   workers=2, progress=False)
    return camus, echonet


def assert_same_clip(a, b):
    for name in ("video", "frame_labels", "ed_map", "sector"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert (a.case_id, a.view, a.fps) == (b.case_id, b.view, b.fps)


@pytest.mark.parametrize("fmt", ["camus", "echonet"])
def test_stored_clips_equal_decoded_clips(phantoms, fmt, tmp_path):
    root = phantoms[0] if fmt == "camus" else phantoms[1]
    ds = EchoClips(root, "TRAIN", CLIP, cache_dir=tmp_path, progress=False, workers=2)
    store = ds.prepare()
    assert isinstance(store, ClipStore) and len(store) == len(ds) > 1
    for i in range(len(ds)):
        assert_same_clip(ds.clip(i), ds.decode(i))
    if fmt == "echonet":  # ED and ES traced only: unlabelled frames survive the uint8 round trip
        assert (ds.clip(0).frame_labels == -1).any() and (ds.clip(0).frame_labels == 1).any()
    video = np.load(store.folder / "video.npy", mmap_mode="r")
    assert video.dtype == np.uint8 and video.shape == (len(ds), 8, 32, 32)


def test_a_store_is_built_once_and_rebuilt_when_a_source_or_the_config_changes(phantoms, tmp_path, monkeypatch):
    root = phantoms[1]
    first = EchoClips(root, "TRAIN", CLIP, cache_dir=tmp_path, progress=False, workers=1)
    folder = first.prepare().folder
    index_time = (folder / "index.json").stat().st_mtime_ns

    def no_decoding(self, i):
        raise AssertionError("a current store was prepared again")

    with monkeypatch.context() as patch:
        patch.setattr(EchoClips, "decode", no_decoding)
        again = EchoClips(root, "TRAIN", CLIP, cache_dir=tmp_path, progress=False, workers=1)
        assert again.prepare().folder == folder and (folder / "index.json").stat().st_mtime_ns == index_time
        other = EchoClips(root, "TRAIN", ClipConfig(frames=8, size=16), cache_dir=tmp_path, progress=False,
                          workers=1)
        with pytest.raises(AssertionError, match="prepared again"):  # another clip config: another store
            other.prepare()
    video = root / "Videos" / f"{first.items[0]}.avi"
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the recording changed
    decoded, original = [], EchoClips.decode
    monkeypatch.setattr(EchoClips, "decode", lambda self, i: decoded.append(i) or original(self, i))
    EchoClips(root, "TRAIN", CLIP, cache_dir=tmp_path, progress=False, workers=1).prepare()
    assert decoded == list(range(len(first)))
    index = json.loads((folder / "index.json").read_text())
    assert index["sources"][f"Videos/{first.items[0]}.avi"][1] == stat.st_mtime_ns + 10**9
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_an_interrupted_build_leaves_no_store(phantoms, tmp_path, monkeypatch):
    original = EchoClips.decode

    def fail_on_the_third(self, i):
        if i == 2:
            raise ValueError("a broken recording")
        return original(self, i)

    monkeypatch.setattr(EchoClips, "decode", fail_on_the_third)
    ds = EchoClips(phantoms[1], "TRAIN", CLIP, cache_dir=tmp_path, progress=False, workers=1)
    with pytest.raises(ValueError, match="a broken recording"):
        ds.prepare()
    assert not list(tmp_path.iterdir())  # neither the store nor its staging folder nor its lock


def test_the_cache_folder_follows_the_option_then_the_variable_then_the_root(phantoms, tmp_path, monkeypatch):
    root = phantoms[0]
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "shared"))
    assert EchoClips(root, "TEST", CLIP, progress=False).prepare().folder.parent == tmp_path / "shared"
    explicit = EchoClips(root, "TEST", CLIP, cache_dir=tmp_path / "mine", progress=False).prepare()
    assert explicit.folder.parent == tmp_path / "mine"
    monkeypatch.delenv(CACHE_DIR_VARIABLE)
    assert EchoClips(root, "TEST", CLIP, progress=False).prepare().folder.parent == root / CACHE_DIR
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(OSError):  # an explicit folder that cannot be made is an error, not a silent fallback
        EchoClips(root, "TEST", CLIP, cache_dir=blocked / "sub", progress=False).prepare()


def _prepare_in_a_process(root, cache, log):
    with open(log, "a") as f:
        os.dup2(f.fileno(), 2)
    EchoClips(root, "TRAIN", CLIP, cache_dir=cache, progress=False, workers=1).prepare()


def test_processes_started_together_build_the_store_once(phantoms, tmp_path, monkeypatch):
    original, log = EchoClips.decode, tmp_path / "decoded.txt"

    def logged(self, i):
        with open(log, "a") as f:
            f.write(f"{i}\n")
        return original(self, i)

    monkeypatch.setattr(EchoClips, "decode", logged)  # inherited by the forked processes
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_prepare_in_a_process, args=(phantoms[1], tmp_path / "cache",
                                                                    tmp_path / f"err{k}.txt")) for k in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    n = len(EchoClips(phantoms[1], "TRAIN", CLIP))
    assert sorted(int(line) for line in log.read_text().split()) == list(range(n))  # each clip decoded once


def test_dataloader_workers_read_the_same_batches_as_the_decoding_path(phantoms, tmp_path):
    stored = EchoClips(phantoms[1], "TRAIN", CLIP, cache_dir=tmp_path, progress=False)
    stored.prepare()  # built before the workers start; each worker opens it read-only
    decoded = EchoClips(phantoms[1], "TRAIN", CLIP, store=False)
    for workers in (0, 2):
        a = list(DataLoader(stored, batch_size=3, num_workers=workers))
        b = list(DataLoader(decoded, batch_size=3, num_workers=0))
        for x, y in zip(a, b, strict=True):
            for name in ("video", "ed_map", "frame_labels"):
                assert torch.equal(x[name], y[name])


def without_store(monkeypatch):
    monkeypatch.setattr(EchoClips, "prepare", lambda self: None)


def test_training_evaluation_and_the_segmenter_give_the_same_numbers_from_the_store(phantoms, tmp_path,
                                                                                     monkeypatch):
    data = phantoms[0]
    config = TrainConfig(preset="tiny", frames=8, size=16, batch_size=2, steps=3, checkpoint_every=3)
    seg = SegConfig(frames=8, size=16, steps=3, batch_size=4)
    evaluation = EvalConfig(samples=1, batch=1, sampler=SamplerConfig("euler", None, None), start_steps=(55,),
                            methods=("free-echo",))
    runs = {}
    for path in ("store", "decoded"):
        with monkeypatch.context() as patch:
            if path == "decoded":
                without_store(patch)
            out = tmp_path / path
            train(config, data, out / "run", progress=False)
            segmenter = train_segmenter(seg, data, out / "seg.pt", progress=False)
            report = evaluate(data, out / "run" / "ema.pt", None, out / "eval", evaluation, max_maps=2,
                              segmenter=segmenter, progress=False)
            runs[path] = ((out / "run" / "log.csv").read_text(), torch.load(out / "run" / "ema.pt"),
                          torch.load(segmenter), report)
    (log_a, ema_a, seg_a, report_a), (log_b, ema_b, seg_b, report_b) = runs["store"], runs["decoded"]
    assert [line.split(",")[:2] for line in log_a.splitlines()] == [line.split(",")[:2] for line in log_b.splitlines()]
    compared = 0
    for a, b in ((ema_a, ema_b), (seg_a, seg_b)):
        for key in [k for k, v in a.items() if isinstance(v, dict)]:
            for name, tensor in a[key].items():
                if torch.is_tensor(tensor):
                    assert torch.equal(tensor, b[key][name]), (key, name)
                    compared += 1
    assert compared > 20  # the weights of both networks were compared
    assert seg_a.get("val_dice") == seg_b.get("val_dice")
    assert json.dumps(report_a["methods"], sort_keys=True) == json.dumps(report_b["methods"], sort_keys=True)


def test_the_prepare_command_builds_every_split_where_the_cache_option_says(phantoms, tmp_path, capsys):
    from freeecho_core.cli import main

    profile = tmp_path / "p.yaml"
    profile.write_text("train: {preset: tiny, frames: 8, size: 16}\n")
    assert main(["--cache-dir", str(tmp_path / "cache"), "prepare", "--data", str(phantoms[1]),
                 "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    assert all(f"{split}: " in out for split in ("TRAIN", "VAL", "TEST")) and "MB per clip" in out
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 3
    assert CACHE_DIR_VARIABLE not in os.environ  # the option held for the command only
    assert not (phantoms[1] / CACHE_DIR).exists() or not any((phantoms[1] / CACHE_DIR).glob("clips-*-s16-*"))


def test_the_data_benchmark_measures_preparation_throughput_and_memory(tmp_path):
    from freeecho_core.bench.data import data_suite, growth_per_video

    report = data_suite((5,), (0,), clip=ClipConfig(frames=4, size=16), batch=2, folder=tmp_path,
                        compare_workers=(), out=tmp_path / "data.json", log=lambda line: None)
    assert json.loads((tmp_path / "data.json").read_text())["datasets"] == json.loads(json.dumps(report["datasets"]))
    entry = report["datasets"][0]
    assert entry["train_videos"] == 3 and entry["prepare_seconds_per_video"] > 0
    assert entry["store_bytes"] >= 3 * (2 * 4 * 16 * 16 + 2 * 16 * 16)  # video and labels, map and sector: uint8
    (run,) = entry["runs"]
    assert run["clips_delivered"] == 2 * 3 and len(run["epoch_seconds"]) == 2 and run["main_mb"]["VmRSS"] > 0
    assert run["clips_per_second"] == pytest.approx(3 / run["epoch_seconds"][-1])
    small = {"train_videos": 10, "runs": [{"mode": "dict", "workers": 0, "main_mb": {"VmRSS": 100.0}, "worker_mb": []}]}
    large = {"train_videos": 30, "runs": [{"mode": "dict", "workers": 0, "main_mb": {"VmRSS": 140.0}, "worker_mb": []}]}
    assert growth_per_video([small, large]) == [{"mode": "dict", "workers": 0, "main_mb_per_video": 2.0}]
