"""The guided-sampling study end to end at toy scale: every cell scored, the reader's error kept, resumable."""
import json

import numpy as np

from freeecho_core.cli import main
from freeecho_core.study.guided import GuidedStudyConfig, cell_name, run_guided_study
from freeecho_core.study.segmenter import SegConfig, train_segmenter
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
    # The command resumes the same study: every video is on disk, nothing is sampled again.
    from freeecho_core import synthesis
    monkeypatch.setattr(synthesis, "sdedit_sample", lambda *a, **k: (_ for _ in ()).throw(AssertionError("sampled")))
    args = ["guided-study", "--data", str(data), "--checkpoint", str(unconditional), "--segmenter", str(segmenter),
            "--out", str(tmp_path / "study"), "--start-steps", "50", "58", "--factors", "2", "--untils", "55",
            "--efs", "0.3", "0.6", "--samples", "1", "--max-maps", "2", "--device", "cpu"]
    assert main(args) == 0
    assert "ilvr f2 until 55" in capsys.readouterr().out
    assert main(args[:-2] + ["--efs", "0.01", "--device", "cpu"]) == 2
    assert "--efs must lie in [0.05, 0.85]" in capsys.readouterr().err
