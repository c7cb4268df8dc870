"""The EF study (issue 18): targets in, EF proxies read back by the segmenter, the still baseline and the floor."""
import json
import shutil

import numpy as np
import pytest
import torch

from freeecho_core.cli import main
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.study.ef import EFStudyConfig, agreement, run_ef_study, summary_rows
from freeecho_core.study.segmenter import SegConfig, train_segmenter
from freeecho_core.synthesis import FreeEcho


def test_agreement_is_correlation_mae_and_bias():
    row = agreement([0.3, 0.5, 0.7, np.nan], [0.35, 0.55, 0.75, 0.4])  # the NaN pair is left out
    assert row["n"] == 3 and row["correlation"] == pytest.approx(1.0)
    assert row["mae"] == pytest.approx(0.05) and row["bias"] == pytest.approx(0.05)
    assert np.isnan(agreement([0.3, 0.5], [0.4, 0.4])["correlation"])  # no spread: no correlation


def test_a_study_reads_every_target_back_and_resumes(trained, tmp_path, monkeypatch):
    data, stored, _ = trained
    unconditional = tmp_path / "ema.pt"  # a copy: its weights change at the end
    shutil.copy(stored, unconditional)
    segmenter = train_segmenter(SegConfig(frames=4, size=16, steps=2, batch_size=8), data, tmp_path / "seg.pt",
                                progress=False)
    config = EFStudyConfig(efs=(0.3, 0.6), start_steps=(55,), samples=2, max_maps=2)
    report = run_ef_study(data, unconditional, segmenter, tmp_path / "ef.json", config, progress=False)
    assert json.loads((tmp_path / "ef.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    videos = report["videos"]
    maps = {r["map"] for r in videos}
    assert len(videos) == len(maps) * 3 * 2  # (still, 0.3, 0.6) x 2 samples per map
    beating = [r for r in videos if r["target_ef"] is not None]
    assert all(r["maps_ef"] is not None for r in beating)  # the label sequence's own EF is recorded
    assert all(r["maps_ef"] is None for r in videos if r["target_ef"] is None)
    summary = report["summary"]["55"]
    assert summary["beating"]["n"] + sum(not np.isfinite(r["video_ef"]) for r in beating) == len(beating)
    assert set(summary["per_target"]) == {"0.3", "0.6"} and report["settings"]["es_frame"] == 3.0
    pseudo = report["pseudo_video"]["rows"]  # the pseudo video read without the model: one row per map and target
    assert sorted((r["map"], r["target_ef"]) for r in pseudo) == sorted((m, ef) for m in maps for ef in (0.3, 0.6))
    read = {(r["map"], r["target_ef"]): r["pseudo_ef"] for r in pseudo}
    expected = np.mean([abs(r["video_ef"] - read[(r["map"], r["target_ef"])]) for r in beating
                        if np.isfinite(r["video_ef"]) and np.isfinite(read[(r["map"], r["target_ef"])])])
    assert summary["beating_vs_pseudo_video"]["mae"] == pytest.approx(expected)
    # The floors of a reader that ignores its input: the mean target for the pseudo videos, the TRAIN clips' mean
    # EF for the TEST clips.
    ignoring = report["pseudo_video"]["ignoring_input"]
    assert ignoring["value"] == pytest.approx(0.45)
    assert ignoring["mae"] == pytest.approx(np.mean([abs(r["maps_ef"] - 0.45) for r in pseudo]))
    floor = report["real_floor"]
    assert floor["ignoring_input"]["mae"] == pytest.approx(
        np.mean([abs(c["labels_ef"] - floor["ignoring_input"]["value"]) for c in floor["clips"]]))
    assert any("read as 0.45 whatever they show" in str(r["pseudo video"]) for r in summary_rows(report))
    # A second run finds every row and generates nothing; an extended one generates only the new target.
    calls = []
    real_call = FreeEcho.__call__
    monkeypatch.setattr(FreeEcho, "__call__", lambda self, *a, **k: calls.append(k["ef"]) or real_call(self, *a, **k))
    again = run_ef_study(data, unconditional, segmenter, tmp_path / "ef.json", config, progress=False)
    assert again["videos"] == json.loads(json.dumps(videos)) and calls == []
    wider = EFStudyConfig(efs=(0.3, 0.6, 0.45), start_steps=(55,), samples=2, max_maps=2)
    run_ef_study(data, unconditional, segmenter, tmp_path / "ef.json", wider, progress=False)
    assert calls == [0.45] * len(maps)
    # Other weights at the same path (a model trained further in place): every row is made again.
    state = torch.load(unconditional, weights_only=False)
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, unconditional)
    calls.clear()
    run_ef_study(data, unconditional, segmenter, tmp_path / "ef.json", wider, progress=False)
    assert len(calls) == len(maps) * 4


def test_the_command_refuses_targets_out_of_range_in_one_line(trained, tmp_path, capsys):
    data, unconditional, _ = trained
    args = ["ef-study", "--data", str(data), "--checkpoint", str(unconditional), "--segmenter", str(unconditional),
            "--out", str(tmp_path / "ef.json"), "--efs", "0.3", "0.95"]
    assert main(args) == 2
    assert "--efs must lie in [0.05, 0.85]" in capsys.readouterr().err and not (tmp_path / "ef.json").exists()
    assert main(args[:5] + ["--segmenter", str(tmp_path / "no.pt")] + args[7:9]) == 2
    assert "--segmenter" in capsys.readouterr().err


def test_the_reader_check_needs_no_model_and_gives_the_studys_own_reader_error(trained, tmp_path, capsys):
    data, unconditional, _ = trained
    segmenter = train_segmenter(SegConfig(frames=4, size=16, steps=2, batch_size=8), data, tmp_path / "seg.pt",
                                progress=False)
    args = ["ef-reader", "--data", str(data), "--segmenter", str(segmenter), "--efs", "0.3", "0.6",
            "--out", str(tmp_path / "reader.json")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "the beating pseudo video itself: r" in printed and "recorded VAL and TEST clips" in printed
    reader = json.loads((tmp_path / "reader.json").read_text())
    val, test = (EchoClips(data, split, ClipConfig(frames=4, size=16)) for split in ("VAL", "TEST"))
    assert reader["real_floor"]["n"] == len(val) + len(test) > 0
    assert len(reader["pseudo_video"]["rows"]) == 2 * len(test)  # every TEST map at both targets
    study = run_ef_study(data, unconditional, segmenter, tmp_path / "ef.json",
                         EFStudyConfig(efs=(0.3, 0.6), start_steps=(55,), samples=1, max_maps=8), progress=False)
    for key in ("real_floor", "pseudo_video"):
        fields = ("n", "mae", "bias")
        assert [study[key][k] for k in fields] == pytest.approx([reader[key][k] for k in fields])
        assert study[key]["ignoring_input"] == pytest.approx(reader[key]["ignoring_input"])
    assert main(args[:3] + ["--segmenter", str(tmp_path / "none.pt")]) == 2
    assert "--segmenter" in capsys.readouterr().err
