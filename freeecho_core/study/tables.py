"""The study as tables: Table 1 in the paper's layout (mean +- std over maps) beside the paper's own figures
on the real datasets, the map-specificity rows and their verdicts, and the paper's claims checked on our
numbers.
"""
from __future__ import annotations

import math
import statistics

from freeecho_core.study.anatomy import ANATOMY_COLUMNS, SPECIFICITY_COLUMNS
from freeecho_core.study.significance import paired_bootstrap, verdict, verdict_cell


# The paper's Table 1, on the REAL datasets (SSIM, PSNR, FID, FVD). Shown beside ours, never mixed with them.
PAPER_TABLE1 = {
    "CAMUS": {"sdedit@15": (0.23, 19.54, 32.45, 213.50), "clsfree": (0.52, 22.49, 22.50, 150.80),
              "free-echo@15": (0.48, 20.43, 26.31, 195.41), "free-echo@35": (0.27, 16.54, 53.71, 312.12),
              "free-echo@55": (0.12, 13.45, 67.15, 412.55)},
    "EchoNet-Dynamic": {"sdedit@15": (0.34, 21.52, 25.49, 250.45), "clsfree": (0.56, 20.04, 18.56, 130.85),
                        "free-echo@15": (0.51, 20.78, 24.22, 180.39), "free-echo@35": (0.32, 18.72, 44.67, 332.12),
                        "free-echo@55": (0.21, 16.66, 59.85, 395.73)},
}


def mean_cell(mean: float, std: float, n: int, digits: int) -> str:
    """mean +- std over n maps; a single map has no spread to show."""
    return f"{mean:.{digits}f}\u00a0±\u00a0{std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"  # no-break spaces


def standard_error(row: dict, metric: str) -> float:
    """The standard error over test maps of a method's metric, from its per-map values (SSIM, PSNR and the cone's
    in `per_map`, the anatomy metrics in `anatomy_per_map`); NaN with fewer than two maps."""
    per_map = row.get("per_map", {})
    source = per_map if metric in next(iter(per_map.values()), {}) else row.get("anatomy_per_map", {})
    values = [m[metric] for m in source.values() if metric in m and math.isfinite(m[metric])]
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


TABLE_PARTS = ("all", "quality", "anatomy")


def markdown_table(reports: dict[str, dict], paper: dict[str, str] | None = None, part: str = "all") -> str:
    """Table 1 layout: dataset, method, t_i, n (test maps × samples per map; the paper gives only its 10
    samples), SSIM, PSNR (mean ± std over maps), FID, FVD ("n/a" where a metric is unavailable), then the anatomy
    columns that any report holds (Dice per structure, EF proxy error, LV area roughness, FD-seg, FVD-seg; "-"
    for the paper, which did not measure them). `paper` maps a dataset label of ours to the paper's real dataset
    whose numbers are added as separate rows, labelled as the paper's. `part` "quality" keeps the paper's
    columns and rows only, "anatomy" our anatomy columns only (the paper has none): two tables that each fit a
    page's column."""
    if part not in TABLE_PARTS:
        raise ValueError(f"part must be one of {TABLE_PARTS}, got {part!r}")
    anatomy = [c for c in ANATOMY_COLUMNS if any(c in row for r in reports.values() for row in r["methods"].values())]
    quality = ["SSIM", "PSNR (dB)", "FID", "FVD"] if part != "anatomy" else []
    anatomy = anatomy if part != "quality" else []
    header = ["dataset", "method", "tᵢ", "n", *quality, *anatomy]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, report in reports.items():
        for name, row in report["methods"].items():
            method, _, step = name.partition("@")
            n = row.get("maps", 1)
            cells = [label, method, step or "-", f"{n}×{row.get('samples_per_map', '?')}"]
            if quality:
                cells += [mean_cell(row["SSIM"], row["SSIM_std"], n, 3), mean_cell(row["PSNR"], row["PSNR_std"], n, 2),
                          *(f"{row[m]:.2f}" if m in row else "n/a" for m in ("FID", "FVD"))]
            cells += [f"{row[c]:.3f}" if c in row else "n/a" for c in anatomy]
            lines.append("| " + " | ".join(cells) + " |")
        real = (paper or {}).get(label) if quality else None
        for name, values in PAPER_TABLE1.get(real, {}).items():
            method, _, step = name.partition("@")
            cells = [f"paper, real {real}", method, step or "-", "?×10", *(f"{v:.2f}" for v in values)]
            lines.append("| " + " | ".join(f"*{c}*" for c in cells) + " |" + " - |" * len(anatomy))
    return "\n".join(lines)


