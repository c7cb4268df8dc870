"""Reading the numbers that stored (papermill-executed) notebooks glued."""
import json
from pathlib import Path

import nbformat
import pytest

from freeecho_core.stored import WEIGHTS_KEY, glued_values, runs_on_other_weights, stored_runs, weights_used


def glue_output(name, text, prefix="application/papermill.record/"):
    """A glue output as papermill stores it (myst_nb.glue with display=False)."""
    return nbformat.v4.new_output("display_data", data={prefix + "text/plain": text},
                                  metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def write_notebook(path, outputs):
    cell = nbformat.v4.new_code_cell("glue(...)", outputs=outputs)
    nbformat.write(nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("text")]), path)


def test_glued_numbers_and_strings_are_read_back(tmp_path):
    write_notebook(tmp_path / "05.ipynb", [glue_output("ssim", "0.4812"), glue_output("steps", "8000"),
                                          glue_output("shape", "'16 x 64 x 64'"), glue_output("fig", "<Figure>", ""),
                                          nbformat.v4.new_output("stream", text="not glued")])
    assert glued_values(tmp_path / "05.ipynb") == {"ssim": 0.4812, "steps": 8000, "shape": "16 x 64 x 64",
                                                   "fig": "<Figure>"}


def test_stored_runs_are_grouped_by_profile(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "cpu.json").write_text(json.dumps([]))
    (tmp_path / "gpu-short").mkdir()
    write_notebook(tmp_path / "gpu-short" / "02_training.ipynb", [glue_output("final_loss", "0.21")])
    assert stored_runs(tmp_path) == {"gpu-short": {"02_training": {"final_loss": 0.21}}}
    (tmp_path / "gpu-short" / "broken.ipynb").write_text("{")
    with pytest.raises(ValueError, match="broken.ipynb: not an executed notebook"):
        stored_runs(tmp_path)


def test_the_headline_and_table1_are_drawn_from_what_the_study_glued(tmp_path):
    from freeecho_core.study.headline import has_table1, headline, study_values, table1_parts
    from freeecho_core.study.tables import claims_table, table_reports

    def row(ssim, dice):
        per_map = {f"case{k}_2CH": {"SSIM": ssim + 0.01 * k, "PSNR": 20 + ssim + 0.01 * k} for k in range(8)}
        return {"SSIM": ssim, "SSIM_std": 0.02, "PSNR": 20 + ssim, "PSNR_std": 0.5, "maps": 8, "samples_per_map": 4,
                "Dice LV": dice, "map margin": 0.1, "map margin s.e.": 0.02, "FD-seg": float("nan"), "per_map": per_map}

    reports = {"phantom CAMUS": {"methods": {"sdedit@15": row(0.3, 0.7), "clsfree": row(0.7, 0.9),
                                             "free-echo@15": row(0.5, 0.8), "free-echo@35": row(0.6, 0.85),
                                             "free-echo@55": row(0.4, 0.86)}}}
    reports["phantom EchoNet"] = {"methods": {"sdedit@15": row(0.2, 0.6), "clsfree": row(0.4, 0.7),
                                              "free-echo@15": row(0.25, 0.75), "free-echo@35": row(0.2, 0.8),
                                              "free-echo@55": row(0.1, 0.85)}}
    reports["phantom CAMUS"]["methods"]["free-echo@35"]["per_map"] = {  # 15 vs 35: differences of both signs
        k: {"SSIM": v["SSIM"] + (-0.05 if int(k[4]) % 2 else 0.05), "PSNR": v["PSNR"]}
        for k, v in reports["phantom CAMUS"]["methods"]["free-echo@15"]["per_map"].items()}
    (tmp_path / "cpu").mkdir()
    write_notebook(tmp_path / "cpu" / "05_evaluation.ipynb", [
        glue_output("table1_reports", repr(table_reports(reports))),
        glue_output("table1_paper", repr({"phantom CAMUS": "CAMUS"})),
        glue_output("claims_rows", repr(claims_table(reports)))])
    values = study_values(stored_runs(tmp_path))
    assert has_table1(values) and not has_table1({"table1_table": "| a |"}) and study_values({}) == {}
    quality, anatomy = table1_parts(values)
    assert "*paper, real CAMUS*" in quality and "Dice LV" not in quality
    assert "| phantom CAMUS | free-echo | 15 | 8×4 | 0.800 | 0.100 |" in anatomy
    text = headline(values)
    assert "(8 maps × 4 samples each), Free-Echo from tᵢ = 15 scores an SSIM of 0.500" in text
    assert "a Dice of 0.800 (Cls-Free 0.900), +0.100 ± 0.020 above what a video of another heart scores" in text
    # Each dataset of the stored Table 1 gets its sentences, in the table's order.
    assert text.index("On the phantom CAMUS test maps") < text.index("On the phantom EchoNet test maps (8 maps")
    assert "scores an SSIM of 0.250 against the real clip, against 0.400 for the conditional" in text
    # SSIM: Cls-Free > FE15 and FE15 > SDEdit hold, the t_i chain is not significant; PSNR the same.
    assert "claims about Table 1 (orderings of SSIM and PSNR), on phantom CAMUS, 4 hold and 2 are not significant" in text


