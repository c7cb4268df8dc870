"""The guided-sampling study: does ILVR (`guidance`) keep the map and the motion that plain Free-Echo loses?

A grid of start steps t_i x guide settings (the low band's block size, the step ILVR stops at, the mask) on the TEST maps,
beside plain Free-Echo at the same t_i. Each cell is scored twice, with the study's own code: `scoring.evaluate`
on still pseudo videos (SSIM/PSNR against the real clip, Dice LV of the judge's reading, the map margin, FD-seg),
and `ef.run_ef_study` on beating pseudo videos (the EF the judge reads back against the target, the network
evaluations and seconds per video). The judge's own EF error (`ef.real_floor`, `ef.pseudo_video_reads`) is kept
beside the results. Every cell has its folder under the study's (<guide setting>/t<t_i>/: the videos, metrics.json, ef.json), so an
interrupted study resumes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from freeecho_core.files import write_text_atomically
from freeecho_core.guidance import Guide
from freeecho_core.options import at_least, finite_number, option, start_step
from freeecho_core.progress import progress_bar
from freeecho_core.sampler import DEFAULT_SAMPLER, SamplerConfig
from freeecho_core.study.ef import EFStudyConfig, prescribed_ef, run_ef_study
from freeecho_core.study.scoring import evaluate, load_models
from freeecho_core.study.videos import EvalConfig, file_digest

# The columns of a cell's row taken from Table 1's scoring (`quality_row`).
QUALITY = ("SSIM", "PSNR", "Dice LV", "map margin", "map margin s.e.", "FD-seg", "FD-seg s.e.")


@dataclass(frozen=True)
class GuidedStudyConfig:
    start_steps: tuple[int, ...] = field(default=(15, 25, 35), metadata=option(
        "the start steps t_i", start_step, many=True))
    factors: tuple[int, ...] = field(default=(2, 4), metadata=option(
        "ILVR's block sizes (each must divide the frame size)", at_least(1), many=True))
    untils: tuple[int, ...] = field(default=(40, 55), metadata=option(
        "the steps ILVR stops at", at_least(1), many=True))
    masks: tuple[int, ...] = field(default=(0,), metadata=option(
        "ILVR's mask dilations (0: the whole frame; PX: only the LV and LA dilated by PX pixels)", at_least(0),
        many=True))
    calibration: int = field(default=0, metadata=option(
        "noise-calibration refinements added to every guided cell (0: ILVR alone)", at_least(0)))
    efs: tuple[float, ...] = field(default=(0.3, 0.5, 0.7), metadata=option(
        "the target EFs of the beating pseudo videos", finite_number, many=True))
    samples: int = field(default=2, metadata=option("videos per map (and per target)", at_least(1)))
    max_maps: int = field(default=8, metadata=option("the first N maps of the split", at_least(1)))
    seed: int = field(default=0, metadata=option("seed of the sample streams", at_least(0)))
    ef_offset: float = field(default=0.0, metadata=option(
        "the guided cells prescribe offset + scale x target EF (`ef.prescribed_ef`): a calibration, measured on "
        "VAL maps (--split VAL) before it is used on TEST", finite_number))
    ef_scale: float = field(default=1.0, metadata=option("the calibration's scale (see --ef-offset)", finite_number))
    split: str = field(default="TEST", metadata=option(
        "the maps' split (VAL: to measure a calibration without touching the TEST maps)", choices=("VAL", "TEST")))

    def guides(self) -> list[Guide | None]:
        """None (plain Free-Echo), then every (factor, until, mask) of the grid."""
        return [None] + [Guide(ilvr=True, calibration=self.calibration, factor=f, until=u, mask=m)
                         for f in self.factors for u in self.untils for m in self.masks]


def cell_name(guide: Guide | None) -> str:
    """The folder and row label of a guide setting: "plain" or e.g. "ilvr f4 until 40" ("ilvr-nc ..." with NC,
    "... mask 4" when only the dilated LV and LA are guided)."""
    if guide is None:
        return "plain"
    return f"{guide.name} f{guide.factor} until {guide.until}" + (f" mask {guide.mask}" if guide.mask else "")


def quality_row(metrics: dict) -> dict:
    """The one method row of a cell's metrics.json, its `QUALITY` columns and their standard errors over maps."""
    (row,) = metrics["methods"].values()
    out = {name: row.get(name) for name in QUALITY}
    per_map = row.get("anatomy_per_map", {})
    if per_map:
        dice = [m["Dice LV"] for m in per_map.values() if np.isfinite(m["Dice LV"])]
        out["Dice LV s.e."] = float(np.std(dice, ddof=1) / np.sqrt(len(dice))) if len(dice) > 1 else None
    return out