def table_reports(reports: dict[str, dict]) -> dict[str, dict]:
    """The part of each report that Table 1 shows (every method's scalar scores, no per-map detail): small
    enough to glue into the executed notebook, so that the Results page draws the stored study's tables with
    `markdown_table` itself. A score that could not be computed (NaN) is left out: the table shows it as n/a."""
    def shown(v):
        return isinstance(v, str) or isinstance(v, (int, float)) and math.isfinite(v)

    return {label: {"methods": {name: {k: v for k, v in row.items() if shown(v)}
                                for name, row in report["methods"].items()}}
            for label, report in reports.items()}


def specificity_rows(report: dict) -> list[dict]:
    """Map specificity per method of a report (`anatomy.map_specificity`), then the real clips read by the same
    segmenter (the ceiling), as table rows; methods scored on fewer than two maps have none."""
    rows = [{"method": name} | {c: row[c] for c in SPECIFICITY_COLUMNS if c in row}
            for name, row in report["methods"].items() if "map margin" in row]
    real = report.get("real_specificity")
    if real:
        rows.append({"method": "real clips (ceiling)"} | {c: real[c] for c in SPECIFICITY_COLUMNS if c in real})
    return rows


MIN_VERDICT_MAPS = 4  # fewer maps give a standard error of the margin too rough to judge by


def specificity_verdict(name: str, row: dict) -> str:
    """One sentence on whether a method's videos follow their own map: its margin against twice its standard
    error (no verdict on fewer than MIN_VERDICT_MAPS maps), and which of the map or the seed its videos' pixels
    follow more closely."""
    margin, se, maps = row["map margin"], row["map margin s.e."], row.get("maps", 0)
    follows = margin > 2 * se and margin > 0.02
    verdict = ("it follows its map" if follows else "no better than a video of another heart; it ignores its map")
    if maps < MIN_VERDICT_MAPS:
        verdict = f"{maps} maps are too few to judge"
    sentence = (f"{name}: Dice LV {row['Dice LV own map']:.3f} against its own map and {row['Dice LV other maps']:.3f} "
                f"against the other maps, a margin of {margin:+.3f} ± {se:.3f} (s.e. over maps): {verdict}")
    if "corr across maps, same seed" in row:
        maps, seeds = row["corr across maps, same seed"], row["corr across seeds, same map"]
        decides = "the seed, not the map, decides the video" if maps > seeds else "the map decides more than the seed"
        sentence += (f"; videos of different maps from the same seed correlate {maps:.2f} pixel by pixel, videos of "
                     f"one map from different seeds {seeds:.2f}: {decides}")
    return sentence + "."


# The paper's claims about Table 1: each is a chain of "A above B" comparisons on one metric.
CLAIMS = {"Cls-Free above Free-Echo@15": [("clsfree", "free-echo@15")],
          "Free-Echo@15 above SDEdit": [("free-echo@15", "sdedit@15")],
          "Free-Echo worsens from tᵢ = 15 to 35 to 55": [("free-echo@15", "free-echo@35"),
                                                         ("free-echo@35", "free-echo@55")]}


def paper_ordering(report: dict, metric: str = "SSIM") -> dict[str, bool]:
    """The paper's claims about Table 1 (`CLAIMS`), checked on a report's means: Cls-Free above Free-Echo@15
    above SDEdit, and Free-Echo worsening from t_i = 15 to 35 to 55."""
    m = {name: row[metric] for name, row in report["methods"].items()}
    return {f"{claim} ({metric})": all(m[a] > m[b] for a, b in chain) for claim, chain in CLAIMS.items()}


def paper_report(dataset: str) -> dict:
    """The paper's own Table 1 rows for one real dataset in the layout of a report (SSIM and PSNR)."""
    return {"methods": {name: {"SSIM": v[0], "PSNR": v[1]} for name, v in PAPER_TABLE1[dataset].items()}}


def paired_claim(report: dict, chain: list[tuple[str, str]], metric: str) -> dict:
    """A claim's chain judged over the test maps that every method of it scored (`significance`): each link's
    paired bootstrap of the per-map differences; the chain holds when every link holds, fails when any link
    fails. Returns the weakest link's test with the chain's verdict."""
    methods = report["methods"]
    maps = sorted(set.intersection(*(set(methods[name].get("per_map", {})) for pair in chain for name in pair)))
    if not maps:
        raise ValueError(f"the report has no per-map {metric} for {chain}")
    tests = [paired_bootstrap([methods[a]["per_map"][k][metric] for k in maps],
                              [methods[b]["per_map"][k][metric] for k in maps]) for a, b in chain]
    verdicts = [verdict(t) for t in tests]
    weakest = min(tests, key=lambda t: t["low"])
    chain_verdict = ("fails" if "fails" in verdicts else "holds" if set(verdicts) == {"holds"} else
                     "too few maps" if "too few maps" in verdicts else "not significant")
    return weakest | {"verdict": chain_verdict}


