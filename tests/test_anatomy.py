"""The anatomy metrics (issue 7): Dice, the area-length EF proxy, roughness, segmenter features, and the
segmenter that reads generated videos."""
import json

import numpy as np
import pytest
import torch

from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.lv import camus_from_five, dice, ef_area_proxy, lv_area_curve
from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import PhantomConfig, make_case
from freeecho_core.study.anatomy import (clip_features, feature_distances, frame_features, map_scores, map_specificity,
                                         roughness, seed_correlations, specificity_from_labels)
from freeecho_core.study.segmenter import (SegConfig, SegUNet, blend_renderings, judge_hearts, labelled_frames,
                                         load_segmenter, segment, train_segmenter)

SEG = SegConfig(frames=4, size=32, steps=150, batch_size=16)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("anatomy") / "camus", "camus", 5, 0,
                                PhantomConfig(height=48, frames=8), workers=2, progress=False)


@pytest.fixture(scope="module")
def segmenter(phantom, tmp_path_factory):
    return train_segmenter(SEG, phantom, tmp_path_factory.mktemp("seg") / "segmenter.pt", progress=False)


def five_label_maps(count: int, size: int = 48) -> list[np.ndarray]:
    """ED maps of `count` different phantom hearts (5 labels) at size x size."""
    from freeecho_core.data.clips import ed_map_from_labels

    cases = [make_case(7, i, "2CH", PhantomConfig(height=size, frames=2)) for i in range(count)]
    return [ed_map_from_labels(c.labels[0], c.sector, size) for c in cases]


def test_a_video_of_its_own_map_has_a_margin_and_one_that_ignores_the_map_has_none():
    maps = five_label_maps(5)
    truth = [np.repeat(camus_from_five(m)[None], 3, axis=0) for m in maps]  # 3 samples that read as their map
    follows = specificity_from_labels(truth, maps)
    assert follows["Dice LV own map"] == 1.0
    assert follows["Dice LV other maps"] < 0.95 and follows["map margin"] == pytest.approx(
        1 - follows["Dice LV other maps"])
    same = [np.repeat(camus_from_five(maps[0])[None], 3, axis=0)] * len(maps)  # every map gets map 0's heart
    ignores = specificity_from_labels(same, maps)
    assert ignores["map margin"] == pytest.approx(0.0, abs=1e-12)
    assert ignores["Dice LV own map"] == pytest.approx(ignores["Dice LV other maps"])
    with pytest.raises(ValueError, match="two or more maps"):
        specificity_from_labels(truth[:1], maps[:1])


def test_seed_correlations_tell_whether_the_seed_or_the_map_decides_the_video():
    maps = five_label_maps(4, 32)
    g = torch.Generator().manual_seed(0)
    noise = [torch.rand(6, 32, 32, generator=g) for _ in range(3)]  # one start noise per seed
    hearts = [torch.from_numpy(camus_from_five(m) == 1).float()[None].expand(6, 32, 32) for m in maps]
    by_seed = [torch.stack([n + 0.05 * h for n in noise]) for h in hearts]  # the seed decides
    by_map = [torch.stack([h + 0.05 * torch.rand(6, 32, 32, generator=g) for _ in noise]) for h in hearts]
    seed = seed_correlations(by_seed, maps)
    heart = seed_correlations(by_map, maps)
    assert seed["corr across maps, same seed"] > 0.9 > 0.1 > seed["corr across seeds, same map"]
    assert heart["corr across seeds, same map"] > 0.9 and heart["corr across maps, same seed"] < 0.8


def test_dice_of_a_map_with_itself_is_one_and_falls_as_it_shifts():
    labels = np.zeros((64, 64), np.int64)
    labels[16:48, 20:40] = 1
    assert dice(labels, labels, 1) == 1.0
    scores = [dice(np.roll(labels, shift, axis=1), labels, 1) for shift in (0, 2, 5, 10, 25)]
    assert all(a > b for a, b in zip(scores, scores[1:])) and scores[-1] == 0.0
    assert dice(labels, labels, 3) == 1.0  # absent from both: perfect agreement


@pytest.mark.parametrize("index", [0, 2, 3, 5])
@pytest.mark.parametrize("view", ["2CH", "4CH"])
def test_ef_proxy_on_true_phantom_labels_is_within_005_of_the_drawn_ef(index, view):
    case = make_case(0, index, view, PhantomConfig(height=64, frames=16))
    assert ef_area_proxy(case.labels) == pytest.approx(case.ef, abs=0.05)  # measured: within 0.021


