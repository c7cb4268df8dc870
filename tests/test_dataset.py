"""Phantom -> real file formats -> readers -> clips: the whole data path, and its errors."""
import json

import numpy as np
import pytest

from freeecho_core.data.case import to_five_labels
from freeecho_core.data.clips import (UNLABELLED, ClipConfig, crop_to_aspect, myocardium_ring, pad_to_square,
                                      prepare_clip, resize_frames, resize_labels_nearest, sector_from_frames,
                                      take_frames)
from freeecho_core.data.dataset import CACHE_DIR, EchoClips, camus_splits, detect_format, ejection_fractions
from freeecho_core.data.histogram import intensity_histogram
from freeecho_core.data.make_dataset import echonet_splits, make_phantom_dataset, profile_phantom, rescan_clip
from freeecho_core.data.phantom import PhantomConfig, make_case

CONFIG = PhantomConfig(height=48, frames=10)
CLIP = ClipConfig(frames=6, size=32)


@pytest.fixture(scope="module")
def camus_root(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("d") / "camus", "camus", 4, 3, CONFIG, workers=2,
                                progress=False)


@pytest.fixture(scope="module")
def echonet_root(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("d") / "echonet", "echonet", 4, 3, CONFIG, workers=2,
                                progress=False)


def test_phantom_dataset_layout_and_manifest(camus_root, echonet_root):
    assert detect_format(camus_root) == "camus" and detect_format(echonet_root) == "echonet"
    manifest = json.loads((camus_root / "phantom.json").read_text())
    assert manifest["count"] == 4 and len(manifest["cases"]) == 8 and manifest["config"]["height"] == 48
    assert not [p for p in camus_root.parent.iterdir() if ".partial-" in p.name]  # staging folder moved away
    assert sorted(p.name for p in (echonet_root / "Videos").iterdir())[0].startswith("0X")


def test_camus_clip_round_trip_equals_the_rendered_case(camus_root):
    ds = EchoClips(camus_root, "TRAIN", CLIP, seed=0)
    i = next(i for i, (p, v) in enumerate(ds.items) if v == "2CH")
    clip = ds.clip(i)
    index = int(clip.case_id.removeprefix("patient")) - 1
    case = make_case(3, index, "2CH", CONFIG)
    assert clip.video.shape == (6, 32, 32) and clip.video.dtype == np.float32
    assert case.frames.shape[2] > case.frames.shape[1]  # a CAMUS frame is wider than tall: padded, not stretched
    expected = resize_frames(pad_to_square(case.frames[:1]), 32)[0] / 127.5 - 1
    assert np.abs(clip.video[0] - expected).max() <= 0.5 / 127.5 + 1e-6  # rounded to whole grey levels
    grey = (clip.video + 1) * 127.5
    np.testing.assert_allclose(grey, np.rint(grey), atol=1e-4)
    sector = sector_from_frames(case.frames[: case.es_index + 1])
    sector = resize_labels_nearest(pad_to_square(sector), 32).astype(bool)
    labels = resize_labels_nearest(pad_to_square(case.labels[0]), 32)
    assert np.array_equal(clip.ed_map, to_five_labels(labels, sector))
    assert (clip.ed_map[-3:] == 0).all()  # the rows below the fan are padding
    assert set(np.unique(clip.ed_map)) == {0, 1, 2, 3, 4}
    assert (clip.frame_labels != UNLABELLED).all()  # CAMUS labels every frame of the half sequence


