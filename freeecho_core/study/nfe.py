"""Quality against the number of network evaluations (NFE) per video.

A video costs one network evaluation per Euler or DPM-Solver++(2M) step and two per Heun step but the last
(2N - 1). The study keeps each method's start noise level (sigma(t_i) of the 64-step schedule; Cls-Free: pure
noise) and re-spaces the rest of the range into the steps that a given NFE buys (`steps_for_nfe`), then
generates and scores the same TEST maps with the same seeds at every (solver, NFE): the differences come from
the discretisation alone. All runs integrate the deterministic probability-flow ODE.

Scores per video (SSIM and PSNR against the real clip, Dice LV of the generated ED frame against the input map)
give a mean and its standard error over the maps x samples; FD-seg is pooled over all videos of a setting (no
standard error). `choose_default` applies the issue's rule: the fewest NFE whose Dice LV and SSIM stay within
one standard error of the reference (Heun at 97 NFE: for Free-Echo at t_i = 15, the paper's own 49 steps), once
for Free-Echo at every t_i (`generate`'s default) and once for Cls-Free (Table 1's Cls-Free row).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from freeecho_core.checkpoint import code_version
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.lv import camus_from_five, dice
from freeecho_core.files import write_text_atomically
from freeecho_core.options import at_least, option, start_step
from freeecho_core.sampler import SamplerConfig
from freeecho_core.study.metrics import ssim_psnr, to_unit
from freeecho_core.study.scoring import evaluate, load_judge, load_models
from freeecho_core.study.segmenter import segment
from freeecho_core.study.videos import EvalConfig, load_videos, method_specs, video_path

STUDY_NFE = (97, 49, 25, 13, 7)
STUDY_SOLVERS = ("heun", "euler", "dpmpp2m")
REFERENCE = ("heun", 97)  # the paper's solver; for Free-Echo at t_i = 15 also the paper's 49 steps
SCORED = ("SSIM", "PSNR", "Dice LV")
LV = 1  # CAMUS label of the LV cavity


def steps_for_nfe(solver: str, nfe: int) -> int:
    """Sampler steps that cost `nfe` network evaluations per video: N for Euler and DPM-Solver++(2M), and
    (nfe + 1) / 2 for Heun (2N - 1: its last step is an Euler step)."""
    if solver == "heun":
        if nfe % 2 == 0 or nfe < 3:
            raise ValueError(f"Heun takes 2N - 1 evaluations for N >= 2 steps: an odd NFE >= 3, got {nfe}")
        return (nfe + 1) // 2
    if nfe < 2:
        raise ValueError(f"{solver} needs at least 2 steps, got NFE {nfe}")
    return nfe


def full_grid(solvers=STUDY_SOLVERS, nfes=STUDY_NFE) -> tuple[tuple[str, int], ...]:
    return tuple((solver, nfe) for solver in solvers for nfe in nfes)


@dataclass(frozen=True)
class StudyConfig:
    grid: tuple[tuple[str, int], ...] = full_grid()  # (solver, NFE) settings; must hold the reference
    start_steps: tuple[int, ...] = field(default=(15, 35), metadata=option("Free-Echo's t_i", start_step, many=True))
    methods: tuple[str, ...] = field(default=("free-echo", "clsfree"), metadata=option(
        "the methods (Cls-Free: w = 7, both branches in one batch per NFE)", many=True,
        choices=["free-echo", "clsfree"]))
    samples: int = field(default=2, metadata=option("videos per map", at_least(2)))
    max_maps: int = field(default=8, metadata=option("the first N TEST maps", at_least(1)))
    batch: int = field(default=4, metadata=option("videos per network batch", at_least(1)))
    seed: int = field(default=0, metadata=option("seed of the sample streams", at_least(0)))

    def __post_init__(self):
        if REFERENCE not in self.grid:
            raise ValueError(f"the study needs its reference setting, {REFERENCE[0]} at {REFERENCE[1]} NFE")
        if not self.methods or not set(self.methods) <= {"free-echo", "clsfree"}:
            raise ValueError(f"methods must be among free-echo and clsfree, got {self.methods}")
        for solver, nfe in self.grid:
            steps_for_nfe(solver, nfe)

    def run_order(self) -> list[tuple[str, int]]:
        """The reference first, then the cheapest settings: a run cut short has what decides the default."""
        return [REFERENCE] + sorted((s for s in self.grid if s != REFERENCE), key=lambda s: (s[1], s[0]))

    def eval_config(self, solver: str, nfe: int) -> EvalConfig:
        sampler = SamplerConfig(solver, None, steps_for_nfe(solver, nfe), cap_steps=False)  # equal NFE at every t_i
        return EvalConfig(samples=self.samples, start_steps=self.start_steps, sampler=sampler, batch=self.batch,
                          seed=self.seed, methods=self.methods)


def video_scores(judge, generated: torch.Tensor, real: torch.Tensor, ed_map: np.ndarray) -> list[dict]:
    """SSIM, PSNR and Dice LV of each of n generated videos (n, K, S, S) in [0, 1] against the real clip
    (K, S, S) in [0, 1] and the input ED map (5 labels)."""
    target = camus_from_five(ed_map)
    seg = segment(judge, 2 * generated.numpy() - 1)
    rows = []
    for video, labels in zip(generated, seg):
        ssim, psnr = ssim_psnr(video[None], real)
        rows.append({"SSIM": ssim, "PSNR": psnr, "Dice LV": dice(labels[0], target, LV)})
    return rows


def summarise(values: list[float]) -> dict:
    """Mean and standard error (sample standard deviation / sqrt(n)) of per-video scores."""
    v = np.asarray(values, dtype=np.float64)
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se, "n": len(v)}


def run_study(data_root, unconditional: str | os.PathLike, clsfree: str | os.PathLike | None, segmenter,
              out, config: StudyConfig = StudyConfig(), *, device="cpu", compile: bool = False,
              progress: bool = True, log=print, json_path=None) -> dict:
    """Generate and score every (solver, NFE) setting (resumable: each is a `freeecho evaluate` folder under
    <out>/<solver>-<nfe>/), then write <out>/study.json: one row per (method, solver, NFE) with the steps,
    per-video mean and standard error of each of `SCORED`, FD-seg, and the chosen default (also to `json_path`)."""
    out, device = Path(out), torch.device(device)
    if not segmenter or not Path(segmenter).is_file():
        raise ValueError(f"--segmenter {segmenter}: no such file; the study scores Dice LV with the stored segmenter")
    clsfree = clsfree if "clsfree" in config.methods else None
    if "clsfree" in config.methods and not clsfree:
        raise ValueError("the study of the clsfree method needs the Cls-Free model (--clsfree)")
    models = load_models(unconditional, clsfree, device, compile)
    clip = models["unconditional"].clip
    judge, judge_info = load_judge(segmenter, clip, device)
    data = EchoClips(data_root, "TEST", clip, seed=models["unconditional"].seed)
    clips = [data.clip(i) for i in range(min(len(data), config.max_maps))]
    real = [to_unit(torch.from_numpy(c.video)) for c in clips]
    rows = []
    for solver, nfe in config.run_order():
        eval_config = config.eval_config(solver, nfe)
        folder = out / f"{solver}-{nfe:03d}"
        report = evaluate(data_root, unconditional, clsfree, folder, eval_config, device=device,
                          max_maps=config.max_maps, progress=progress, segmenter=segmenter, models=models)
        for method in method_specs(eval_config, clsfree=bool(clsfree)):
            per_video = [s for c, r in zip(clips, real)
                         for s in video_scores(judge, load_videos(video_path(folder, method, c.case_id, c.view)),
                                               r, c.ed_map)]
            rows.append({"method": method.name, "solver": solver, "nfe": nfe, "steps": eval_config.sampler.steps,
                         **{k: summarise([s[k] for s in per_video]) for k in SCORED},
                         "FD-seg": report["methods"][method.name].get("FD-seg")})
            log(f"{method.name:>14} {solver:>7} {nfe:3d} NFE: " + "  ".join(
                f"{k} {rows[-1][k]['mean']:.3f} ± {rows[-1][k]['se']:.3f}" for k in SCORED))
    fe_methods = [f"free-echo@{t}" for t in config.start_steps] if "free-echo" in config.methods else []
    study = {"config": asdict(config), "reference": {"solver": REFERENCE[0], "nfe": REFERENCE[1]},
             "maps": [f"{c.case_id}_{c.view}" for c in clips], "dataset": str(data_root),
             "checkpoints": {"unconditional": str(unconditional), "clsfree": str(clsfree) if clsfree else None,
                             "segmenter": str(segmenter)}, "segmenter": judge_info, "rows": rows,
             "default": choose_default(rows, fe_methods) if fe_methods else None,
             "clsfree_default": choose_default(rows, ["clsfree"]) if clsfree else None,
             "code_version": code_version()}
    for path in [out / "study.json"] + ([Path(json_path)] if json_path else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(study, indent=1) + "\n")
    return study


def within_reference(row: dict, reference: dict, metrics=("Dice LV", "SSIM")) -> bool:
    """Whether each of `metrics` of a setting lies within one standard error of the reference's mean (both
    ways: a coarse discretisation that blurs a video can raise SSIM, which is no gain)."""
    return all(abs(row[m]["mean"] - reference[m]["mean"]) <= reference[m]["se"] for m in metrics)


def choose_default(rows: list[dict], methods: list[str]) -> dict:
    """The (solver, NFE) with the fewest evaluations that is within one standard error of the reference for
    every method in `methods`; ties go to the order of the rows' solvers. Returns the choice (None when no
    setting qualifies) with, per method, the settings that qualify."""
    by_key = {(r["method"], r["solver"], r["nfe"]): r for r in rows}
    qualifying = {}
    for m in methods:
        reference = by_key[(m, *REFERENCE)]
        qualifying[m] = [(r["solver"], r["nfe"]) for r in rows if r["method"] == m and within_reference(r, reference)]
    settings = list(dict.fromkeys((r["solver"], r["nfe"]) for r in rows))
    common = [s for s in settings if all(s in qualifying[m] for m in methods)]
    best = min(common, key=lambda s: s[1]) if common else None
    return {"solver": best[0] if best else None, "nfe": best[1] if best else None,
            "steps": steps_for_nfe(*best) if best else None, "methods": methods,
            "qualifying": {m: [list(s) for s in q] for m, q in qualifying.items()}}


def study_table_rows(study: dict) -> list[dict]:
    """The rows of the study's table: per (method, solver, NFE) the steps, mean ± standard error of each
    score, FD-seg, and whether Dice LV and SSIM are within one standard error of the method's reference."""
    references = {r["method"]: r for r in study["rows"] if (r["solver"], r["nfe"]) == REFERENCE}
    rows = []
    for r in study["rows"]:
        cells = {k: f"{r[k]['mean']:.3f} ± {r[k]['se']:.3f}" for k in SCORED}
        rows.append({"method": r["method"], "solver": r["solver"], "NFE": r["nfe"], "steps": r["steps"], **cells,
                     "FD-seg": r["FD-seg"], "within 1 s.e.": within_reference(r, references[r["method"]])})
    return sorted(rows, key=lambda r: (r["method"], r["solver"], -r["NFE"]))


def summary_lines(study: dict) -> list[str]:
    """The printed verdicts of a study (`run_study`): per rule (Free-Echo, Cls-Free), the cheapest setting within
    one standard error of the reference, or that none is."""
    lines = []
    for key, who in (("default", "Free-Echo"), ("clsfree_default", "Cls-Free")):
        choice = study.get(key)
        if choice and choice["solver"]:
            lines.append(f"{who}: fewest evaluations within one standard error of {REFERENCE[0]} at {REFERENCE[1]} "
                         f"NFE: {choice['solver']} at {choice['nfe']} NFE ({choice['steps']} steps)")
        elif choice:
            lines.append(f"{who}: no setting but the reference stays within one standard error of {REFERENCE[0]} at "
                         f"{REFERENCE[1]} NFE")
    return lines
