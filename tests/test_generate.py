"""Generation from a user's own map: video files, the end-to-end path (`freeecho generate`) and its errors."""
import json
import sys

import cv2
import nibabel as nib
import numpy as np
import pytest

from freeecho_core.checkpoint import load_checkpoint
from freeecho_core.cli import main
from freeecho_core.data.clips import crop_to_aspect
from freeecho_core.data.phantom import PhantomConfig, make_case
from freeecho_core.generate import GenerateConfig, generate_from_map, write_video
from freeecho_core.sampler import SamplerConfig


@pytest.fixture(scope="module")
def camus_map():
    """A phantom's ED labels in the CAMUS convention (0-3), 64 rows."""
    return make_case(0, 0, "4CH", PhantomConfig(height=64, frames=4)).labels[0].astype(np.uint8)


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
    config = GenerateConfig(start_step=63, samples=2, sampler=SamplerConfig("euler", None))
    result = generate_from_map(tmp_path / "ed.png", unconditional, tmp_path / "out", config)
    videos = result["videos"]
    assert videos.shape == (2, 4, 13, 16) and videos.dtype == np.uint8  # the 64 x 78 map's aspect, at 16 pixels
    ed = crop_to_aspect(result["map"], camus_map.shape)
    assert videos[:, 0][:, ed == 3].mean() > videos[:, 0][:, ed == 2].mean() + 50  # t_i = 63: the map's layout
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["ed.json", "ed.npy", "ed_0.avi", "ed_1.avi"]
    record = json.loads((tmp_path / "out" / "ed.json").read_text())
    assert record["seeds"] == [0, 1] and record["config"]["start_step"] == 63 and record["size"] == 16
    assert record["steps_after_t_i"] == 1  # the default 13 steps, capped by the schedule's own from t_i = 63
    fps = load_checkpoint(unconditional)["data"]["fps"]  # the training clips' frame rate, not a fixed 25
    assert record["convention"] == "camus" and record["config"]["fps"] == result["fps"] == fps
    assert cv2.VideoCapture(str(tmp_path / "out" / "ed_0.avi")).get(cv2.CAP_PROP_FPS) == pytest.approx(fps, rel=1e-3)
    again = generate_from_map(tmp_path / "ed.png", unconditional, None, config)
    assert np.array_equal(again["videos"], videos) and again["files"] == []  # seeded
    with pytest.raises(ValueError, match="conditional"):
        generate_from_map(tmp_path / "ed.png", clsfree, None, config)
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        generate_from_map(tmp_path / "ed.png", tmp_path / "missing.pt", None, config)


def test_generate_command(trained, camus_map, tmp_path, capsys, monkeypatch):
    _, unconditional, _ = trained
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: the bar is drawn
    nib.save(nib.Nifti1Image(camus_map.T.copy(), np.eye(4)), tmp_path / "ed.nii.gz")
    args = ["generate", "--map", str(tmp_path / "ed.nii.gz"), "--checkpoint", str(unconditional), "--t-start", "55",
            "--samples", "1", "--out", str(tmp_path / "out"), "--solver", "euler", "--sampler", "ode", "--format", "mp4",
            "--device", "cpu"]
    assert main(args) == 0
    assert json.loads((tmp_path / "out" / "ed.json").read_text())["config"]["sampler"]["churn"] is None
    printed = capsys.readouterr()
    assert "wrote 1 videos of 4 frames" in printed.out and (tmp_path / "out" / "ed_0.mp4").is_file()
    assert "sampling" in printed.err and "9/9" in printed.err  # the bar over the 9 steps from t_i = 55 to 0
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((16, 16), np.uint8))
    assert main(args[:2] + [str(tmp_path / "empty.png")] + args[3:]) == 2
    assert "empty.png: the label map has no LV cavity" in capsys.readouterr().err


def test_generate_with_ilvr_guidance(trained, camus_map, tmp_path, capsys):
    """`--guide ilvr` makes a guided video (its settings in the record) from the same noise as the plain one;
    settings that cannot guide this model are one line naming them."""
    _, unconditional, _ = trained
    cv2.imwrite(str(tmp_path / "ed.png"), camus_map)
    common = ["generate", "--map", str(tmp_path / "ed.png"), "--checkpoint", str(unconditional), "--samples", "1",
              "--ef", "0.5", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--out", str(tmp_path / "ilvr"), "--guide", "ilvr", "--guide-factor", "2",
                          "--guide-until", "50"]) == 0
    record = json.loads((tmp_path / "ilvr" / "ed.json").read_text())
    assert record["config"]["guide"] == {"ilvr": True, "calibration": 0, "factor": 2, "until": 50, "mask": 0}
    assert json.loads((tmp_path / "plain" / "ed.json").read_text())["config"]["guide"] is None
    assert not np.array_equal(np.load(tmp_path / "plain" / "ed.npy"), np.load(tmp_path / "ilvr" / "ed.npy"))
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "bad"), "--guide", "ilvr", "--guide-factor", "3"]) == 2
    assert "guide factor 3 must divide the frame size 16" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "bad"), "--guide", "nc", "--mapping", "stochastic"]) == 2
    assert "a guide (--guide) takes the barycentric mapping" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "ed.json").exists()


