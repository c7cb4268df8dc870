"""The guided-sampling study: does ILVR (`guidance`) keep the map and the motion that plain Free-Echo loses?

A grid of start steps t_i x guide settings (the low band's block size, the step ILVR stops at) on the TEST maps,
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
from freeecho_core.study.ef import EFStudyConfig, run_ef_study
from freeecho_core.study.scoring import evaluate, load_models
from freeecho_core.study.videos import EvalConfig

# The columns of `study_rows` taken from Table 1's scoring.
QUALITY = ("SSIM", "PSNR", "Dice LV", "map margin", "map margin s.e.", "FD-seg", "FD-seg s.e.")


@dataclass(frozen=True)
class GuidedStudyConfig:
    start_steps: tuple[int, ...] = field(default=(15, 25, 35), metadata=option(
        "the start steps t_i", start_step, many=True))
    factors: tuple[int, ...] = field(default=(2, 4), metadata=option(
        "ILVR's block sizes (each must divide the frame size)", at_least(1), many=True))
    untils: tuple[int, ...] = field(default=(40, 55), metadata=option(
        "the steps ILVR stops at", at_least(1), many=True))
    calibration: int = field(default=0, metadata=option(
        "noise-calibration refinements added to every guided cell (0: ILVR alone)", at_least(0)))
    efs: tuple[float, ...] = field(default=(0.3, 0.5, 0.7), metadata=option(
        "the target EFs of the beating pseudo videos", finite_number, many=True))
    samples: int = field(default=2, metadata=option("videos per map (and per target)", at_least(1)))
    max_maps: int = field(default=8, metadata=option("the first N TEST maps", at_least(1)))
    seed: int = field(default=0, metadata=option("seed of the sample streams", at_least(0)))

    def guides(self) -> list[Guide | None]:
        """None (plain Free-Echo), then every (factor, until) of the grid."""
        return [None] + [Guide(ilvr=True, calibration=self.calibration, factor=f, until=u)
                         for f in self.factors for u in self.untils]


def cell_name(guide: Guide | None) -> str:
    """The folder and row label of a guide setting: "plain" or e.g. "ilvr f4 until 40" ("ilvr-nc ..." with NC)."""
    return "plain" if guide is None else f"{guide.name} f{guide.factor} until {guide.until}"


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
                     sampler: SamplerConfig | None = None, device="cpu", progress: bool = True) -> dict:
    """Score every cell of `config` (resumably, in <out>/<cell>/) and write <out>/guided-study.json: one row per
    (t_i, guide setting), the reader's own EF error and the settings."""
    out = Path(out)
    sampler = sampler or replace(DEFAULT_SAMPLER, cap_steps=False)  # the same steps from every t_i
    models = load_models(checkpoint, None, device)
    rows, reader = [], None
    cells = [(g, t) for g in config.guides() for t in config.start_steps if g is None or g.until > t]
    for guide, t_i in progress_bar(cells, disable=not progress, desc="guided study", unit="cell"):
        folder = out / cell_name(guide).replace(" ", "-") / f"t{t_i}"
        kind = "free-echo" if guide is None else f"free-echo-{guide.name}"
        eval_config = EvalConfig(samples=config.samples, batch=config.samples, start_steps=(t_i,), sampler=sampler,
                                 seed=config.seed, methods=(kind,), guided_step=t_i, guide=guide or Guide())
        metrics = evaluate(data_root, checkpoint, None, folder, eval_config, device=device,
                           max_maps=config.max_maps, progress=False, segmenter=segmenter, models=models)
        ef_config = EFStudyConfig(efs=config.efs, start_steps=(t_i,), samples=config.samples,
                                  max_maps=config.max_maps, seed=config.seed)
        ef = run_ef_study(data_root, checkpoint, segmenter, folder / "ef.json", ef_config, sampler=sampler,
                          guide=guide, device=device, progress=False)
        summary = ef["summary"][str(t_i)]
        reader = {"recorded VAL and TEST clips": {k: v for k, v in ef["real_floor"].items() if k != "clips"},
                  "beating pseudo videos": {k: v for k, v in ef["pseudo_video"].items() if k != "rows"}}
        rows.append({"t_i": t_i, "method": cell_name(guide), "guide": None if guide is None else asdict(guide),
                     **quality_row(metrics), "EF r": summary["beating"]["correlation"],
                     "EF MAE": summary["beating"]["mae"], "EF bias": summary["beating"]["bias"],
                     "EF r with its pseudo video": summary["beating_vs_pseudo_video"]["correlation"],
                     "NFE": summary["network_evaluations"], "seconds per video": summary["seconds_per_video"]})
    report = {"config": asdict(config), "sampler": asdict(sampler), "checkpoint": str(checkpoint),
              "segmenter": str(segmenter), "data": str(data_root), "rows": rows, "reader": reader}
    write_text_atomically(out / "guided-study.json", json.dumps(report, indent=1) + "\n")
    return report


GOAL = {"EF r": 0.8, "EF MAE": 0.08}  # the issue's goal for a guided method at some t_i <= 30


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
    for name, error in (report["reader"] or {}).items():
        lines.append(f"the EF reader on {name}: r {error['correlation']:.2f}, MAE {error['mae']:.3f}, "
                     f"bias {error['bias']:+.3f} (n {error['n']}; ignoring the video: MAE "
                     f"{error['ignoring_input']['mae']:.3f})")
    return lines
