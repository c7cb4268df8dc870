"""Faults beyond bad options, as users meet them: a full disk, two runs into one folder, the dataset inside
DataLoader workers, an interrupted or repeated `generate`, damaged resume files, and the warnings and OpenCV
lines around an error. Each fault ends in one line that names the path and what went wrong, and leaves nothing
half-written."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from freeecho_core.cli import main
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.files import folder_lock

EXAMPLE_MAP = Path(__file__).resolve().parents[1] / "examples" / "ed_map_2ch.png"


def run(args, capsys) -> tuple[int, list[str]]:
    """The exit code and the stderr lines of `freeecho ARGS`."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err.strip().splitlines()


def tree(folder: Path) -> dict[str, int]:
    """Every path under `folder` with its size (0 for folders)."""
    return {str(p.relative_to(folder)): p.stat().st_size if p.is_file() else 0 for p in folder.rglob("*")}


def evaluate_args(data, checkpoint, out, *extra):
    """One Free-Echo video of one map, from t_i = 55: the quickest evaluation."""
    return ["evaluate", "--data", data, "--unconditional", checkpoint, "--out", out, "--samples", "1", "--max-maps",
            "1", "--methods", "free-echo", "--start-steps", "55", "--device", "cpu", *extra]


def generate_args(checkpoint, out, *extra):
    return ["generate", "--map", EXAMPLE_MAP, "--checkpoint", checkpoint, "--out", out, "--device", "cpu",
            "--sampler-steps", "2", *extra]


# ----------------------------------------------------------------------------- one run per output folder

@pytest.mark.parametrize("command", ["train", "evaluate", "generate"])
def test_a_second_run_into_a_folder_in_use_is_refused(command, trained, tmp_path, capsys):
    data, unconditional, _ = trained
    folder = tmp_path / "busy"
    args = {"train": ["train", "--data", data, "--run-dir", folder, "--steps", "1", "--device", "cpu"],
            "evaluate": evaluate_args(data, unconditional, folder),
            "generate": generate_args(unconditional, folder, "--samples", "1")}[command]
    with folder_lock(folder, "--out"):  # another run holds the folder
        code, err = run(args, capsys)
    assert code == 2 and len(err) == 1, err
    assert f"{folder} is in use by process {os.getpid()}" in err[0]
    assert not folder.exists()  # the refused run wrote nothing
    assert run(args, capsys)[0] == 0  # once it is free the run goes ahead


def test_the_lock_of_a_folder_it_made_leaves_no_folder_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "new", "--out"):
            raise RuntimeError("the run failed")
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- the dataset in DataLoader workers

def test_the_store_is_built_inside_dataloader_workers_on_first_use(tmp_path):
    root = make_phantom_dataset(tmp_path / "camus", "camus", 4, 3, PhantomConfig(height=32, frames=6), workers=1,
                                progress=False)
    data = EchoClips(root, "TRAIN", ClipConfig(4, 16), progress=False)  # no prepare() first
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(len(b["video"]) for b in batches) == len(data) > 0
    assert torch.equal(batches[0]["video"][0], torch.as_tensor(data[0]["video"]))


# ----------------------------------------------------------------------------- generate writes a set