@pytest.mark.parametrize("frames, size", [(8, 16), (16, 64), (24, 16)])
def test_generation_without_data_works_at_the_frame_counts_users_train(camus_map, frames, size, tmp_path):
    """The default OT target (phantom recordings at the model's clip size) for models of 8, 16 and 24 frames:
    OpenCV resizes at most 4 channels at once, so frames must never be passed as channels."""
    from freeecho_core.checkpoint import save_checkpoint, unet_payload
    from freeecho_core.unet3d import UNet3D, unet3d_config

    checkpoint = save_checkpoint(tmp_path / "ema.pt", unet_payload(UNet3D(unet3d_config("tiny")),
                                                                   train_config={"frames": frames, "size": size}))
    cv2.imwrite(str(tmp_path / "ed.png"), camus_map)
    config = GenerateConfig(start_step=63, samples=1, sampler=SamplerConfig("euler", None))
    videos = generate_from_map(tmp_path / "ed.png", checkpoint, None, config)["videos"]
    assert videos.shape == (1, frames, round(size * 64 / 78), size)


def test_video_bytes_are_a_playable_file(tmp_path):
    from freeecho_core.generate import video_bytes

    video = np.stack([np.full((16, 16), 40 * k, np.uint8) for k in range(5)])
    path = tmp_path / "v.avi"
    path.write_bytes(video_bytes(video, 10.0))
    capture = cv2.VideoCapture(str(path))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 and capture.get(cv2.CAP_PROP_FPS) == 10.0


def test_an_lv_only_map_takes_the_echonet_look_model_and_says_so_when_none_is_stored(trained, camus_map, tmp_path,
                                                                                     monkeypatch, capsys):
    import freeecho_core.generate as generate
    from freeecho_core.synthesis import DEFAULT_CHECKPOINT, ECHONET_CHECKPOINT

    _, unconditional, _ = trained
    cv2.imwrite(str(tmp_path / "ed.png"), camus_map)
    cv2.imwrite(str(tmp_path / "lv.png"), (camus_map == 1).astype(np.uint8) * 255)  # an EchoNet-style tracing
    assert generate.model_for_map(tmp_path / "ed.png") == DEFAULT_CHECKPOINT
    assert "phantom-echonet" in str(ECHONET_CHECKPOINT)
    monkeypatch.setattr(generate, "ECHONET_CHECKPOINT", unconditional)
    assert generate.model_for_map(tmp_path / "lv.png") == unconditional
    cv2.imwrite(str(tmp_path / "lv01.png"), (camus_map == 1).astype(np.uint8))
    assert generate.model_for_map(tmp_path / "lv01.png", "camus") == DEFAULT_CHECKPOINT  # told: CAMUS labels
    monkeypatch.setattr(generate, "ECHONET_CHECKPOINT", tmp_path / "none" / "ema.pt")
    args = ["generate", "--map", str(tmp_path / "lv.png"), "--samples", "1", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "lv.png: an LV-only map takes the model trained on the EchoNet look, and none is stored at" in err
    assert "none/ema.pt; give --checkpoint (e.g. " in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_the_default_ot_target_is_the_phantom_look_the_model_was_trained_on(trained, tmp_path):
    import shutil

    from freeecho_core.checkpoint import MODEL_CARD, load_model, trained_look
    from freeecho_core.synthesis import FreeEcho, phantom_target

    _, unconditional, _ = trained
    model_dir = tmp_path / "echonet-model"
    model_dir.mkdir()
    shutil.copy(unconditional, model_dir / "ema.pt")
    assert trained_look(model_dir / "ema.pt") == "camus"  # no card: the default look
    (model_dir / MODEL_CARD).write_text(json.dumps({"data": {"phantom": {"config": {"look": "echonet"}}}}))
    assert trained_look(model_dir / "ema.pt") == "echonet"
    model = load_model(model_dir / "ema.pt")
    pipe = FreeEcho.from_model(model)
    echonet = phantom_target(model.clip.size, model.clip.frames, look="echonet")
    camus = phantom_target(model.clip.size, model.clip.frames)
    assert np.allclose(pipe.target[1], echonet[1]) and not np.allclose(echonet[1], camus[1])
