"""The guided-sampling study end to end at toy scale: every cell scored, the reader's error kept, resumable."""
import json

import numpy as np
import pytest

from freeecho_core.cli import main
from freeecho_core.study.guided import GuidedStudyConfig, cell_name, run_guided_study
from freeecho_core.study.segmenter import SegConfig, train_segmenter
from freeecho_core.study.videos import file_digest
from freeecho_core.guidance import Guide


def test_every_cell_is_scored_and_a_rerun_generates_nothing(trained, tmp_path, monkeypatch, capsys):
    data, unconditional, _ = trained
    segmenter = train_segmenter(SegConfig(frames=4, size=16, steps=2, batch_size=8, pseudo_share=0.5), data,
                                tmp_path / "seg.pt", progress=False)
    config = GuidedStudyConfig(start_steps=(50, 58), factors=(2,), untils=(55,), efs=(0.3, 0.6), samples=1,
                               max_maps=2)
    report = run_guided_study(data, unconditional, segmenter, tmp_path / "study", config, progress=False)
    cells = [(r["t_i"], r["method"]) for r in report["rows"]]
    assert cells == [(50, "plain"), (58, "plain"), (50, "ilvr f2 until 55")]  # until 55 cannot guide from 58
    for row in report["rows"]:
        assert -1 <= row["SSIM"] <= 1 and 0 <= row["Dice LV"] <= 1 and np.isfinite(row["map margin"])
        assert row["NFE"] == 13 and row["seconds per video"] > 0
    assert report["rows"][2]["guide"] == {"ilvr": True, "calibration": 0, "factor": 2, "until": 55, "mask": 0}
    assert set(report["reader"]) == {"recorded VAL and TEST clips", "beating pseudo videos"}
    assert json.loads((tmp_path / "study" / "guided-study.json").read_text())["rows"] == json.loads(
        json.dumps(report["rows"]))
    assert cell_name(Guide(calibration=1, factor=4, until=40)) == "ilvr-nc f4 until 40"
    assert cell_name(Guide(calibration=0, factor=2, until=60, mask=4)) == "ilvr f2 until 60 mask 4"
    grid = GuidedStudyConfig(factors=(2,), untils=(55, 60), masks=(0, 4)).guides()
    assert grid[0] is None and [(g.until, g.mask) for g in grid[1:]] == [(55, 0), (55, 4), (60, 0), (60, 4)]
    # The command resumes the same study: every video is on disk, nothing is sampled again.
    from freeecho_core import synthesis
    monkeypatch.setattr(synthesis, "sdedit_sample", lambda *a, **k: (_ for _ in ()).throw(AssertionError("sampled")))
    args = ["guided-study", "--data", str(data), "--checkpoint", str(unconditional), "--segmenter", str(segmenter),
            "--out", str(tmp_path / "study"), "--start-steps", "50", "58", "--factors", "2", "--untils", "55",
            "--efs", "0.3", "0.6", "--samples", "1", "--max-maps", "2", "--device", "cpu"]
    assert main(args + ["--json", str(tmp_path / "stored.json")]) == 0
    assert "ilvr f2 until 55" in capsys.readouterr().out
    stored = json.loads((tmp_path / "stored.json").read_text())
    assert stored["rows"] == json.loads(json.dumps(report["rows"]))
    assert stored["checkpoint_sha256"] == file_digest(unconditional) and stored["segmenter_sha256"] == file_digest(segmenter)
    assert main(args[:-2] + ["--efs", "0.01", "--device", "cpu"]) == 2
    assert "--efs must lie in [0.05, 0.85]" in capsys.readouterr().err


def _row(t_i, method, ef_r, ef_mae, dice=0.8, margin=0.2, fd=0.1, guide=None):
    return {"t_i": t_i, "method": method, "guide": guide, "SSIM": 0.6, "PSNR": 20.0, "Dice LV": dice,
            "Dice LV s.e.": 0.01, "map margin": margin, "map margin s.e.": 0.02, "FD-seg": fd, "FD-seg s.e.": 0.02,
            "EF r": ef_r, "EF MAE": ef_mae, "EF bias": -0.01, "NFE": 13, "seconds per video": 9.0}


