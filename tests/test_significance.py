"""The paired bootstrap over test maps that judges the paper's claims: known answers, its coverage, and the
claims table built on it."""
import numpy as np
import pytest

from freeecho_core.study.significance import paired_bootstrap, verdict, verdict_cell
from freeecho_core.study.tables import claims_table, paired_claim


def test_constant_differences_give_a_point_interval():
    test = paired_bootstrap([0.5] * 6, [0.4] * 6)
    assert test["mean"] == pytest.approx(0.1) and test["low"] == pytest.approx(0.1) == test["high"]
    assert verdict(test) == "holds" and verdict(paired_bootstrap([0.4] * 6, [0.5] * 6)) == "fails"
    assert verdict_cell(test) == "holds: +0.100 [+0.100, +0.100] (n = 6)"


def test_differences_around_zero_are_not_significant_and_few_maps_are_not_judged():
    assert verdict(paired_bootstrap([1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1, 0, 1])) == "not significant"
    assert verdict(paired_bootstrap([0.9, 0.8, 0.7], [0.1, 0.1, 0.1])) == "too few maps"
    with pytest.raises(ValueError, match="equally long finite"):
        paired_bootstrap([1.0, float("nan")], [0.0, 0.0])


def test_the_interval_matches_the_normal_one_for_many_maps_and_covers_the_truth():
    rng = np.random.default_rng(1)
    d = rng.normal(0.2, 1.0, 400)
    test = paired_bootstrap(d, np.zeros_like(d))
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert test["high"] - test["low"] == pytest.approx(2 * half, rel=0.1)
    assert (test["low"] + test["high"]) / 2 == pytest.approx(d.mean(), abs=0.02)
    # Coverage over 300 experiments of 16 maps whose true mean difference is 0 (a percentile bootstrap
    # under-covers slightly at small n).
    covered = [(t["low"] <= 0 <= t["high"]) for t in
               (paired_bootstrap(rng.normal(0, 1, 16), np.zeros(16), resamples=2000, seed=k) for k in range(300))]
    assert 0.88 <= np.mean(covered) <= 0.99


def report(ssim: dict[str, list[float]]) -> dict:
    """A report whose methods carry per-map SSIM (PSNR = 20 x SSIM) on the same maps."""
    return {"methods": {name: {"SSIM": float(np.mean(v)), "PSNR": 20 * float(np.mean(v)),
                               "per_map": {f"case{k}_2CH": {"SSIM": s, "PSNR": 20 * s} for k, s in enumerate(v)}}
                        for name, v in ssim.items()}}


def test_a_chain_holds_only_when_every_link_holds():
    up = np.linspace(0.0, 0.07, 8)  # per-map noise shared by every method: the paired test removes it
    study = report({"clsfree": 0.5 + up, "free-echo@15": 0.45 + up, "sdedit@15": 0.30 + up,
                    "free-echo@35": 0.30 + up + [0.01, -0.01] * 4, "free-echo@55": 0.2 + up})
    chain = [("free-echo@15", "free-echo@35"), ("free-echo@35", "free-echo@55")]
    assert paired_claim(study, chain, "SSIM")["verdict"] == "holds"
    study["methods"]["free-echo@55"] = report({"x": 0.3 + up + [0.01, -0.01] * 4})["methods"]["x"]
    flat = paired_claim(study, chain, "SSIM")
    assert flat["verdict"] == "not significant" and flat["mean"] == pytest.approx(0.0)
    study["methods"]["free-echo@55"] = report({"x": 0.6 + up})["methods"]["x"]
    assert paired_claim(study, chain, "SSIM")["verdict"] == "fails"
    rows = {row["claim"]: row for row in claims_table({"phantom": study})}
    assert rows["Free-Echo worsens from tᵢ = 15 to 35 to 55 (SSIM)"]["ours, phantom"].startswith("fails: -0.300")
    assert rows["Free-Echo@15 above SDEdit (PSNR)"]["ours, phantom"] == "holds: +3.00 [+3.00, +3.00] (n = 8)"
    assert rows["Cls-Free above Free-Echo@15 (SSIM)"]["paper, CAMUS"] == "holds"


def test_the_standard_error_over_maps_reads_the_per_map_scores():
    from freeecho_core.study.tables import standard_error

    row = {"per_map": {"a": {"SSIM": 0.4}, "b": {"SSIM": 0.6}},
           "anatomy_per_map": {"a": {"Dice LV": 0.8}, "b": {"Dice LV": float("nan")}, "c": {"Dice LV": 0.9}}}
    assert standard_error(row, "SSIM") == pytest.approx(np.std([0.4, 0.6], ddof=1) / np.sqrt(2))
    assert standard_error(row, "Dice LV") == pytest.approx(np.std([0.8, 0.9], ddof=1) / np.sqrt(2))
    assert np.isnan(standard_error({"per_map": {"a": {"SSIM": 0.4}}}, "SSIM"))
