"""Generation from a user's own map: map files in both conventions and formats, video files, the end-to-end
path and its errors."""
import json

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch

from freeecho_core.cli import main
from freeecho_core.data.case import to_five_labels
from freeecho_core.data.phantom import PhantomConfig, make_case
from freeecho_core.generate import (GenerateConfig, fan_sector, five_label_map, generate_from_map, prepare_map,
                                    read_map, write_video)


@pytest.fixture(scope="module")
def camus_map():
    """A phantom's ED labels in the CAMUS convention (0-3), 64 rows."""
    return make_case(0, 0, "4CH", PhantomConfig(height=64, frames=4)).labels[0].astype(np.uint8)


def test_png_and_nifti_maps_read_the_same_labels(camus_map, tmp_path):
    cv2.imwrite(str(tmp_path / "m8.png"), camus_map)
    cv2.imwrite(str(tmp_path / "m16.png"), camus_map.astype(np.uint16))
    nib.save(nib.Nifti1Image(camus_map.T.copy(), np.eye(4)), tmp_path / "m.nii.gz")  # CAMUS stores (W, H)
    nib.save(nib.Nifti1Image(camus_map.T[..., None].copy(), np.eye(4)), tmp_path / "m1.nii")  # (W, H, 1)
    for name in ("m8.png", "m16.png", "m.nii.gz", "m1.nii"):
        labels = read_map(tmp_path / name)
        assert labels.dtype == np.int64 and np.array_equal(labels, camus_map), name


def test_bad_map_files_get_clear_errors(camus_map, tmp_path):
    with pytest.raises(FileNotFoundError, match="map file not found"):
        read_map(tmp_path / "none.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.stack([camus_map] * 3, axis=-1))
    with pytest.raises(ValueError, match="colour PNG"):
        read_map(tmp_path / "rgb.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png is not a PNG"):
        read_map(tmp_path / "junk.png")
    (tmp_path / "junk.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(ValueError, match="not a NIfTI file"):
        read_map(tmp_path / "junk.nii.gz")
    (tmp_path / "m.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a .png, .nii or .nii.gz"):
        read_map(tmp_path / "m.jpg")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.uint8), np.eye(4)), tmp_path / "seq.nii")
    with pytest.raises(ValueError, match="one 2-D frame"):
        read_map(tmp_path / "seq.nii")


def test_camus_maps_get_a_fan_and_five_label_maps_pass_through(camus_map):
    five = five_label_map(camus_map.astype(np.int64))
    assert set(np.unique(five)) == {0, 1, 2, 3, 4}
    assert np.array_equal(five == 2, camus_map == 1) and np.array_equal(five == 4, camus_map == 3)
    sector = fan_sector(camus_map.shape, camus_map)
    assert sector[camus_map > 0].all() and not sector[0, 0] and sector[-1, camus_map.shape[1] // 2]
    native = to_five_labels(camus_map, sector)
    assert np.array_equal(five_label_map(native), native)  # holds label 4: taken as 5-label
    with pytest.raises(ValueError, match=r"labels \[7\] are not in the camus convention"):
        five_label_map(np.where(camus_map == 3, 7, camus_map))
    with pytest.raises(ValueError, match="no LV cavity"):
        five_label_map(np.where(camus_map == 1, 2, camus_map), where="my.png")
    with pytest.raises(ValueError, match="convention must be"):
        five_label_map(camus_map, "nifti")


def test_maps_of_any_size_give_the_same_model_input(camus_map, tmp_path):
    cv2.imwrite(str(tmp_path / "small.png"), camus_map)
    cv2.imwrite(str(tmp_path / "large.png"), np.kron(camus_map, np.ones((3, 3), np.uint8)))  # 3x, exact
    assert np.array_equal(prepare_map(tmp_path / "small.png", 32), prepare_map(tmp_path / "large.png", 32))


@pytest.mark.parametrize("container", ["avi", "mp4"])
def test_videos_are_written_whole_and_decode(tmp_path, container):
    video = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (6, 32, 1))
    path = write_video(tmp_path / f"v.{container}", video, fps=25)
    capture, frames = cv2.VideoCapture(str(path)), []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame[..., 0])
    assert len(frames) == 6 and np.abs(np.stack(frames).astype(int) - video).mean() < 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"v.{container}"]  # no temporary file left
    with pytest.raises(ValueError, match="video format"):
        write_video(tmp_path / "v.gif", video, 25)