def test_the_verdict_names_every_shortfall_and_recommends_the_closest_cell():
    from freeecho_core.study.guided import recommended_guide, table_rows, verdicts
    f2 = {"ilvr": True, "calibration": 0, "factor": 2, "until": 40, "mask": 0}
    f4 = f2 | {"factor": 4}
    report = {"rows": [_row(15, "plain", 0.1, 0.2), _row(15, "ilvr f2 until 40", 0.9, 0.05, 0.9, 0.4, 0.11, f2),
                       _row(15, "ilvr f4 until 40", 0.85, 0.07, 0.9, 0.1, 0.2, f4),
                       _row(35, "plain", 0.5, 0.1), _row(35, "ilvr f2 until 40", 0.95, 0.04, 0.9, 0.4, 0.1, f2)]}
    cells = verdicts(report)
    assert [(c["row"]["t_i"], c["row"]["method"]) for c in cells][0] == (15, "ilvr f2 until 40")
    assert cells[0]["shortfalls"] == []  # FD-seg 0.11 is within plain's 0.10 + its s.e. 0.02
    by_cell = {(c["row"]["t_i"], c["row"]["method"]): c["shortfalls"] for c in cells}
    assert by_cell[15, "ilvr f4 until 40"] == ["map margin 0.100 below plain's 0.200",
                                              "FD-seg 0.200 above plain's 0.100 by more than its s.e."]
    assert by_cell[35, "ilvr f2 until 40"] == ["t_i 35 > 30"]
    assert recommended_guide(report).factor == 2
    rows = table_rows(report)
    assert [r["method"] for r in rows[:3]] == ["plain", "ilvr f2 until 40", "ilvr f4 until 40"]
    assert rows[1]["map margin"] == "+0.400 ± 0.020" and rows[1]["EF MAE"] == "0.050"


def test_a_calibration_is_measured_on_val_maps_and_prescribed_on_the_guided_cells_only(trained, tmp_path,
                                                                                        monkeypatch):
    from freeecho_core.study.ef import prescribed_ef
    from freeecho_core.synthesis import FreeEcho

    assert prescribed_ef(0.5, 0.09) == 0.59 and prescribed_ef(0.8, 0.09) == 0.85  # within the range solved for
    assert prescribed_ef(0.5, -0.05, 1.3) == pytest.approx(0.6)
    data, unconditional, _ = trained
    segmenter = train_segmenter(SegConfig(frames=4, size=16, steps=2, batch_size=8), data, tmp_path / "seg.pt",
                                progress=False)
    prescribed = []
    real_call = FreeEcho.__call__
    monkeypatch.setattr(FreeEcho, "__call__", lambda self, *a, **k: prescribed.append(
        (k["guide"] is not None, k["ef"])) or real_call(self, *a, **k))
    config = GuidedStudyConfig(start_steps=(50,), factors=(2,), untils=(55,), efs=(0.3,), samples=1, max_maps=1,
                               ef_offset=0.1, split="VAL")  # scale 1: an offset alone
    report = run_guided_study(data, unconditional, segmenter, tmp_path / "study", config, progress=False)
    assert set(prescribed) == {(False, None), (False, 0.3), (True, None), (True, 0.4)}
    assert [(r["ef_offset"], r["ef_scale"]) for r in report["rows"]] == [(0.0, 1.0), (0.1, 1.0)]
    ef = json.loads((tmp_path / "study" / "ilvr-f2-until-55" / "t50-val" / "ef-offset+0.100-scale1.000.json").read_text())
    beating = [r for r in ef["videos"] if r["target_ef"] is not None]
    assert all(r["target_ef"] == 0.3 and r["prescribed_ef"] == 0.4 for r in beating)
    val_names = {m for m in json.loads((tmp_path / "study" / "plain" / "t50-val" / "metrics.json").read_text())
                 ["methods"]["free-echo@50"]["per_map"]}
    from freeecho_core.data.clips import ClipConfig
    from freeecho_core.data.dataset import EchoClips
    val = EchoClips(data, "VAL", ClipConfig(frames=4, size=16)).clip(0)
    assert val_names == {f"{val.case_id}_{val.view}"} and {r["map"] for r in beating} == val_names


def test_the_calibration_fitted_on_a_cell_prescribes_what_reads_back_the_target():
    from freeecho_core.study.ef import prescribed_ef
    from freeecho_core.study.guided import fit_calibration

    row = {"method": "ilvr f4 until 55", "ef_offset": 0.1, "ef_scale": 1.0,  # read = 0.05 + 0.8 x prescribed
           "EF per target": {str(t): 0.05 + 0.8 * (0.1 + t) for t in (0.3, 0.5, 0.7)}}
    offset, scale = fit_calibration(row)
    assert (offset, scale) == (pytest.approx(-0.0625), pytest.approx(1.25))
    assert all(0.05 + 0.8 * prescribed_ef(t, offset, scale) == pytest.approx(t) for t in (0.3, 0.5))
    with pytest.raises(ValueError, match="needs readings at two targets"):
        fit_calibration(row | {"EF per target": {"0.3": 0.3}})
    with pytest.raises(ValueError, match="does not rise"):
        fit_calibration(row | {"EF per target": {"0.3": 0.5, "0.7": 0.4}})
