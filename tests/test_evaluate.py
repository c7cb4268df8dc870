"""The study end to end at toy scale: every method generates, the run resumes, the report is complete."""
import ast
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.sampler import AUTHORS_CHURN, SamplerConfig
from freeecho_core.study.anatomy import ANATOMY_COLUMNS, SPECIFICITY_COLUMNS
from freeecho_core.study.metrics import ssim_psnr
from freeecho_core.study.scoring import evaluate, second_scan_row, ssim_breakdown
from freeecho_core.study.segmenter import SegConfig, train_segmenter
from freeecho_core.study.tables import (claims_table, cone_claim_rows, cone_verdict, markdown_table, paper_ordering,
                                        specificity_rows, specificity_verdict, standard_error, table_reports)
from freeecho_core.study.videos import EvalConfig, method_specs, sample_seeds
from freeecho_core.synthesis import METHOD_KINDS

PAPER_KINDS = METHOD_KINDS[:4]  # Table 1's methods and our stochastic OT
EULER_CHURN = SamplerConfig("euler", AUTHORS_CHURN, None)
CONFIG = EvalConfig(samples=2, batch=2, sampler=EULER_CHURN, start_steps=(15, 55), methods=PAPER_KINDS)
EVERY_METHOD = replace(CONFIG, methods=METHOD_KINDS)


def test_every_method_is_generated_scored_and_reported(trained, tmp_path):
    data, unconditional, clsfree = trained
    report = evaluate(data, unconditional, clsfree, tmp_path, EVERY_METHOD, max_maps=1, progress=False)
    names = [m.name for m in method_specs(EVERY_METHOD)]
    assert names == ["sdedit@15", "clsfree", "free-echo@15", "free-echo@55", "free-echo-stochastic@15",
                     "free-echo-ilvr@15", "free-echo-nc@15", "free-echo-ilvr-nc@15"]
    assert list(report["methods"]) == names
    assert [m.guide.name for m in method_specs(EVERY_METHOD)[-3:]] == ["ilvr", "nc", "ilvr-nc"]
    assert [m.name for m in method_specs(EvalConfig())][-2:] == ["free-echo-stochastic@15", "free-echo-ilvr@15"]
    for row in report["methods"].values():
        assert -1 <= row["SSIM"] <= 1 and np.isfinite(row["PSNR"]) and row["samples_per_map"] == 2
    assert set(report["unavailable"]) == {"FID", "FVD", "FVD-R(2+1)D", "anatomy"}
    assert json.loads((tmp_path / "metrics.json").read_text())["code_version"]["package"] == "0.1.0"
    videos = np.load(next((tmp_path / "videos" / "free-echo@55").glob("*.npy")))
    assert videos.dtype == np.uint8 and videos.shape == (2, 4, 16, 16)
    # Late start keeps the pseudo video: closer to it than an early start.
    assert report["methods"]["free-echo@55"]["per_map"] != report["methods"]["free-echo@15"]["per_map"]
    # Each guided row is its own videos, from the same seeds' noise as free-echo@15 but pulled to the pseudo video.
    plain, ilvr = (np.load(next((tmp_path / "videos" / m).glob("*.npy"))) for m in ("free-echo@15", "free-echo-ilvr@15"))
    assert not np.array_equal(plain, ilvr)
    key = json.loads((tmp_path / "videos" / "free-echo-ilvr@15" / "key.json").read_text())
    assert key["method"]["guide"] == {"ilvr": True, "calibration": 0, "factor": 4, "until": 40, "mask": 0}