def claims_table(reports: dict[str, dict]) -> list[dict]:
    """Each of the paper's claims (`CLAIMS`, for SSIM and PSNR) checked first on the paper's own Table 1 for
    CAMUS and EchoNet-Dynamic (its published means: "holds" / "fails", no test possible), then on each of our
    reports with a paired bootstrap over test maps (`paired_claim`): "holds", "fails" or "not significant"
    with the mean difference of the weakest link and its 95 % interval."""
    rows = []
    for metric in ("SSIM", "PSNR"):
        for claim, chain in CLAIMS.items():
            row = {"claim": f"{claim} ({metric})"}
            for dataset in PAPER_TABLE1:
                holds = paper_ordering(paper_report(dataset), metric)[row["claim"]]
                row[f"paper, {dataset}"] = "holds" if holds else "fails"
            for label, report in reports.items():
                test = paired_claim(report, chain, metric)
                row[f"ours, {label}"] = verdict_cell(test, 3 if metric == "SSIM" else 2)
            rows.append(row)
    return rows


# The paper's claim about the scan cone (section 3, on EchoNet-Dynamic, whose maps hold only the LV): Cls-Free
# "struggles with consistent ultrasound structure" in the cone, where Free-Echo's pseudo labels help. Judged as
# Free-Echo@15 above Cls-Free on the cone's shape (fan IoU against the map's sector) and on the frame outside
# the LV (SSIM there), paired over test maps.
CONE_CLAIM = [("free-echo@15", "clsfree")]
CONE_METRICS = {"fan IoU": ("fan IoU", None), "SSIM outside the LV": ("SSIM_breakdown", "SSIM outside the LV")}


def cone_claim_rows(report: dict) -> list[dict]:
    """The cone claim (`CONE_CLAIM`) on one report, per metric of `CONE_METRICS`: each method's mean over maps,
    the recordings' own (fan IoU: the real clips' fans against their sectors) and the verdict of the paired
    bootstrap over test maps (`paired_claim`). [] when the report lacks the two methods or their per-map scores."""
    methods = report["methods"]
    (method, baseline), = CONE_CLAIM
    rows = []
    for metric, (key, part) in CONE_METRICS.items():
        scored = [methods.get(name, {}).get("per_map", {}) for name in (method, baseline)]
        if not all(maps and all(metric in m for m in maps.values()) for maps in scored):
            continue
        means = [methods[name][key] if part is None else methods[name][key][part] for name in (method, baseline)]
        ceiling = report.get("real_cone", {}).get(metric, float("nan")) if part is None else "-"  # SSIM: 1 by itself
        rows.append({"metric": metric, method: means[0], baseline: means[1], "recordings": ceiling,
                     f"{method} above {baseline}": verdict_cell(paired_claim(report, CONE_CLAIM, metric))})
    return rows


def cone_verdict(label: str, rows: list[dict]) -> str:
    """The cone claim on one dataset in a sentence: it holds when Free-Echo@15 is above Cls-Free on every metric
    of `cone_claim_rows`, fails when it is below on any, else is not significant."""
    (method, baseline), = CONE_CLAIM
    verdicts = [row[f"{method} above {baseline}"] for row in rows]
    kinds = {v.split(":")[0] for v in verdicts}
    overall = ("fails" if "fails" in kinds else "holds" if kinds == {"holds"} else
               "has too few maps to judge" if "too few maps" in kinds else "is not significant")
    evidence = "; ".join(f"{row['metric']} ({v})" for row, v in zip(rows, verdicts))
    return f"On {label}, the paper's cone claim (Free-Echo@15 above Cls-Free) {overall}: {evidence}."


def evaluation_lines(report: dict) -> list[str]:
    """The printed summary of an evaluation report (`scoring.evaluate`): SSIM, PSNR and the anatomy metrics per
    method, and what was unavailable and why."""
    lines = []
    for name, row in report["methods"].items():
        anatomy = "".join(f"  {c} {row[c]:.3g}" for c in ANATOMY_COLUMNS if c in row)
        lines.append(f"{name:>24}: SSIM {row['SSIM']:.3f}  PSNR {row['PSNR']:.2f} dB{anatomy}  over {row['maps']} maps")
    return lines + [f"unavailable: {why}" for why in report["unavailable"].values()]