def run_guided_study(data_root, checkpoint, segmenter, out, config: GuidedStudyConfig = GuidedStudyConfig(), *,
                     sampler: SamplerConfig | None = None, device="cpu", progress: bool = True,
                     json_path=None) -> dict:
    """Score every cell of `config` (resumably, in <out>/<cell>/) and write <out>/guided-study.json (and
    `json_path`, e.g. the stored study's results/cpu/guided-study.json): one row per (t_i, guide setting), the
    reader's own EF error, the settings and the sha256 of the weights that made it."""
    out = Path(out)
    sampler = sampler or replace(DEFAULT_SAMPLER, cap_steps=False)  # the same steps from every t_i
    models = load_models(checkpoint, None, device)
    rows, reader = [], None
    cells = [(g, t) for g in config.guides() for t in config.start_steps if g is None or g.until > t]
    for guide, t_i in progress_bar(cells, disable=not progress, desc="guided study", unit="cell"):
        folder = out / cell_name(guide).replace(" ", "-") / (f"t{t_i}" + ("" if config.split == "TEST" else "-val"))
        offset, scale = (config.ef_offset, config.ef_scale) if guide is not None else (0.0, 1.0)  # guided cells only
        kind = "free-echo" if guide is None else f"free-echo-{guide.name}"
        eval_config = EvalConfig(samples=config.samples, batch=config.samples, start_steps=(t_i,), sampler=sampler,
                                 seed=config.seed, methods=(kind,), guided_step=t_i, guide=guide or Guide())
        metrics = evaluate(data_root, checkpoint, None, folder, eval_config, split=config.split, device=device,
                           max_maps=config.max_maps, progress=False, segmenter=segmenter, models=models)
        ef_config = EFStudyConfig(efs=config.efs, start_steps=(t_i,), samples=config.samples,
                                  max_maps=config.max_maps, seed=config.seed, ef_offset=offset, ef_scale=scale,
                                  split=config.split)
        ef_name = "ef.json" if (offset, scale) == (0.0, 1.0) else f"ef-offset{offset:+.3f}-scale{scale:.3f}.json"
        ef = run_ef_study(data_root, checkpoint, segmenter, folder / ef_name, ef_config, sampler=sampler,
                          guide=guide, device=device, progress=False)
        summary = ef["summary"][str(t_i)]
        reader = {"recorded VAL and TEST clips": {k: v for k, v in ef["real_floor"].items() if k != "clips"},
                  "beating pseudo videos": {k: v for k, v in ef["pseudo_video"].items() if k != "rows"}}
        rows.append({"t_i": t_i, "method": cell_name(guide), "guide": None if guide is None else asdict(guide),
                     "ef_offset": offset, "ef_scale": scale,
                     **quality_row(metrics), "EF r": summary["beating"]["correlation"],
                     "EF MAE": summary["beating"]["mae"], "EF bias": summary["beating"]["bias"],
                     "EF r with its pseudo video": summary["beating_vs_pseudo_video"]["correlation"],
                     "EF per target": summary["per_target"],
                     "NFE": summary["network_evaluations"], "seconds per video": summary["seconds_per_video"]})
    report = {"config": asdict(config), "sampler": asdict(sampler), "checkpoint": str(checkpoint),
              "checkpoint_sha256": file_digest(checkpoint), "segmenter": str(segmenter),
              "segmenter_sha256": file_digest(segmenter), "data": str(data_root), "rows": rows, "reader": reader}
    text = json.dumps(report, indent=1) + "\n"
    for path in [out / "guided-study.json"] + ([Path(json_path)] if json_path else []):
        write_text_atomically(path, text)
    return report


GOAL = {"EF r": 0.8, "EF MAE": 0.08}  # what a guided method must reach at some t_i <= GOAL_LATEST_START
GOAL_LATEST_START = 30
# The columns of `table_rows`: each cell's scores, formatted, with their standard errors over maps.
TABLE_COLUMNS = ("t_i", "method", "Dice LV", "map margin", "SSIM", "FD-seg", "EF r", "EF MAE", "EF bias", "NFE",
                 "s/video")


def table_rows(report: dict) -> list[dict]:
    """One row per cell of the study, for `viz.rows_table`: plain Free-Echo first at each t_i."""
    def with_se(value, se, spec):
        return number(value, spec) + ("" if se is None else f" ± {number(se, spec.lstrip('+'))}")

    rows = sorted(report["rows"], key=lambda r: (r["t_i"], r["method"] != "plain", r["method"]))
    return [{"t_i": r["t_i"], "method": r["method"], "Dice LV": with_se(r["Dice LV"], r.get("Dice LV s.e."), ".3f"),
             "map margin": with_se(r["map margin"], r.get("map margin s.e."), "+.3f"), "SSIM": number(r["SSIM"], ".3f"),
             "FD-seg": with_se(r["FD-seg"], r.get("FD-seg s.e."), ".3f"), "EF r": number(r["EF r"], ".2f"),
             "EF MAE": number(r["EF MAE"], ".3f"), "EF bias": number(r["EF bias"], "+.3f"), "NFE": r["NFE"],
             "s/video": number(r["seconds per video"], ".1f")} for r in rows]