def test_a_rerun_with_fewer_samples_leaves_no_sample_of_the_older_run(trained, tmp_path, capsys):
    _, unconditional, _ = trained
    out = tmp_path / "o"
    assert run(generate_args(unconditional, out, "--samples", "3"), capsys)[0] == 0
    assert run(generate_args(unconditional, out, "--samples", "1", "--format", "mp4"), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["ed_map_2ch.json", "ed_map_2ch.npy", "ed_map_2ch_0.mp4"]
    record = json.loads((out / "ed_map_2ch.json").read_text())
    assert record["config"]["samples"] == 1 and np.load(out / "ed_map_2ch.npy").shape[0] == 1


def test_an_interrupted_generate_leaves_the_folder_as_it_was(trained, tmp_path, capsys, monkeypatch):
    import freeecho_core.generate as generate

    _, unconditional, _ = trained
    out = tmp_path / "o"
    assert run(generate_args(unconditional, out, "--samples", "2"), capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    written = []
    real_write = generate.write_video

    def interrupt_at_the_second(path, video, fps):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        return real_write(path, video, fps)

    monkeypatch.setattr(generate, "write_video", interrupt_at_the_second)
    code, err = run(generate_args(unconditional, out, "--samples", "3", "--seed", "5"), capsys)
    assert code == 130 and err == ["freeecho generate: interrupted"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder, no new sample


# ----------------------------------------------------------------------------- damaged files of earlier runs

def test_a_damaged_training_log_is_named_and_a_torn_last_row_is_dropped(trained, tmp_path, capsys):
    data, _, _ = trained
    run_dir = tmp_path / "run"
    assert run(["train", "--data", data, "--run-dir", run_dir, "--steps", "2", "--device", "cpu"], capsys)[0] == 0
    log = run_dir / "log.csv"
    good = log.read_text()
    log.write_text(good + "3,0.5")  # a process killed while it appended its row
    assert run(["train", "--data", data, "--run-dir", run_dir, "--steps", "3", "--resume", "--device", "cpu"],
               capsys)[0] == 0
    assert log.read_text().startswith(good) and log.read_text().count("\n") == good.count("\n") + 1
    log.write_text(log.read_text().replace("\n3,", "\nthree,"))
    code, err = run(["train", "--data", data, "--run-dir", run_dir, "--steps", "4", "--resume", "--device", "cpu"],
                    capsys)
    assert code == 2 and len(err) == 1 and f"{log}: line 4 is not a step,loss,seconds row" in err[0], err


def test_damaged_records_of_the_study_are_named_or_made_again(trained, tmp_path, capsys):
    data, unconditional, _ = trained
    args = evaluate_args(data, unconditional, tmp_path / "e")
    assert run(args, capsys)[0] == 0
    videos = next((tmp_path / "e" / "videos" / "free-echo@55").glob("*.npy"))
    good = videos.read_bytes()
    videos.write_bytes(good[: len(good) // 2])  # a killed run's set: made again
    assert run(args, capsys)[0] == 0 and videos.read_bytes() == good
    key = tmp_path / "e" / "videos" / "free-echo@55" / "key.json"
    key.write_text('{"method": ')
    code, err = run(args, capsys)
    assert code == 2 and len(err) == 1 and f"{key}: damaged, not the JSON key of the stored videos" in err[0], err


# ----------------------------------------------------------------------------- what reaches stderr

def test_warnings_follow_a_success_as_one_line_each_and_vanish_behind_an_error(trained, tmp_path, capsys):
    data, unconditional, _ = trained
    args = evaluate_args(data, unconditional, tmp_path / "e")
    assert run(args, capsys)[0] == 0
    code, err = run(args + ["--seed", "3"], capsys)  # the stored videos were made with another seed
    assert code == 0 and err[-1].startswith("freeecho evaluate: warning: ") and "generating them again" in err[-1]
    assert len(err) == 1, err
    code, err = run(args + ["--seed", "4", "--segmenter", unconditional], capsys)
    assert code == 2 and len(err) == 1 and "not a segmenter checkpoint" in err[0], err


def test_opencv_adds_no_lines_of_its_own(trained, tmp_path):
    _, unconditional, _ = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(EXAMPLE_MAP.read_bytes()[:200])
    result = subprocess.run([sys.executable, "-m", "freeecho_core.cli", "generate", "--map", str(broken),
                             "--checkpoint", str(unconditional), "--out", str(tmp_path / "o")], capture_output=True,
                            cwd=Path(__file__).resolve().parents[1], env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode("utf-8").strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("freeecho generate: error: ") and "broken.png" in lines[0]


# ----------------------------------------------------------------------------- a full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs mounted for the test (root only; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Fill `disk` up to `leave` free bytes."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate", "generate", "phantom"])
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing_partial(command, trained, small_disk, capsys):
    data, unconditional, _ = trained
    copy = Path(shutil.copytree(data, small_disk / "camus", ignore=shutil.ignore_patterns(".*")))
    fill(small_disk, leave=40_000)
    before = tree(small_disk)
    args = {"prepare": ["prepare", "--data", copy, "--profile", "smoke", "--workers", "1"],
            "train": ["train", "--data", copy, "--run-dir", small_disk / "run", "--steps", "1", "--device", "cpu"],
            "evaluate": evaluate_args(copy, unconditional, small_disk / "e"),
            "generate": generate_args(unconditional, small_disk / "o", "--samples", "4"),
            "phantom": ["phantom", "--format", "camus", "--out", small_disk / "p", "--count", "2", "--workers", "1"],
            }[command]
    code, err = run(args, capsys)
    assert code == 2 and len(err) == 1, err
    assert "no space left" in err[0].lower() and str(small_disk) in err[0], err
    after = tree(small_disk)
    assert not [p for p in after if ".tmp" in p or ".partial-" in p]  # no staging folder, no temporary file
    if command == "evaluate":  # resumable: the video sets and prepared clips completed before the disk filled stay
        assert all(np.load(small_disk / p).size for p in after if p.endswith(".npy") and p not in before)
    else:
        assert after == before


# ----------------------------------------------------------------------------- the data changed under the store

def test_a_deleted_recording_is_named_and_the_old_store_kept(tmp_path, capsys):
    root = make_phantom_dataset(tmp_path / "echonet", "echonet", 4, 2, PhantomConfig(height=32, frames=6),
                                workers=1, progress=False)
    store = EchoClips(root, "TRAIN", ClipConfig(4, 16), progress=False).prepare().folder
    kept = tree(store)
    train_names = {r.split(",")[0] for r in (root / "FileList.csv").read_text().splitlines() if ",TRAIN" in r}
    video = next(v for v in (root / "Videos").glob("*.avi") if v.stem in train_names)
    video.unlink()
    code, err = run(["train", "--data", root, "--run-dir", tmp_path / "run", "--steps", "1", "--device", "cpu",
                     "--profile", "smoke"], capsys)
    assert code == 2 and len(err) == 1 and f"{video}: a recording of {root} is missing" in err[0], err
    assert tree(store) == kept and not (tmp_path / "run").exists()


def test_the_staging_folders_of_killed_runs_are_removed_by_the_next_run_beside_them(tmp_path, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = tmp_path / f".other.partial-{dead.pid}-x1y2"
    abandoned.mkdir()
    (abandoned / "case.nii.gz").write_bytes(b"half")
    assert run(["phantom", "--format", "camus", "--out", tmp_path / "p", "--count", "1", "--height", "32",
                "--frames", "4", "--workers", "1"], capsys)[0] == 0
    assert not abandoned.exists() and (tmp_path / "p" / "phantom.json").is_file()


def test_error_lines_carry_no_errno_prefix():
    from freeecho_core.cli import one_line

    assert one_line(OSError(28, "/data/run/ema.pt: no space left on device")) == \
        "/data/run/ema.pt: no space left on device"