def test_a_second_scan_shows_the_same_heart_with_new_speckle(camus_root, echonet_root):
    ds = EchoClips(camus_root, "TRAIN", CLIP, seed=0)
    clip = ds.clip(0)
    again = rescan_clip(camus_root, clip.case_id, clip.view, CLIP, scan=0)  # scan 0: the recording itself
    assert np.array_equal(again.video, clip.video) and np.array_equal(again.ed_map, clip.ed_map)
    second = rescan_clip(camus_root, clip.case_id, clip.view, CLIP)
    assert np.array_equal(second.frame_labels, clip.frame_labels)  # same heart and beat
    assert (second.ed_map == 2).sum() == (clip.ed_map == 2).sum()
    assert np.abs(second.video - clip.video).mean() > 0.05  # new speckle
    assert np.array_equal(rescan_clip(camus_root, clip.case_id, clip.view, CLIP).video, second.video)
    with pytest.raises(ValueError, match="not a patient of"):
        rescan_clip(camus_root, "patient0099", "2CH", CLIP)
    with pytest.raises(ValueError, match="CAMUS formats only"):
        rescan_clip(echonet_root, "patient0001", "4CH", CLIP)
    with pytest.raises(ValueError, match="no phantom.json"):
        rescan_clip(camus_root.parent, "patient0001", "2CH", CLIP)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (40, 40), (61, 100), (121, 100)])
