"""The quality-against-NFE study (issue 17): NFE bookkeeping, the rule that picks the default, and a run."""
import json

import pytest
import torch

from freeecho_core import cli
from freeecho_core.edm import karras_sigmas
from freeecho_core.sampler import sdedit_sample
from freeecho_core.study.nfe import REFERENCE, StudyConfig, choose_default, run_study, steps_for_nfe, within_reference
from freeecho_core.study.segmenter import SegConfig, train_segmenter
from freeecho_core.synthesis import FreeEcho


@pytest.mark.parametrize("solver", ["heun", "euler", "dpmpp2m"])
@pytest.mark.parametrize("nfe", [97, 25, 7])
def test_the_steps_of_a_setting_cost_exactly_its_evaluations(gaussian, solver, nfe):
    init = torch.zeros(1, 1, 2, 4, 4)
    sdedit_sample(gaussian, init, karras_sigmas(), 15, generator=[torch.Generator().manual_seed(0)],
                  solver=solver, steps=steps_for_nfe(solver, nfe))
    assert gaussian.calls == nfe


def test_settings_that_no_solver_can_take_are_refused():
    with pytest.raises(ValueError, match="odd NFE"):
        steps_for_nfe("heun", 24)
    with pytest.raises(ValueError, match="at least 2 steps"):
        steps_for_nfe("euler", 1)
    with pytest.raises(ValueError, match="reference setting"):
        StudyConfig(grid=(("euler", 7),))
    assert StudyConfig(grid=(("euler", 25), REFERENCE, ("heun", 7))).run_order() == [REFERENCE, ("heun", 7),
                                                                                     ("euler", 25)]


def row(method, solver, nfe, dice, ssim, se=0.01):
    return {"method": method, "solver": solver, "nfe": nfe, "Dice LV": {"mean": dice, "se": se},
            "SSIM": {"mean": ssim, "se": se}}


def test_the_default_is_the_fewest_evaluations_within_one_standard_error_for_every_method():
    rows = [row("a", "heun", 97, 0.80, 0.60), row("b", "heun", 97, 0.70, 0.50),
            row("a", "euler", 7, 0.80, 0.60), row("b", "euler", 7, 0.75, 0.50),  # b loses Dice beyond 1 s.e.
            row("a", "euler", 13, 0.805, 0.595), row("b", "euler", 13, 0.695, 0.505),
            row("a", "dpmpp2m", 13, 0.80, 0.60), row("b", "dpmpp2m", 13, 0.70, 0.50)]
    choice = choose_default(rows, ["a", "b"])
    assert (choice["solver"], choice["nfe"], choice["steps"]) == ("euler", 13, 13)  # the rows' order breaks ties
    assert ["euler", 7] in choice["qualifying"]["a"] and ["euler", 7] not in choice["qualifying"]["b"]
    # Better by more than a standard error is not "within" either: a blurred video can raise SSIM.
    assert not within_reference(row("a", "euler", 7, 0.80, 0.65), row("a", "heun", 97, 0.80, 0.60))
    alone = choose_default([row("a", "heun", 97, 0.8, 0.6), row("a", "euler", 7, 0.5, 0.6)], ["a"])
    assert (alone["solver"], alone["nfe"]) == REFERENCE  # only the reference qualifies: no saving


def test_a_study_scores_every_setting_on_the_same_maps_and_resumes(trained, tmp_path, capsys):
    data, unconditional, clsfree = trained
    segmenter = train_segmenter(SegConfig(frames=4, size=16, steps=2, batch_size=8), data, tmp_path / "seg.pt",
                                progress=False)
    config = StudyConfig(grid=(REFERENCE, ("euler", 7), ("dpmpp2m", 7)), start_steps=(35,), samples=2, max_maps=2,
                         batch=2)
    study = run_study(data, unconditional, clsfree, segmenter, tmp_path / "study", config, progress=False,
                      log=lambda line: None, json_path=tmp_path / "bench" / "nfe.json")
    assert json.loads((tmp_path / "bench" / "nfe.json").read_text()) == json.loads(json.dumps(study))
    settings = {(r["method"], r["solver"], r["nfe"]) for r in study["rows"]}
    assert settings == {(m, s, n) for m in ("free-echo@35", "clsfree") for s, n in config.grid}
    for r in study["rows"]:
        assert r["SSIM"]["n"] == r["Dice LV"]["n"] == 2 * len(study["maps"]) and 0 <= r["Dice LV"]["mean"] <= 1
        assert r["steps"] == steps_for_nfe(r["solver"], r["nfe"]) and r["SSIM"]["se"] >= 0
    assert study["default"]["methods"] == ["free-echo@35"] and study["clsfree_default"]["methods"] == ["clsfree"]
    # A second run finds every video on disk and generates none.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "study").rglob("*.npy")}
    run_study(data, unconditional, clsfree, segmenter, tmp_path / "study", config, progress=False, log=lambda line: None)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "study").rglob("*.npy")} == before
    # The command: a grid without the reference is refused in one line, before anything runs.
    args = ["nfe-study", "--data", str(data), "--unconditional", str(unconditional), "--segmenter", str(segmenter),
            "--out", str(tmp_path / "cli"), "--methods", "free-echo", "--grid", "euler:7,13"]
    assert cli.main(args) == 2
    assert "--grid must hold the study's reference setting, heun:97" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_generates_default_sampler_is_the_stored_studys_choice():
    """`freeecho generate`'s default is what the committed quality study chose (results/bench/nfe-quality.json):
    a new study that chooses otherwise fails here until the default follows it."""
    from pathlib import Path

    from freeecho_core.generate import GenerateConfig

    study = json.loads((Path(__file__).resolve().parents[1] / "results" / "bench" / "nfe-quality.json").read_text())
    choice, default = study["default"], GenerateConfig().sampler
    assert (default.solver, default.steps, default.churn) == (choice["solver"], choice["steps"], None)
    assert FreeEcho.__call__.__kwdefaults__["sampler"] == default  # the Python API samples as the command does


def test_table_1s_cls_free_sampler_is_the_stored_studys_choice_for_cls_free():
    """The cpu study's Table 1 (notebook 05 at params/cpu.yaml, and the smoke profile that the book builds) samples
    Cls-Free with what the committed quality study's rule chose for Cls-Free (`clsfree_default`)."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    choice = json.loads((root / "results" / "bench" / "nfe-quality.json").read_text())["clsfree_default"]
    for profile in ("cpu", "smoke"):
        table_1 = yaml.safe_load((root / "params" / f"{profile}.yaml").read_text())["05_evaluation"]
        assert (table_1["clsfree_solver"], table_1["clsfree_sampler_steps"]) == (choice["solver"], choice["steps"])