def test_the_ssim_breakdown_splits_the_frame_into_the_regions_of_the_map():
    g = torch.Generator().manual_seed(0)
    generated, real = torch.rand(2, 3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    ed_map = np.zeros((16, 16), dtype=np.int64)
    ed_map[3:13, 2:14], ed_map[6:10, 6:10] = 1, 2
    parts, = ssim_breakdown([generated], real[None], [SimpleNamespace(ed_map=ed_map)])  # one map
    inside = (ed_map != 0).mean()  # SSIM is the mean of a per-pixel map: the regions' means weighted by area
    whole = inside * parts["SSIM in sector"] + (1 - inside) * parts["SSIM outside sector"]
    assert whole == pytest.approx(ssim_psnr(generated, real)[0])
    assert "SSIM myocardium" not in parts and set(parts) >= {"luminance", "contrast", "structure", "SSIM LV cavity"}
    tissue = (ed_map == 1).sum() / (ed_map != 0).sum()  # outside the LV, in the sector: here the tissue alone
    assert parts["SSIM outside the LV"] == pytest.approx(parts["SSIM sector tissue"])
    assert parts["SSIM in sector"] == pytest.approx(tissue * parts["SSIM outside the LV"]
                                                     + (1 - tissue) * parts["SSIM LV cavity"])


def test_a_second_scan_of_the_test_hearts_is_scored_like_a_method(trained):
    data = EchoClips(trained[0], "TEST", ClipConfig(frames=4, size=16))
    row = second_scan_row(data, max_maps=1)
    assert row["maps"] == 1 and row["samples_per_map"] == 1 and 0 < row["SSIM"] < 1
    assert row["SSIM_breakdown"]["SSIM outside sector"] > row["SSIM_breakdown"]["SSIM in sector"]  # black is easy


def test_evaluation_resumes_without_regenerating(trained, tmp_path, monkeypatch):
    data, unconditional, clsfree = trained
    first = evaluate(data, unconditional, None, tmp_path, CONFIG, max_maps=1, progress=False)
    assert first["generated_now"] == len(method_specs(CONFIG, clsfree=False)) == 4
    assert "clsfree" not in first["methods"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated a video set that was on disk")

    monkeypatch.setattr("freeecho_core.study.videos.generate", must_not_run)
    again = evaluate(data, unconditional, None, tmp_path, CONFIG, max_maps=1, progress=False)
    assert again["generated_now"] == 0 and again["methods"] == first["methods"]


def test_samples_are_seeded_per_method_and_sample_and_shared_by_every_map(trained):
    assert sample_seeds(0, "clsfree", 3) == sample_seeds(0, "clsfree", 3)
    others = sample_seeds(1, "clsfree", 3) + sample_seeds(0, "sdedit@15", 3)
    assert len(set(sample_seeds(0, "clsfree", 3) + others)) == 9
    assert sample_seeds(0, "clsfree", 2) == sample_seeds(0, "clsfree", 3)[:2]
    with pytest.raises(ValueError, match="solver must be one of"):
        EvalConfig(sampler=SamplerConfig("rk45"))


def test_table_and_ordering_read_the_report():
    row = lambda ssim: {"SSIM": ssim, "SSIM_std": 0.0, "PSNR": 20 * ssim, "PSNR_std": 0.0}  # noqa: E731
    report = {"methods": {"sdedit@15": row(0.2), "clsfree": row(0.5), "free-echo@15": row(0.45),
                          "free-echo@35": row(0.3), "free-echo@55": row(0.1)}}
    assert all(paper_ordering(report).values())
    report["methods"]["free-echo@55"] = row(0.9)
    assert not paper_ordering(report)["Free-Echo worsens from tᵢ = 15 to 35 to 55 (SSIM)"]
    table = markdown_table({"phantom CAMUS": report}, paper={"phantom CAMUS": "CAMUS"})
    assert "| phantom CAMUS | free-echo | 35 | 1×? | 0.300 | 6.00 | n/a | n/a |" in table  # one map: no spread
    assert "| *paper, real CAMUS* | *clsfree* | *-* | *?×10* | *0.52* | *22.49* | *22.50* | *150.80* |" in table
    report["methods"]["free-echo@35"] |= {"maps": 8, "samples_per_map": 4, "SSIM_std": 0.05}
    spread = markdown_table({"x": report})
    assert "| free-echo | 35 | 8×4 | 0.300\u00a0±\u00a00.050 | 6.00\u00a0±\u00a00.00 |" in spread
    report["methods"]["free-echo@35"] |= {"Dice LV": 0.8, "FD-seg": float("nan"), "per_map": {"a": {}}}
    report["methods"]["sdedit@15"]["FD-seg"] = 1.5
    stored = table_reports({"x": report})
    assert "per_map" not in stored["x"]["methods"]["free-echo@35"] and ast.literal_eval(repr(stored)) == stored
    quality, anatomy = (markdown_table(stored, paper={"x": "CAMUS"}, part=part) for part in ("quality", "anatomy"))
    assert "Dice LV" not in quality and "*paper, real CAMUS*" in quality and "| x | free-echo | 35 | 8×4 | 0.300" in quality
    assert anatomy.splitlines()[0] == "| dataset | method | tᵢ | n | Dice LV | FD-seg |"
    assert "| x | free-echo | 35 | 8×4 | 0.800 | n/a |" in anatomy and "paper" not in anatomy


def test_the_paper_claims_are_checked_on_the_paper_table_first():
    rows = {row["claim"]: row for row in claims_table({})}
    assert rows["Cls-Free above Free-Echo@15 (SSIM)"]["paper, EchoNet-Dynamic"] == "holds"
    # On its own EchoNet-Dynamic PSNR the paper has Cls-Free 20.04 < Free-Echo@15 20.78 < SDEdit 21.52.
    assert rows["Cls-Free above Free-Echo@15 (PSNR)"]["paper, EchoNet-Dynamic"] == "fails"
    assert rows["Free-Echo@15 above SDEdit (PSNR)"]["paper, EchoNet-Dynamic"] == "fails"
    assert all(row["paper, CAMUS"] == "holds" for row in rows.values())
    assert len(rows) == 6


def test_anatomy_columns_join_the_report_and_the_table(trained, tmp_path):
    data, unconditional, _ = trained
    segmenter = train_segmenter(SegConfig(frames=4, size=16, steps=20, batch_size=8), data, tmp_path / "seg.pt",
                                progress=False)
    config = EvalConfig(samples=2, batch=2, sampler=EULER_CHURN, start_steps=(55,), methods=("free-echo",))
    report = evaluate(data, unconditional, None, tmp_path / "eval", config, segmenter=segmenter, progress=False)
    row = report["methods"]["free-echo@55"]
    assert set(ANATOMY_COLUMNS) | set(SPECIFICITY_COLUMNS) <= set(row)
    assert 0 <= row["Dice LV"] <= 1 and row["FD-seg"] >= 0 and "anatomy" not in report["unavailable"]
    assert row["map margin"] == pytest.approx(row["Dice LV own map"] - row["Dice LV other maps"])
    assert len(row["specificity_per_map"]) == row["maps"] >= 2
    assert set(SPECIFICITY_COLUMNS) - {"corr across maps, same seed", "corr across seeds, same map"} <= set(
        report["real_specificity"])  # the real clips: one per map, no seeds to compare
    assert set(report["segmenter"]["val_dice"]) == {"LV cavity", "myocardium", "left atrium"}
    # The cone: each video's fan against its own map's sector and the others'; the recordings' own fans beside.
    assert 0 <= row["fan IoU"] <= 1 and 0 <= row["fan IoU, other maps"] <= 1
    assert set(report["real_cone"]) == {"fan IoU", "fan IoU, other maps"} and report["real_cone"]["fan IoU"] > 0.5
    per_map = list(row["per_map"].values())  # per map too, for the cone claim's paired test
    assert np.mean([m["fan IoU"] for m in per_map]) == pytest.approx(row["fan IoU"])
    assert np.mean([m["SSIM outside the LV"] for m in per_map]) == pytest.approx(
        row["SSIM_breakdown"]["SSIM outside the LV"])
    table = markdown_table({"phantom CAMUS": report}, paper={"phantom CAMUS": "CAMUS"})
    columns = "| Dice LV | Dice myo | Dice LA | map margin | EF proxy error | LV area roughness | FD-seg | FVD-seg |"
    assert columns in table
    assert "| *150.80* | - | - | - | - | - | - | - | - |" in table  # the paper measured none of them
    wrong = train_segmenter(SegConfig(frames=4, size=32, steps=1), data, tmp_path / "seg32.pt", progress=False)
    with pytest.raises(ValueError, match="trained on clips of 4 x 32"):
        evaluate(data, unconditional, None, tmp_path / "eval", config, segmenter=wrong, progress=False)


def test_stored_videos_made_with_other_settings_are_generated_again(trained, tmp_path, recwarn):
    data, unconditional, _ = trained
    config = EvalConfig(samples=1, batch=1, sampler=EULER_CHURN, start_steps=(55,), methods=("free-echo",))
    first = evaluate(data, unconditional, None, tmp_path, config, max_maps=1, progress=False)
    videos = next((tmp_path / "videos" / "free-echo@55").glob("*.npy"))
    before = np.load(videos)
    other_seed = EvalConfig(**{**config.__dict__, "seed": 7})
    with pytest.warns(UserWarning, match=r"made with other \['seed'\]; generating them again"):
        again = evaluate(data, unconditional, None, tmp_path, other_seed, max_maps=1, progress=False)
    assert again["generated_now"] == first["generated_now"] == 1
    assert not np.array_equal(np.load(videos), before)
    key = json.loads((tmp_path / "videos" / "free-echo@55" / "key.json").read_text())
    assert key["seed"] == 7 and len(key["checkpoint_sha256"]) == 64 and key["data"]["split"] == "TEST"
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["seed"] == 7
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_command_runs_the_chosen_methods_with_the_deterministic_sampler(trained, tmp_path, capsys):
    from freeecho_core.cli import main

    data, unconditional, clsfree = trained
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(data), "--unconditional", str(unconditional), "--clsfree", str(clsfree),
                 "--out", str(out), "--samples", "1", "--max-maps", "1", "--solver", "euler", "--sampler", "ode",
                 "--methods", "free-echo", "sdedit", "--start-steps", "55", "--device", "cpu"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert list(report["methods"]) == ["sdedit@15", "free-echo@55"]
    assert report["config"]["sampler"]["churn"] is None and report["config"]["sampler"]["solver"] == "euler"
    assert json.loads((out / "videos" / "free-echo@55" / "key.json").read_text())["sampler"]["churn"] is None


def test_the_command_adds_its_scores_to_the_model_cards(trained, tmp_path):
    import shutil

    from freeecho_core.cli import main
    from freeecho_core.study.model_card import write_model_card

    data, unconditional, clsfree = trained
    models = {}
    for role, source in (("unconditional", unconditional), ("clsfree", clsfree)):
        shutil.copytree(source.parent, tmp_path / role)
        write_model_card(tmp_path / role, data, "freeecho train ...")
        models[role] = tmp_path / role / "ema.pt"
    args = ["evaluate", "--data", str(data), "--unconditional", str(models["unconditional"]), "--clsfree",
            str(models["clsfree"]), "--out", str(tmp_path / "eval"), "--samples", "1", "--max-maps", "1",
            "--solver", "euler", "--start-steps", "55", "--methods", "free-echo", "clsfree", "--model-cards"]
    assert main(args) == 0
    cards = {role: json.loads((tmp_path / role / "model_card.json").read_text()) for role in models}
    (key,) = cards["unconditional"]["held_out_scores"]
    assert key == "TEST, 1 maps x 1, euler churn"
    scores = cards["unconditional"]["held_out_scores"][key]
    assert list(scores["methods"]) == ["free-echo@55"] and "SSIM" in scores["methods"]["free-echo@55"]
    assert scores["evaluation"]["command"].startswith("freeecho evaluate --data ")
    assert list(cards["clsfree"]["held_out_scores"][key]["methods"]) == ["clsfree"]
    other = [str(tmp_path / "eval-ode") if a == str(tmp_path / "eval") else a for a in args]
    assert main(other + ["--sampler", "ode"]) == 0  # another sampler: kept beside the first
    assert len(json.loads((tmp_path / "unconditional" / "model_card.json").read_text())["held_out_scores"]) == 2
    fewer = [str(tmp_path / "eval-ode-6") if a == str(tmp_path / "eval") else a for a in args]
    assert main(fewer + ["--sampler", "ode", "--sampler-steps", "6"]) == 0  # fewer steps: a third entry
    card = json.loads((tmp_path / "unconditional" / "model_card.json").read_text())["held_out_scores"]
    assert card["TEST, 1 maps x 1, euler ode, 6 steps"]["evaluation"]["sampler_steps"] == 6


def test_the_specificity_table_and_verdict_say_when_a_method_ignores_its_map():
    ignores = {"maps": 8, "Dice LV own map": 0.80, "Dice LV other maps": 0.79, "map margin": 0.01, "map margin s.e.": 0.01,
               "corr across maps, same seed": 0.94, "corr across seeds, same map": 0.45}
    follows = {"maps": 8, "Dice LV own map": 0.90, "Dice LV other maps": 0.65, "map margin": 0.25, "map margin s.e.": 0.03,
               "corr across maps, same seed": 0.40, "corr across seeds, same map": 0.80}
    report = {"methods": {"free-echo@15": ignores, "clsfree": follows, "one map": {"Dice LV": 0.7}},
              "real_specificity": {k: v for k, v in follows.items() if "corr" not in k}}
    rows = specificity_rows(report)
    assert [r["method"] for r in rows] == ["free-echo@15", "clsfree", "real clips (ceiling)"]
    assert "ignores its map" in specificity_verdict("free-echo@15", ignores)
    assert "the seed, not the map, decides" in specificity_verdict("free-echo@15", ignores)
    assert "it follows its map" in specificity_verdict("clsfree", follows)
    assert "the map decides more" in specificity_verdict("clsfree", follows)
    assert "2 maps are too few to judge" in specificity_verdict("clsfree", follows | {"maps": 2})


def test_cls_free_can_have_its_own_sampler_and_only_its_videos_key_changes():
    from freeecho_core.study.videos import video_key
    dpm = SamplerConfig.named("dpmpp2m", "ode", 13, cap_steps=False)
    config = EvalConfig(samples=2, sampler=dpm, start_steps=(15,), methods=("sdedit", "clsfree", "free-echo"))
    own = replace(config, clsfree_sampler=replace(dpm, steps=25))
    digests = {"unconditional": "u", "clsfree": "c"}
    for method in method_specs(config):
        same = video_key(method, config, digests, {}) == video_key(method, own, digests, {})
        assert same == (method.kind != "clsfree"), method.name
        assert own.sampler_for(method).steps == (25 if method.kind == "clsfree" else 13)
    # From the options (notebook 05, evaluate): unset values keep the shared sampler's; none set, no own sampler.
    from freeecho_core.study.videos import own_clsfree_sampler
    assert own_clsfree_sampler(dpm, "", 0) is None and own_clsfree_sampler(dpm) is None
    assert own_clsfree_sampler(dpm, None, 25) == own.clsfree_sampler
    assert own_clsfree_sampler(dpm, "euler", 7) == replace(dpm, solver="euler", steps=7)


def test_the_cone_claim_is_judged_per_metric_with_a_paired_test_over_maps():
    def row(fan, outside):
        per_map = {f"case{k}_4CH": {"SSIM": 0.5, "PSNR": 20.0, "fan IoU": fan + 0.01 * k,
                                    "SSIM outside the LV": outside + 0.01 * (-1) ** k} for k in range(8)}
        return {"fan IoU": fan + 0.035, "SSIM_breakdown": {"SSIM outside the LV": outside}, "per_map": per_map}

    report = {"methods": {"free-echo@15": row(0.95, 0.60), "clsfree": row(0.85, 0.60), "sdedit@15": row(0.9, 0.5)},
              "real_cone": {"fan IoU": 0.96, "fan IoU, other maps": 0.9}}
    fan, outside = cone_claim_rows(report)
    assert fan["metric"] == "fan IoU" and fan["free-echo@15"] == pytest.approx(0.985) and fan["recordings"] == 0.96
    assert fan["free-echo@15 above clsfree"] == "holds: +0.100 [+0.100, +0.100] (n = 8)"
    assert outside["free-echo@15 above clsfree"].startswith("not significant: +0.000")
    assert outside["recordings"] == "-"
    assert cone_verdict("phantom EchoNet", [fan, outside]) == (
        "On phantom EchoNet, the paper's cone claim (Free-Echo@15 above Cls-Free) is not significant: fan IoU (holds: "
        f"+0.100 [+0.100, +0.100] (n = 8)); SSIM outside the LV ({outside['free-echo@15 above clsfree']}).")
    assert " holds: " in cone_verdict("x", [fan]) and "claim (Free-Echo@15 above Cls-Free) holds" in cone_verdict("x", [fan])
    assert standard_error(report["methods"]["free-echo@15"], "fan IoU") == pytest.approx(
        np.std([0.01 * k for k in range(8)], ddof=1) / np.sqrt(8))
    del report["methods"]["clsfree"]["per_map"]["case0_4CH"]["fan IoU"]  # a report stored before per-map fans
    assert [r["metric"] for r in cone_claim_rows(report)] == ["SSIM outside the LV"]
    del report["methods"]["clsfree"]
    assert cone_claim_rows(report) == []
