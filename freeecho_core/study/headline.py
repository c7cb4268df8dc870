"""The stored study in words and tables for the book's landing and Results pages, built from the values that
the stored notebooks glued (`stored.stored_runs`): the pages that show the study read one source and cannot
disagree, and no number is typed by hand.
"""
from __future__ import annotations

from collections import Counter

from freeecho_core.study.tables import markdown_table

STUDY_PROFILE = "cpu"  # the profile whose stored run is the measurement the book reports
# A verdict of `significance` as a sentence says it of one claim and of several.
VERDICT_WORDS = {"holds": ("holds", "hold"), "fails": ("fails", "fail"),
                 "not significant": ("is not significant", "are not significant"),
                 "too few maps": ("has too few maps to judge", "have too few maps to judge")}


def study_values(runs: dict, profile: str = STUDY_PROFILE) -> dict:
    """The glued values of the stored evaluation (notebook 05) at `profile`, or {} when none is stored."""
    return runs.get(profile, {}).get("05_evaluation", {})


def has_table1(values: dict) -> bool:
    """Whether a stored evaluation glued Table 1's scores (`tables.table_reports`), not only its Markdown."""
    return isinstance(values.get("table1_reports"), dict)


def table1_parts(values: dict) -> tuple[str, str]:
    """The stored Table 1 as two tables that fit a page's column: the paper's metrics beside the paper's own
    rows, and our anatomy metrics."""
    reports = values["table1_reports"]
    return (markdown_table(reports, values.get("table1_paper") or {}, part="quality"),
            markdown_table(reports, part="anatomy"))


def claim_counts(claims: list[dict]) -> dict[str, Counter]:
    """Per column of ours in a claims table (`tables.claims_table`): how many claims hold, fail or are not
    significant."""
    columns = [c for c in claims[0] if c.startswith("ours, ")] if claims else []
    return {c: Counter(row[c].split(":")[0] for row in claims) for c in columns}


def dataset_sentences(label: str, methods: dict) -> str:
    """What Free-Echo from tᵢ = 15, Cls-Free and SDEdit score on one dataset of the stored Table 1: SSIM against
    the real clip, and the Dice LV of the first frame with its map margin where the study measured them."""
    fe, cf, sd = methods["free-echo@15"], methods["clsfree"], methods["sdedit@15"]
    text = (f"On the {label} test maps ({fe['maps']} maps × {fe['samples_per_map']} samples each), Free-Echo from "
            f"tᵢ = 15 scores an SSIM of {fe['SSIM']:.3f} against the real clip, against {cf['SSIM']:.3f} for the "
            f"conditional Cls-Free model and {sd['SSIM']:.3f} for SDEdit.")
    if "Dice LV" in fe:
        text += (f" The segmenter finds the input map's LV in Free-Echo's first frame with a Dice of "
                 f"{fe['Dice LV']:.3f} (Cls-Free {cf.get('Dice LV', float('nan')):.3f})")
        if "map margin" in fe:
            text += (f", {fe['map margin']:+.3f} ± {fe['map margin s.e.']:.3f} above what a video of another "
                     f"heart scores (Cls-Free {cf.get('map margin', float('nan')):+.3f})")
        text += "."
    return text


def headline(values: dict) -> str:
    """A few sentences on the stored study: per dataset, what Free-Echo, Cls-Free and SDEdit score and whether
    the videos follow their maps; then how many of the paper's claims hold with a paired test."""
    text = " ".join(dataset_sentences(label, report["methods"]) for label, report in values["table1_reports"].items())
    counts = claim_counts(values.get("claims_rows") or [])
    for column, count in counts.items():
        parts = [f"{count[v]} {VERDICT_WORDS[v][count[v] != 1]}" for v in VERDICT_WORDS if count[v]]
        said = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        text += (f" Of the paper's {sum(count.values())} claims about Table 1 (orderings of SSIM and PSNR), on "
                 f"{column.removeprefix('ours, ')}, {said} (a paired bootstrap over test maps).")
    return text


# The map margin (Dice LV own map minus other maps) below which a method is said to follow its map only weakly:
# the phantom-anatomy issue's target for Free-Echo@15 (a video of another heart scores a margin of 0).
WEAK_MARGIN = 0.10


def specificity_finding(values: dict, sweep: dict | None = None) -> str:
    """The map-specificity result in words, per dataset, for Free-Echo from the paper's tᵢ = 15 beside Cls-Free
    and SDEdit: its map margin, whether the seed or the map decides the video (the pixel correlations of
    `evaluate`), and, for the first dataset, where the margin peaks in the tᵢ sweep (notebook 04's glued values,
    `sweep`, which sweeps that dataset). '' when the stored study has no margin."""
    found = [dataset_specificity(label, report["methods"], None if i else sweep)
             for i, (label, report) in enumerate(values["table1_reports"].items())]
    return " ".join(text for text in found if text)


def dataset_specificity(label: str, methods: dict, sweep: dict | None) -> str:
    """`specificity_finding` for one dataset ('' when its Free-Echo row has no map margin)."""
    fe = methods.get("free-echo@15", {})
    if "map margin" not in fe:
        return ""
    others = ", ".join(f"{name} {methods[key]['map margin']:+.3f}" for key, name in
                       (("clsfree", "Cls-Free"), ("sdedit@15", "SDEdit@15")) if "map margin" in methods.get(key, {}))
    strength = "only weakly" if fe["map margin"] < WEAK_MARGIN else "clearly"
    text = (f"On {label}, Free-Echo from the paper's tᵢ = 15 follows its map {strength}: a map margin of "
            f"{fe['map margin']:+.3f} ± {fe['map margin s.e.']:.3f} ({others}; a method that ignores its map "
            f"scores 0).")
    across_maps, across_seeds = fe.get("corr across maps, same seed"), fe.get("corr across seeds, same map")
    if across_maps is not None and across_seeds is not None:
        decides = "the seed more than the map decides" if across_maps > across_seeds else "the map decides"
        text += (f" Its videos of different maps made with the same seed correlate {across_maps:.2f} pixel by pixel, "
                 f"videos of one map made with different seeds {across_seeds:.2f}: {decides} the video.")
    if sweep and "best_t_margin" in sweep:
        text += (f" In the tᵢ sweep the margin is largest at tᵢ = {sweep['best_t_margin']} "
                 f"({sweep['best_margin']:+.3f} ± {sweep['best_margin_se']:.3f}).")
    ilvr = methods.get("free-echo-ilvr@15", {})
    if "map margin" in ilvr:
        verb = "raises" if ilvr["map margin"] > fe["map margin"] else "lowers"
        text += (f" Guided sampling (ILVR, beyond the paper) from tᵢ = 15 {verb} it to {ilvr['map margin']:+.3f} "
                 f"± {ilvr['map margin s.e.']:.3f}.")
    return text