def test_pad_to_square_keeps_the_aspect_ratio_and_crop_to_aspect_undoes_it(shape):
    image = np.arange(1, 1 + np.prod(shape)).reshape(shape)
    padded = pad_to_square(image)
    S = max(shape)
    assert padded.shape == (S, S) and padded[0, (S - shape[1]) // 2] == 1  # probe side (top) kept, no stretch
    assert np.array_equal(crop_to_aspect(padded, shape), image)  # at the original size: exact
    small = crop_to_aspect(resize_labels_nearest(padded[None], 32), shape)[0]
    assert abs(small.shape[0] / small.shape[1] - shape[0] / shape[1]) < 0.1 and (small > 0).all()


def test_echonet_clips_have_a_grown_myocardium_and_labels_on_traced_frames_only(echonet_root):
    ds = EchoClips(echonet_root, "TRAIN", CLIP)
    item = ds[0]
    assert item["video"].shape == (1, 6, 32, 32) and item["view"] == "4CH"
    assert set(np.unique(item["ed_map"].numpy())) == {0, 1, 2, 3}  # no LA in EchoNet
    labelled = [(f != UNLABELLED).all() for f in item["frame_labels"].numpy()]
    assert labelled[0] and not all(labelled)
    assert set(np.unique(item["frame_labels"][0].numpy())) == {0, 1}  # the traced LV alone


def test_splits_by_patient_and_by_the_split_column(camus_root, echonet_root):
    names = {s: [p.name for p, v in EchoClips(camus_root, s, CLIP).items] for s in ("TRAIN", "VAL", "TEST")}
    assert sum(len(set(n)) for n in names.values()) == 4
    assert not set(names["TRAIN"]) & set(names["TEST"])
    assert [len(EchoClips(echonet_root, s, CLIP)) for s in ("TRAIN", "VAL", "TEST")] == [2, 1, 1]
    split = camus_splits([f"patient{i:04d}" for i in range(500)], seed=0)
    assert [list(split.values()).count(s) for s in ("TRAIN", "VAL", "TEST")] == [400, 50, 50]
    assert split == camus_splits([f"patient{i:04d}" for i in range(500)], seed=0)
    assert echonet_splits(10) == ["TRAIN"] * 8 + ["VAL", "TEST"]


def test_recorded_and_measured_ejection_fractions_agree(camus_root, echonet_root):
    for root in (camus_root, echonet_root):
        rows = ejection_fractions(root)
        assert len(rows) == (8 if root == camus_root else 4)
        assert max(abs(r["recorded"] - r["measured"]) for r in rows) < 0.05  # 48 rows: coarse pixels


def test_time_policies_for_short_clips():
    assert np.array_equal(take_frames(30, 24, "resample", "x")[0], np.arange(24))
    positions, step = take_frames(7, 13, "resample", "x")
    assert np.allclose(positions, np.linspace(0, 6, 13)) and step == 0.5
    assert np.array_equal(take_frames(3, 5, "pad", "x")[0], [0, 1, 2, 2, 2])
    assert np.array_equal(take_frames(30, 5, "resample", "x", step=2.5)[0], [0, 2.5, 5, 7.5, 10])
    with pytest.raises(ValueError, match="clip.avi: 3 frames from end diastole, 5 asked"):
        take_frames(3, 5, "error", "clip.avi")
    with pytest.raises(ValueError, match="short must be one of"):
        ClipConfig(short="loop")


def test_prepare_clip_resamples_labels_to_the_nearest_frame_and_refuses_an_empty_lv():
    frames = np.full((3, 16, 16), 200, np.uint8)
    frames[:, 4:12, 4:12] = np.array([0, 60, 120], np.uint8)[:, None, None]
    labels = {k: np.where(frames[k] < 200, 1, 0).astype(np.uint8) for k in range(3)}
    clip = prepare_clip("c", "2CH", frames, labels, 0, ClipConfig(frames=5, size=16), 50.0,
                        sector=np.ones((16, 16), bool))
    assert np.allclose((clip.video[:, 8, 8] + 1) * 127.5, [0, 30, 60, 90, 120], atol=1e-3)  # linear in time
    assert clip.fps == 100.0  # 3 frames at 50 fps stretched to 5
    with pytest.raises(ValueError, match="c: the ED labels hold no LV"):
        prepare_clip("c", "2CH", frames, {0: np.zeros((16, 16), np.uint8)}, 0, ClipConfig(frames=2, size=16), 50.0)
    with pytest.raises(ValueError, match="c: the frame rate must be positive, got 0"):
        prepare_clip("c", "2CH", frames, labels, 0, ClipConfig(frames=2, size=16), 0)


@pytest.mark.parametrize("fps", [18.0, 50.0, 138.0])  # the range of EchoNet-Dynamic's frame rates
def test_a_fixed_frame_rate_makes_clips_of_one_duration_whatever_the_recording_rate(fps):
    duration, K = 1.0, 11
    t = np.arange(int(duration * fps) + 1) / fps  # one second from ED, grey = 200 t
    frames = np.repeat((200 * t)[:, None, None], 16, 1).repeat(16, 2).astype(np.float32)
    labels = {0: np.pad(np.ones((8, 8), np.uint8), 4)}
    paper = prepare_clip("c", "4CH", frames, labels, 0, ClipConfig(frames=K, size=16), fps)
    fixed = prepare_clip("c", "4CH", frames, labels, 0, ClipConfig(frames=K, size=16, fps=10.0), fps)
    assert paper.fps == fps and fixed.fps == pytest.approx(10.0)
    grey = (fixed.video[:, 8, 8] + 1) * 127.5  # sampled every 0.1 s: 0, 20, ..., 200
    assert np.allclose(grey, 200 * np.arange(K) / 10.0, atol=1.0)
    with pytest.raises(ValueError, match="fps must be a positive frame rate"):
        ClipConfig(fps=0)


def test_sector_is_the_convex_fan_even_where_a_dark_cavity_touches_its_edge():
    case = make_case(0, 0, "2CH", PhantomConfig(height=48, frames=2))
    frames = case.frames.copy()
    frames[:, 40:48, 20:30] = 0  # a black chamber on the arc
    sector = sector_from_frames(frames)
    assert (sector ^ case.sector).mean() < 0.02
    with pytest.raises(ValueError, match="no scan sector"):
        sector_from_frames(np.zeros((2, 8, 8), np.uint8))


def test_myocardium_ring_surrounds_the_lv():
    lv = np.zeros((40, 40), bool)
    lv[10:30, 15:25] = True
    ring = myocardium_ring(lv, np.ones_like(lv))
    assert (ring == 1).sum() == lv.sum() and (ring == 2).any()
    assert ring[20, 13] == 2 and ring[20, 5] == 0  # two pixels thick (0.2 x width 10)


def test_unknown_folder_is_refused_with_its_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a CAMUS folder"):
        detect_format(tmp_path)
    with pytest.raises(FileExistsError, match="is a folder that is not empty"):
        (tmp_path / "x").write_text("")
        make_phantom_dataset(tmp_path, "camus", 1)
    with pytest.raises(ValueError, match="split must be one of"):
        EchoClips(tmp_path, "train")


def fresh_histogram(ds, bins):
    """intensity_histogram over every clip of a split at once: what the cache must hold."""
    clips = [ds.clip(i) for i in range(len(ds))]
    videos = np.concatenate([((c.video + 1) / 2).clip(0, 1) for c in clips])
    sectors = np.concatenate([np.broadcast_to(c.sector, c.video.shape) for c in clips])
    return intensity_histogram(videos, sectors, bins)


def test_split_histogram_is_cached_once_and_equals_a_fresh_computation(camus_root, monkeypatch):
    ds = EchoClips(camus_root, "TRAIN", CLIP)
    centres, weights = ds.intensity_histogram(bins=32)
    expected = fresh_histogram(ds, 32)
    np.testing.assert_allclose(centres, expected[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(weights, expected[1], rtol=1e-12, atol=1e-15)
    files = list((camus_root / CACHE_DIR).glob("*-b32-*.npz"))
    assert len(files) == 1 and "TRAIN" in files[0].name and "b32" in files[0].name
    mtime = files[0].stat().st_mtime_ns

    def fail(self, bins):
        raise AssertionError("the cached histogram was computed again")

    monkeypatch.setattr(EchoClips, "_sector_histogram", fail)
    again = EchoClips(camus_root, "TRAIN", CLIP).intensity_histogram(bins=32)
    np.testing.assert_array_equal(again[1], weights)
    assert files[0].stat().st_mtime_ns == mtime
    with pytest.raises(AssertionError, match="computed again"):  # other bins: another key, no file yet
        ds.intensity_histogram(bins=16)


def test_split_histogram_keys_differ_by_bins_and_split(camus_root, tmp_path):
    for split, bins in [("TRAIN", 8), ("TRAIN", 12), ("TEST", 8)]:
        EchoClips(camus_root, split, CLIP).intensity_histogram(bins=bins, cache_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and all(n.endswith(".npz") for n in names)  # no temporary file left behind
    assert sum("b8-" in n for n in names) == 2 and sum("TEST" in n for n in names) == 1


def test_split_histogram_without_a_writable_root_is_computed_uncached(camus_root, tmp_path):
    root = tmp_path / "read-only"
    root.mkdir()
    (root / "database_nifti").symlink_to(camus_root / "database_nifti")
    (root / CACHE_DIR).write_text("")  # the cache folder cannot be created
    ds = EchoClips(root, "TEST", CLIP)
    np.testing.assert_allclose(ds.intensity_histogram(bins=8)[1], fresh_histogram(ds, 8)[1], rtol=1e-12)
    assert (root / CACHE_DIR).is_file()
    with pytest.raises(OSError):  # an explicit cache folder that cannot be made is an error
        ds.intensity_histogram(bins=8, cache_dir=root / CACHE_DIR)


def test_a_profile_phantom_is_rendered_with_the_profile_settings_once(tmp_path, camus_root):
    profile = tmp_path / "p.yaml"
    profile.write_text("01_data: {phantom_count: 1, phantom_height: 32, phantom_frames: 4, seed: 5}\n")
    root = profile_phantom(tmp_path / "my-phantom", "camus", profile)
    manifest = json.loads((root / "phantom.json").read_text())
    assert (manifest["count"], manifest["seed"], manifest["config"]["height"], manifest["config"]["frames"]) == (1, 5, 32, 4)
    assert profile_phantom(camus_root, "camus", profile) == camus_root  # already there: kept
    assert json.loads((camus_root / "phantom.json").read_text())["count"] == 4
    real = tmp_path / "CAMUS"  # a user's dataset is never written into
    assert profile_phantom(real, "camus", profile) == real and not real.exists()
