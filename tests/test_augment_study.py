"""The augmentation study: segmenters trained with and without synthetic videos, tested on TEST, resumable."""
import json
from dataclasses import replace

import numpy as np
import pytest

from freeecho_core.cli import main
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.lv import camus_from_five
from freeecho_core.study.augment import (AugmentStudyConfig, condition_method, conditions, findings,
                                         labelled_clips, own_beat, run_augment_study, synthetic_frames,
                                         synthetic_methods, where_it_fails)
from freeecho_core.study.segmenter import SegConfig, train_segmenter


@pytest.fixture(scope="module")
def judge(trained, tmp_path_factory):
    data, _, _ = trained
    return train_segmenter(SegConfig(frames=4, size=16, steps=5, batch_size=4), data,
                           tmp_path_factory.mktemp("judge") / "seg.pt", progress=False)


def test_the_labelled_clips_of_a_seed_are_nested_and_all_means_every_clip():
    assert labelled_clips(10, 4, 0) == sorted(labelled_clips(10, 4, 0))
    assert set(labelled_clips(10, 2, 1)) <= set(labelled_clips(10, 4, 1))
    assert labelled_clips(10, 0, 1) == list(range(10))
    assert labelled_clips(10, 4, 0) != labelled_clips(10, 4, 1)
    with pytest.raises(ValueError, match="--ks 11: the TRAIN split holds only 10 clips"):
        labelled_clips(10, 11, 0)
    config = AugmentStudyConfig(ks=(2,), seeds=(0,), methods=("free-echo", "sdedit"))
    assert conditions(config) == [(2, 0, "real"), (2, 0, "real + free-echo"), (2, 0, "real + sdedit"),
                                  (None, 0, "free-echo only"), (None, 0, "sdedit only")]
    assert [condition_method(c) for _, _, c in conditions(config)] == [None, "free-echo", "sdedit", "free-echo",
                                                                       "sdedit"]