def test_a_stored_run_says_when_the_weights_it_ran_have_changed_since(tmp_path):
    (tmp_path / "ckpt").mkdir()
    model, judge = tmp_path / "ckpt" / "ema.pt", tmp_path / "ckpt" / "segmenter.pt"
    model.write_bytes(b"weights a")
    judge.write_bytes(b"judge")
    used = {str(Path(k).relative_to(tmp_path)): v for k, v in weights_used(model, judge).items()}
    runs = {"04_ablation_ti": {WEIGHTS_KEY: used}, "05_evaluation": {"ssim": 0.5}, "00_edm_core": {}}
    assert runs_on_other_weights(runs, tmp_path) == {
        "05_evaluation": "made before notebooks recorded the weights they ran"}
    model.write_bytes(b"weights b")  # trained further in place
    assert runs_on_other_weights(runs, tmp_path)["04_ablation_ti"] == \
        "ran on other weights than those stored now at `ckpt/ema.pt`"
    model.write_bytes(b"weights a")
    judge.unlink()
    assert "`ckpt/segmenter.pt`" in runs_on_other_weights(runs, tmp_path)["04_ablation_ti"]
    glue_record = tmp_path / "04.ipynb"  # a glued dict is read back as a dict
    write_notebook(glue_record, [glue_output(WEIGHTS_KEY, repr(used))])
    assert glued_values(glue_record)[WEIGHTS_KEY] == used


def test_the_map_specificity_finding_says_what_the_margins_and_correlations_show():
    from freeecho_core.study.headline import specificity_finding

    def row(margin, across_maps=0.5, across_seeds=0.5):
        return {"map margin": margin, "map margin s.e.": 0.02, "corr across maps, same seed": across_maps,
                "corr across seeds, same map": across_seeds}

    values = {"table1_reports": {"phantom CAMUS": {"methods": {
        "free-echo@15": row(0.07, 0.9, 0.3), "clsfree": row(0.31), "sdedit@15": row(0.03)}}}}
    sweep = {"best_t_margin": 60, "best_margin": 0.37, "best_margin_se": 0.03}
    text = specificity_finding(values, sweep)
    assert "follows its map only weakly: a map margin of +0.070 ± 0.020 (Cls-Free +0.310, SDEdit@15 +0.030;" in text
    assert "the seed more than the map decides the video" in text
    assert "largest at tᵢ = 60 (+0.370 ± 0.030)" in text and "ILVR" not in text
    values["table1_reports"]["phantom EchoNet"] = {"methods": {"free-echo@15": row(0.15), "clsfree": row(0.05)}}
    text = specificity_finding(values, sweep)
    assert text.count("largest at tᵢ = 60") == 1 and "On phantom EchoNet, Free-Echo from the paper's tᵢ = 15 " \
        "follows its map clearly: a map margin of +0.150 ± 0.020 (Cls-Free +0.050;" in text
    del values["table1_reports"]["phantom EchoNet"]
    values["table1_reports"]["phantom CAMUS"]["methods"]["free-echo@15"] = row(0.2, 0.3, 0.9)
    values["table1_reports"]["phantom CAMUS"]["methods"]["free-echo-ilvr@15"] = row(0.29)
    text = specificity_finding(values)
    assert "follows its map clearly" in text and ": the map decides the video" in text
    assert "raises it to +0.290" in text and "sweep" not in text
    values["table1_reports"]["phantom CAMUS"]["methods"]["free-echo@15"] = {"SSIM": 0.5}
    assert specificity_finding(values) == ""  # a study stored before the margin existed