def fd_seg_worse(row: dict, plain: dict) -> bool:
    """Whether a cell's FD-seg is above plain Free-Echo's by more than the cell's standard error."""
    return not row["FD-seg"] <= plain["FD-seg"] + (row.get("FD-seg s.e.") or 0.0)


def shortfalls(row: dict, plain: dict) -> list[str]:
    """What keeps a guided cell from the goal, in words (empty: it meets it): EF r and MAE against `GOAL`, the
    start step, Dice LV and map margin at least plain Free-Echo's at the same t_i (`plain`), FD-seg no worse
    than plain's by more than its standard error."""
    misses = []
    if row["t_i"] > GOAL_LATEST_START:
        misses.append(f"t_i {row['t_i']} > {GOAL_LATEST_START}")
    if not row["EF r"] >= GOAL["EF r"]:
        misses.append(f"EF r {number(row['EF r'], '.2f')} < {GOAL['EF r']}")
    if not row["EF MAE"] <= GOAL["EF MAE"]:
        misses.append(f"EF MAE {number(row['EF MAE'], '.3f')} > {GOAL['EF MAE']}")
    for name in ("Dice LV", "map margin"):
        if not row[name] >= plain[name]:
            misses.append(f"{name} {number(row[name], '.3f')} below plain's {number(plain[name], '.3f')}")
    if fd_seg_worse(row, plain):
        misses.append(f"FD-seg {number(row['FD-seg'], '.3f')} above plain's {number(plain['FD-seg'], '.3f')} "
                      f"by more than its s.e.")
    return misses


def verdicts(report: dict) -> list[dict]:
    """Per guided cell: its row, plain Free-Echo's at the same t_i and its `shortfalls`, the closest to the goal
    first (fewest shortfalls, then the smallest EF MAE)."""
    plain = {r["t_i"]: r for r in report["rows"] if r["method"] == "plain"}
    cells = [{"row": r, "plain": plain[r["t_i"]], "shortfalls": shortfalls(r, plain[r["t_i"]])}
             for r in report["rows"] if r["method"] != "plain" and r["t_i"] in plain]
    return sorted(cells, key=lambda c: (len(c["shortfalls"]), c["row"]["EF MAE"]))


def recommended_guide(report: dict) -> Guide:
    """The guide settings of the cell closest to the goal (`verdicts`), the one generate should be run with."""
    return Guide(**verdicts(report)[0]["row"]["guide"])


def fit_calibration(row: dict) -> tuple[float, float]:
    """The calibration (--ef-offset, --ef-scale) that a cell's EF readings call for: the least-squares line
    read = a + b x prescribed through its mean read EF per target ("EF per target", prescribed as
    `ef.prescribed_ef` gave them), inverted so that prescribing offset + scale x target reads back the target.
    Fitted on a VAL study's cell, it is used on TEST (the calibration is measured, not tuned on the scores)."""
    targets = np.array([float(t) for t in row["EF per target"]])
    read = np.array(list(row["EF per target"].values()), dtype=float)
    prescribed = np.array([prescribed_ef(t, row["ef_offset"], row["ef_scale"]) for t in targets])
    if len(targets) < 2 or not np.isfinite(read).all():
        raise ValueError(f"cell {row['method']!r}: a calibration needs readings at two targets or more")
    b, a = np.polyfit(prescribed, read, 1)
    if not b > 0:
        raise ValueError(f"cell {row['method']!r}: the read EF does not rise with the prescribed one (slope {b:.3f})")
    return float(-a / b), float(1 / b)


def number(value, spec: str) -> str:
    """`value` formatted, or "-" where a cell has none (one map: no margin)."""
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def summary_lines(report: dict) -> list[str]:
    """One line per cell, then the reader's own error."""
    lines = []
    for r in report["rows"]:
        lines.append(f"t_i {r['t_i']:>2} {r['method']:<20} Dice LV {number(r['Dice LV'], '.3f')}, margin "
                     f"{number(r['map margin'], '+.3f')}, SSIM {number(r['SSIM'], '.3f')}, FD-seg "
                     f"{number(r['FD-seg'], '.2f')} ± {number(r.get('FD-seg s.e.'), '.2f')}, EF r {number(r['EF r'], '.2f')} MAE {number(r['EF MAE'], '.3f')} "
                     f"bias {number(r['EF bias'], '+.3f')}, {r['NFE']} NFE, {r['seconds per video']:.1f} s/video")
        if r["method"] != "plain" and report["config"].get("split") == "VAL" and len(r.get("EF per target", {})) > 1:
            offset, scale = fit_calibration(r)
            lines.append(f"      its calibration for TEST: --ef-offset {offset:.3f} --ef-scale {scale:.3f}")
    for name, error in (report["reader"] or {}).items():
        lines.append(f"the EF reader on {name}: r {error['correlation']:.2f}, MAE {error['mae']:.3f}, "
                     f"bias {error['bias']:+.3f} (n {error['n']}; ignoring the video: MAE "
                     f"{error['ignoring_input']['mae']:.3f})")
    return lines