def test_the_study_trains_every_condition_tests_it_and_resumes(trained, judge, tmp_path):
    data, unconditional, clsfree = trained
    config = AugmentStudyConfig(ks=(1, 0), seeds=(0, 1), methods=("free-echo", "clsfree"), start_step=55,
                                synthetic_maps=2, samples=1, segmenter_steps=3)
    seg = SegConfig(frames=4, size=16, batch_size=4, pseudo_share=0.5, phantom_hearts=3)  # both switched off
    report = run_augment_study(data, unconditional, clsfree, judge, tmp_path / "study", config, seg,
                               progress=False, json_path=tmp_path / "stored.json")
    train = EchoClips(data, "TRAIN", ClipConfig(frames=4, size=16))
    assert len(report["rows"]) == len(conditions(config)) == 2 * 2 * 3 + 2 * 2
    rows = {(r["k"], r["seed"], r["condition"]): r for r in report["rows"]}
    real = rows[1, 0, "real"]
    per_clip = real["train_frames"]  # every frame of a phantom clip is labelled
    assert per_clip == 4 and rows[1, 0, "real + free-echo"]["train_frames"] == per_clip + 1  # the other map's ED frame
    assert rows[0, 0, "real + clsfree"]["train_frames"] == len(train) * 4 + 2  # all clips: the videos of all maps
    assert rows[None, 1, "clsfree only"]["train_frames"] == 2
    test_names = {f"{c.case_id}_{c.view}" for c in (EchoClips(data, "TEST", ClipConfig(frames=4, size=16)).clip(i)
                                                      for i in range(2))}
    assert set(real["test"]) == test_names and all(0 <= v["Dice LV"] <= 1 for v in real["test"].values())
    assert all("EF error" in v for v in real["test"].values())
    lines = {(line["k"], line["condition"]): line for line in report["summary"]}
    assert lines[1, "real + free-echo"]["minus real"].split(":")[0] == "too few maps"  # 2 TEST recordings
    assert "minus real + clsfree" in lines["all", "real + free-echo"] and ("-", "free-echo only") in lines
    memorised = report["memorisation"]
    assert set(memorised["methods"]) == {"free-echo", "clsfree"}
    assert all(m["videos"] == 2 and 0 <= m["rate"] <= 1 for m in memorised["methods"].values())
    assert memorised["thresholds (TEST clips against TRAIN)"]["ssim"] <= 1
    assert all(cost > 0 for cost in report["cpu_seconds_per_video"].values())
    agreement = report["label_agreement"]
    assert 0 <= agreement["judge on TEST frames"] <= 1 and set(agreement["methods"]) == {"free-echo", "clsfree"}
    assert all(m["frames"] == 2 and 0 <= m["Dice LV"] <= 1 and m["Dice LV"] == m["Dice LV on ED frames"]
               for m in agreement["methods"].values())  # ED frames only: the two means are one
    assert json.loads((tmp_path / "stored.json").read_text())["rows"] == report["rows"]
    assert report["seg_config"]["pseudo_share"] == 0 and report["seg_config"]["phantom_hearts"] == 0
    text = findings(report)
    assert text.startswith(f"With 1 labelled TRAIN clip a segmenter reaches a TEST Dice LV of "
                           f"{lines[1, 'real']['Dice LV']:.3f}")
    assert "free-echo too few maps" in text and "clsfree too few maps" in text
    assert "Synthetic videos alone: free-echo" in text and "How well the synthetic labels fit their frames" in text
    assert text.endswith("clsfree 0 of 2.") or text.endswith("clsfree 1 of 2.") or text.endswith("clsfree 2 of 2.")
    # Resumed: nothing is generated or trained again, and the report is the same.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "study").rglob("*") if p.suffix in (".npy", ".json")
              and p.name != "augment-study.json"}
    again = run_augment_study(data, unconditional, clsfree, judge, tmp_path / "study", config, seg, progress=False)
    assert again["rows"] == report["rows"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_ilvr_videos_beat_like_their_clip_every_frame_labelled_and_adding_them_retrains_nothing_else(
        trained, judge, tmp_path):
    data, unconditional, _ = trained
    config = AugmentStudyConfig(ks=(1,), seeds=(0,), methods=("free-echo",), start_step=55, synthetic_maps=2,
                                samples=1, segmenter_steps=3)
    seg = SegConfig(frames=4, size=16, batch_size=4)
    run_augment_study(data, unconditional, None, judge, tmp_path, config, seg, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "segmenters").glob("*.json")}
    more = replace(config, methods=("free-echo", "free-echo-ilvr"))
    report = run_augment_study(data, unconditional, None, judge, tmp_path, more, seg, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # the free-echo segmenters are kept
    rows = {(r["k"], r["condition"]): r for r in report["rows"]}
    assert rows[1, "real + free-echo-ilvr"]["train_frames"] == 4 + 4  # the other map's video: all 4 frames
    assert rows[None, "free-echo-ilvr only"]["train_frames"] == 2 * 4
    assert report["memorisation"]["methods"]["free-echo-ilvr"]["videos"] == 2  # the ED frames only
    assert report["label_agreement"]["methods"]["free-echo-ilvr"]["frames"] == 8  # every frame
    lines = {(line["k"], line["condition"]): line for line in report["summary"]}
    assert "minus real + free-echo" in lines[1, "real + free-echo-ilvr"]
    train = EchoClips(data, "TRAIN", ClipConfig(frames=4, size=16))
    maps = own_beat(train)(0)
    lv = (maps == 2).sum(axis=(1, 2))
    assert np.array_equal(maps[0], train.clip(0).ed_map) and lv[-1] < lv[0] and (np.diff(lv) <= 0).all()
    frames, labels, owners, first = synthetic_frames(train, tmp_path, synthetic_methods(more)["free-echo-ilvr"], [0, 1])
    assert frames.shape == (8, 16, 16) and owners.tolist() == [0] * 4 + [1] * 4
    assert np.array_equal(labels[:4], camus_from_five(maps)) and first.tolist() == [True, False, False, False] * 2
    # Other ILVR settings make its videos and segmenters again, and only those.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "segmenters").glob("*.json")}
    run_augment_study(data, unconditional, None, judge, tmp_path, replace(more, guide_until=50), seg, progress=False)
    changed = {p.name for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert changed == {"1-seed0-real+free-echo-ilvr.json", "none-seed0-free-echo-ilvronly.json"}


def test_the_command_refuses_bad_inputs_in_one_line(trained, judge, tmp_path, capsys):
    data, unconditional, _ = trained
    common = ["augment-study", "--data", str(data), "--unconditional", str(unconditional), "--segmenter", str(judge),
              "--out", str(tmp_path / "out"), "--profile", "smoke"]
    assert main(common + ["--methods", "clsfree"]) == 2
    assert "--methods clsfree needs the Cls-Free model" in capsys.readouterr().err
    assert main(common + ["--ks", "99", "--methods", "free-echo"]) == 2
    assert "--ks 99: the TRAIN split holds only" in capsys.readouterr().err
    assert main(common + ["--methods", "free-echo", "--test-on", str(tmp_path / "nothing")]) == 2
    assert "--test-on " in capsys.readouterr().err
    assert not (tmp_path / "out" / "videos").exists()  # refused before any video
    assert main(common[:4] + [str(tmp_path / "none.pt")] + common[5:]) == 2
    assert f"--unconditional {tmp_path / 'none.pt'}: no such file" in capsys.readouterr().err


def test_a_small_study_through_the_command(trained, judge, tmp_path, capsys):
    data, unconditional, clsfree = trained
    args = ["augment-study", "--data", str(data), "--unconditional", str(unconditional), "--clsfree", str(clsfree),
            "--segmenter", str(judge), "--out", str(tmp_path / "out"), "--profile", "smoke", "--ks", "1", "--seeds",
            "0", "--synthetic-maps", "2", "--samples", "1", "--segmenter-steps", "2", "--start-step", "55",
            "--solver", "euler", "--sampler", "ode", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "real + free-echo" in printed and "memorisation rate" in printed
    report = json.loads((tmp_path / "out" / "augment-study.json").read_text())
    assert report["sampler"]["solver"] == "euler" and np.isfinite(report["summary"][0]["Dice LV"])


def test_the_nearest_train_frame_is_found_across_batches():
    from freeecho_core.study.augment import nearest_train

    class FirstPixels:  # a stand-in judge: its "features" are a frame's first pixels
        def features(self, x):
            return x.flatten(1)[:, :10]

    rng = np.random.default_rng(0)
    queries, train = rng.uniform(-1, 1, (3, 16, 16)).astype(np.float32), rng.uniform(-1, 1, (5, 16, 16)).astype(np.float32)
    train[4] = queries[1]
    near = nearest_train(queries, train, FirstPixels(), batch=4)  # 15 pairs in 4 batches
    assert near["ssim"][1] == pytest.approx(1.0) and near["distance"][1] == 0
    assert (near["ssim"][[0, 2]] < 0.5).all() and (near["distance"][[0, 2]] > 0).all()


def test_where_it_fails_names_the_sources_that_hurt_memorise_or_fall_short():
    report = {"config": {"methods": ["free-echo", "clsfree"]},
              "summary": [{"k": 4, "condition": "real", "Dice LV": 0.88},
                          {"k": 4, "condition": "real + free-echo", "Dice LV": 0.85,
                           "minus real": "fails: -0.03 [-0.05, -0.01] (n = 12)"},
                          {"k": 4, "condition": "real + clsfree", "Dice LV": 0.88,
                           "minus real": "not significant: +0.00 [-0.01, +0.01] (n = 12)"},
                          {"k": "-", "condition": "free-echo only", "Dice LV": 0.70},
                          {"k": "-", "condition": "clsfree only", "Dice LV": 0.77}],
              "memorisation": {"methods": {"free-echo": {"memorised": 0, "videos": 64},
                                           "clsfree": {"memorised": 28, "videos": 64}}},
              "label_agreement": {"judge on TEST frames": 0.95,
                                  "methods": {"free-echo": {"Dice LV": 0.80}, "clsfree": {"Dice LV": 0.90}}},
              "rows": [{"k": 4, "seed": s, "condition": c, "train_frames": n} for s in (0, 1)
                       for c, n in (("real", 64), ("real + free-echo", 256))]}
    text = where_it_fails(report)
    assert text.startswith("Adding free-echo's videos lowers TEST Dice LV at k = 4; its labels fit its frames with "
                           "a Dice LV of 0.800 by the judge (0.950 on real frames), so they teach boundaries that are "
                           "off.")
    fitting = report | {"label_agreement": {"judge on TEST frames": 0.95, "methods": {"free-echo": {"Dice LV": 0.94}}}}
    assert "so the labels are not what fails: its frames differ from recorded ones, and at k = 4 they are 75% of the " \
           "training frames." in where_it_fails(fitting)
    at_all = fitting | {"summary": [line | {"k": "all"} for line in report["summary"] if line["k"] == 4],
                        "rows": [r | {"k": 0} for r in report["rows"]]}  # "all" in the summary is k = 0 in the rows
    assert "lowers TEST Dice LV at k = all; " in where_it_fails(at_all) and "75% of the training" in where_it_fails(at_all)
    assert "clsfree's videos fail the memorisation check: 28 of 64" in text and "Adding clsfree" not in text
    assert text.endswith("the best, clsfree, reaches 0.770, below the 0.880 of 4 labelled clips.")


def test_an_echonet_clip_that_ends_before_its_es_beats_to_its_es_map_at_the_last_frame(tmp_path):
    from freeecho_core.data.make_dataset import make_phantom_dataset
    from freeecho_core.data.phantom import PhantomConfig

    root = make_phantom_dataset(tmp_path / "echonet", "echonet", 3, 0, PhantomConfig(height=32, frames=6), workers=1,
                                progress=False)
    train = EchoClips(root, "TRAIN", ClipConfig(frames=2, size=16))
    assert not any((train.clip(i).frame_labels[1:] >= 0).any() for i in range(len(train)))  # ES outside every clip
    maps = own_beat(train)(0)
    _, labels = train.annotated_frames(0)
    es = labels[np.argmin((labels == 1).sum(axis=(1, 2)))]
    assert maps.shape == (2, 16, 16) and np.array_equal(maps[0], train.clip(0).ed_map)
    assert (maps[1] == 2).sum() < (maps[0] == 2).sum() and abs(int((maps[1] == 2).sum()) - int((es == 1).sum())) <= 3