def test_ef_proxy_and_area_curve_of_a_known_shape():
    clip = np.zeros((3, 40, 40), np.int64)
    clip[0, 5:35, 10:30] = 1  # A = 600, L = 30
    clip[1, 5:35, 15:25] = 1  # A = 300, L = 30: V falls to a quarter
    clip[2] = clip[0]
    assert list(lv_area_curve(clip)) == [600, 300, 600]
    assert ef_area_proxy(clip) == pytest.approx(0.75)
    assert np.isnan(ef_area_proxy(np.zeros((3, 8, 8), np.int64)))


def test_roughness_is_zero_for_a_straight_curve_and_high_for_flicker():
    assert roughness(np.linspace(100, 50, 10)) == pytest.approx(0.0)
    flicker = np.array([100, 60, 100, 60, 100, 60], float)
    assert roughness(flicker) == pytest.approx(80 / 80)
    assert roughness(np.cos(np.linspace(0, 2 * np.pi, 24)) * 10 + 100) < 0.01
    assert np.isnan(roughness(np.array([1.0, 2.0])))


def test_five_labels_map_back_to_camus_labels():
    assert list(camus_from_five(np.array([0, 1, 2, 3, 4]))) == [0, 0, 1, 2, 3]


def test_segmenter_features_are_deterministic_and_per_sample():
    torch.manual_seed(0)
    net = SegUNet(SegConfig(size=32, dim=8)).eval()
    videos = torch.rand(3, 4, 32, 32)
    first, again = frame_features(net, videos), frame_features(net, videos)
    assert first.shape == (3, 4, 32) and np.array_equal(first, again)
    assert np.allclose(frame_features(net, videos[1:2]), first[1:2], atol=1e-6)  # batch does not matter
    clips = clip_features(first)
    assert clips.shape == (3, 64) and np.allclose(clips[:, :32], first.mean(axis=1))


def test_trained_segmenter_reports_its_held_out_dice_and_reads_true_frames(phantom, segmenter):
    net, payload = load_segmenter(segmenter)
    assert set(payload["val_dice"]) == {"LV cavity", "myocardium", "left atrium"}
    assert payload["val_dice"]["LV cavity"] > 0.8, payload["val_dice"]  # measured ~0.95 after 150 steps
    assert payload["config"]["size"] == 32 and payload["code_version"]["package"]
    from freeecho_core.data.clips import ClipConfig
    from freeecho_core.data.dataset import EchoClips

    clip = EchoClips(phantom, "TEST", ClipConfig(frames=4, size=32)).clip(0)
    real = torch.from_numpy((clip.video + 1) / 2)
    scores = map_scores(net, real[None], real, clip.ed_map, list(payload["val_dice"]))
    assert scores["Dice LV"] > 0.8 and scores["EF proxy error"] == 0.0  # the real clip judged against itself
    assert set(scores) == {"Dice LV", "Dice myo", "Dice LA", "EF proxy error", "LV area roughness",
                           "real EF proxy", "real LV area roughness"}
    shifted = map_scores(net, torch.roll(real, 8, dims=-1)[None], real, clip.ed_map, ["LV cavity"])
    assert shifted["Dice LV"] < scores["Dice LV"] - 0.2  # a video off the map scores lower
    noise = torch.rand(4, 4, 32, 32)
    distances = feature_distances(net, [noise[:2], noise[2:]], torch.stack([real, real.flip(-1)]))
    near = feature_distances(net, [real[None], real.flip(-1)[None]], torch.stack([real, real.flip(-1)]))
    assert distances["FD-seg"] > near["FD-seg"] and distances["FVD-seg"] > near["FVD-seg"]
    # The bootstrap over maps: a spread only for generated and real paired by map.
    assert distances["FD-seg s.e."] > 0 and near["FD-seg s.e."] < distances["FD-seg"] - near["FD-seg"]
    assert "FD-seg s.e." not in feature_distances(net, [noise], torch.stack([real, real.flip(-1)]))
    assert segment(net, clip.video).shape == clip.video.shape


def test_a_diffusion_checkpoint_is_not_taken_for_a_segmenter(tmp_path):
    from freeecho_core.checkpoint import save_checkpoint, unet_payload
    from freeecho_core.unet3d import UNet3D, unet3d_config

    path = save_checkpoint(tmp_path / "ema.pt", unet_payload(UNet3D(unet3d_config("tiny"))))
    with pytest.raises(ValueError, match="not a segmenter checkpoint"):
        load_segmenter(path)