def test_generation_from_a_map_file_writes_videos_frames_and_a_record(trained, camus_map, tmp_path):
    _, unconditional, clsfree = trained
    cv2.imwrite(str(tmp_path / "ed.png"), camus_map)
    config = GenerateConfig(start_step=63, samples=2, solver="euler", stochastic_sampler=False)
    result = generate_from_map(tmp_path / "ed.png", unconditional, tmp_path / "out", config)
    videos = result["videos"]
    assert videos.shape == (2, 4, 16, 16) and videos.dtype == np.uint8
    ed = result["map"]
    assert videos[:, 0][:, ed == 3].mean() > videos[:, 0][:, ed == 2].mean() + 50  # t_i = 63: the map's layout
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["ed.json", "ed.npy", "ed_0.avi", "ed_1.avi"]
    record = json.loads((tmp_path / "out" / "ed.json").read_text())
    assert record["seeds"] == [0, 1] and record["config"]["start_step"] == 63 and record["size"] == 16
    again = generate_from_map(tmp_path / "ed.png", unconditional, None, config)
    assert np.array_equal(again["videos"], videos) and again["files"] == []  # seeded
    with pytest.raises(ValueError, match="conditional"):
        generate_from_map(tmp_path / "ed.png", clsfree, None, config)
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        generate_from_map(tmp_path / "ed.png", tmp_path / "missing.pt", None, config)


def test_generate_command(trained, camus_map, tmp_path, capsys):
    _, unconditional, _ = trained
    nib.save(nib.Nifti1Image(camus_map.T.copy(), np.eye(4)), tmp_path / "ed.nii.gz")
    args = ["generate", "--map", str(tmp_path / "ed.nii.gz"), "--checkpoint", str(unconditional), "--t-start", "55",
            "--samples", "1", "--out", str(tmp_path / "out"), "--solver", "euler", "--format", "mp4", "--device", "cpu"]
    assert main(args) == 0
    assert "wrote 1 videos of 4 frames" in capsys.readouterr().out and (tmp_path / "out" / "ed_0.mp4").is_file()
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((16, 16), np.uint8))
    assert main(args[:2] + [str(tmp_path / "empty.png")] + args[3:]) == 2
    assert "empty.png: the label map has no LV cavity" in capsys.readouterr().err


@pytest.mark.parametrize("frames, size", [(8, 16), (16, 64), (24, 16)])
def test_generation_without_data_works_at_the_frame_counts_users_train(camus_map, frames, size, tmp_path):
    """The default OT target (phantom recordings at the model's clip size) for models of 8, 16 and 24 frames:
    OpenCV resizes at most 4 channels at once, so frames must never be passed as channels."""
    from freeecho_core.checkpoint import save_checkpoint, unet_payload
    from freeecho_core.unet3d import UNet3D, unet3d_config

    checkpoint = save_checkpoint(tmp_path / "ema.pt", unet_payload(UNet3D(unet3d_config("tiny")),
                                                                   train_config={"frames": frames, "size": size}))
    cv2.imwrite(str(tmp_path / "ed.png"), camus_map)
    config = GenerateConfig(start_step=63, samples=1, solver="euler", stochastic_sampler=False)
    videos = generate_from_map(tmp_path / "ed.png", checkpoint, None, config)["videos"]
    assert videos.shape == (1, frames, size, size)
