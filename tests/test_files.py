"""Outputs written whole or not at all, with the modes the user's umask gives; staging folders of killed runs
removed by the next run."""
import os
import stat

import numpy as np
import pytest
import torch

import freeecho_core.checkpoint as checkpoint
from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.files import check_output_folder, save_array_atomically, staged_folder, write_text_atomically
from freeecho_core.generate import write_video


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_modes_of_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        data = make_phantom_dataset(tmp_path / "p", "camus", 1, 0, PhantomConfig(height=32, frames=4), workers=1,
                                    progress=False)
        text = write_text_atomically(tmp_path / "m.json", "{}\n")
        array = save_array_atomically(tmp_path / "v.npy", np.zeros(3, np.uint8))
        ckpt = checkpoint.save_checkpoint(tmp_path / "c.pt", {"config": {}})
    finally:
        os.umask(old)
    assert mode(data) == 0o755 and mode(text) == mode(array) == mode(ckpt) == 0o644


def test_a_failed_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=f"{tmp_path / 'ema.pt'}: could not write the checkpoint"):
        checkpoint.save_checkpoint(tmp_path / "ema.pt", {"config": {}})
    assert list(tmp_path.iterdir()) == []


def test_a_video_that_cannot_be_written_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="fps: expected a number >= 1"):
        write_video(tmp_path / "v.avi", np.zeros((4, 16, 16), np.uint8), 0)
    assert list(tmp_path.iterdir()) == []


def test_staging_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / ".data.partial-999999999-x1"  # no such process
    live = tmp_path / f".data.partial-{os.getppid()}-x2"
    dead.mkdir(), live.mkdir()
    with staged_folder(tmp_path / "data", "datasets") as staging:
        (staging / "a").write_text("1")
    assert not dead.exists() and live.exists() and (tmp_path / "data" / "a").is_file()


def test_output_folders_are_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="--out .*: is a file"):
        check_output_folder(tmp_path / "file", "--out")
    with pytest.raises(ValueError, match="is a file, so the folder cannot be created"):
        check_output_folder(tmp_path / "file" / "sub", "--out")
    assert check_output_folder(tmp_path / "new" / "sub", "--out") == tmp_path / "new" / "sub"