def test_map_specificity_reads_videos_through_the_segmenter(phantom, segmenter):
    net, _ = load_segmenter(segmenter)
    data = EchoClips(phantom, "TRAIN", ClipConfig(frames=SEG.frames, size=SEG.size))
    clips = [data.clip(i) for i in range(3)]
    real = [torch.from_numpy((c.video + 1) / 2)[None].expand(2, -1, -1, -1) for c in clips]
    report = map_specificity(net, real, [c.ed_map for c in clips])
    assert report["Dice LV own map"] > report["Dice LV other maps"] and report["map margin"] > 0
    assert report["corr across seeds, same map"] == pytest.approx(1.0)  # two identical samples
    assert len(report["specificity_per_map"]) == 3


def test_a_segmenter_stored_before_a_setting_existed_is_used_with_that_setting_at_its_default(phantom, segmenter,
                                                                                              tmp_path):
    from freeecho_core.checkpoint import load_checkpoint, save_checkpoint
    from freeecho_core.study.segmenter import trained_segmenter

    payload = load_checkpoint(segmenter)
    payload["config"].pop("augment")  # as checkpoints written before the option was added
    older = save_checkpoint(tmp_path / "older.pt", payload)
    assert trained_segmenter(SEG, phantom, older) == (older, "stored")


def test_flat_renderings_paint_each_frames_labels_with_the_ed_maps_grey_levels(phantom):
    """The pseudo renderings the judge learns from: per frame one grey level per label, the same levels in every
    frame of a clip (those eq. (3) gives its ED map), and blends between a frame and its rendering."""
    data = EchoClips(phantom, "TRAIN", ClipConfig(frames=4, size=32))
    frames, labels, flat = labelled_frames(data, renderings=True)
    assert flat.shape == frames.shape and flat.dtype == np.float32
    first = flat[:4]  # the first clip's 4 labelled frames
    for label in range(1, 4):
        levels = np.unique(np.round(first[labels[:4] == label], 6))
        assert len(levels) == 1  # one grey per label over the clip's frames
    assert len(np.unique(np.round(first[0], 6))) <= 5  # outside, tissue, LV, myocardium, LA
    x, f = torch.from_numpy(frames[:64])[:, None], torch.from_numpy(flat[:64])[:, None]
    g = torch.Generator().manual_seed(0)
    assert torch.equal(blend_renderings(x, f, 0.0, g), x)
    mixed = blend_renderings(x, f, 1.0, g)
    a = ((mixed - f) * (x - f)).sum((1, 2, 3)) / ((x - f) ** 2).sum((1, 2, 3))  # the blend weight of each frame
    assert ((a >= 0) & (a <= 1)).all() and a.std() > 0.1
    assert torch.allclose(mixed, a[:, None, None, None] * x + (1 - a[:, None, None, None]) * f, atol=1e-5)


def test_the_pseudo_share_is_a_checked_setting():
    with pytest.raises(ValueError, match="pseudo_share"):
        SegConfig(pseudo_share=1.5)


def test_a_judge_with_phantom_hearts_learns_from_other_hearts_and_is_scored_on_the_studys_val(phantom, tmp_path):
    own = load_segmenter(train_segmenter(SegConfig(frames=4, size=32, steps=1), phantom, tmp_path / "own.pt",
                                         progress=False))[1]
    config = SegConfig(frames=4, size=32, steps=1, phantom_hearts=8, phantom_seed=5)
    extra = load_segmenter(train_segmenter(config, phantom, tmp_path / "extra.pt", progress=False))[1]
    with judge_hearts(config, phantom, progress=False) as root:
        hearts = labelled_frames(EchoClips(root, "TRAIN", ClipConfig(frames=4, size=32)))[0]
        rendered = json.loads((root / "phantom.json").read_text())
    assert not root.exists()  # the extra hearts are temporary
    assert rendered["count"] == 8 and rendered["seed"] == 5 and rendered["config"]["height"] == 48
    assert extra["train_frames"] == len(hearts) > own["train_frames"]
    assert extra["val_dice"].keys() == own["val_dice"].keys() and extra["data_root"] == str(phantom)


def test_phantom_hearts_need_a_phantom_and_a_seed_of_their_own(phantom, tmp_path):
    with pytest.raises(ValueError, match="seed of"):
        train_segmenter(SegConfig(frames=4, size=32, steps=1, phantom_hearts=2, phantom_seed=0), phantom,
                        tmp_path / "s.pt", progress=False)
    (tmp_path / "real").mkdir()
    with pytest.raises(ValueError, match="no phantom.json"):
        train_segmenter(SegConfig(frames=4, size=32, steps=1, phantom_hearts=2), tmp_path / "real",
                        tmp_path / "s.pt", progress=False)
    with pytest.raises(ValueError, match="phantom_hearts"):
        SegConfig(phantom_hearts=-1)
