"""Does a generated video keep the ejection fraction its pseudo video beats with? (issue 18)

For each TEST map and each target EF, Free-Echo generates videos from a beating pseudo video
(`motion.beating_maps`, ES timing from the TRAIN clips), and the stored segmenter reads them back: the EF proxy
of the generated video (`anatomy.ef_area_proxy`, area-length, ES the smallest volume) against the target, and
the Dice LV of its ED frame against the input map. Beside it: the still pseudo video of the paper (its EF is
whatever the model invents, compared with the same targets) and the floor, the EF proxy error of the same
segmenter on the real TEST clips against their own annotated ED and ES labels; and the segmenter's reading of
the beating pseudo video itself, before any noise, which separates what the model loses from what the reading
does: the generated video's EF proxy against its own pseudo video's, both read by the same segmenter, is what
the model keeps of the motion. The same seeds serve every target of a map, so the targets differ only in the
motion of the pseudo video.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from freeecho_core.anatomy import camus_from_five, ef_area_proxy
from freeecho_core.checkpoint import code_version, load_checkpoint
from freeecho_core.data.clips import PREPARATION_VERSION, UNLABELLED, unit_from_grey
from freeecho_core.data.dataset import EchoClips
from freeecho_core.evaluate import file_digest, load_judge
from freeecho_core.files import write_text_atomically
from freeecho_core.generate import GenerateConfig, steps_after
from freeecho_core.metrics import dice
from freeecho_core.motion import beating_maps, beating_pseudo_video, es_frame_of_clips
from freeecho_core.progress import progress_bar
from freeecho_core.segmenter import segment
from freeecho_core.synthesis import FreeEcho, SamplerConfig
from freeecho_core.train import clip_config

STUDY_EFS = (0.3, 0.4, 0.5, 0.6, 0.7)
LV = 1  # CAMUS label of the LV cavity


@dataclass(frozen=True)
class EFStudyConfig:
    efs: tuple[float, ...] = STUDY_EFS
    start_steps: tuple[int, ...] = (15, 30, 45)  # t_i: the paper's, and later starts that keep more of the motion
    samples: int = 2  # videos per (map, target)
    max_maps: int = 8  # the first TEST maps
    seed: int = 0


def real_floor(judge, clips) -> list[dict]:
    """Per TEST clip with an annotated ES frame: the EF proxy of its labels (ED and ES) and of the segmenter's
    reading of its video."""
    rows = []
    for clip in clips:
        labelled = [k for k in range(len(clip.frame_labels)) if (clip.frame_labels[k] != UNLABELLED).any()]
        if len(labelled) < 2:
            continue
        truth = ef_area_proxy(np.stack([clip.frame_labels[labelled[0]], clip.frame_labels[labelled[-1]]]))
        read = ef_area_proxy(segment(judge, clip.video))
        rows.append({"clip": f"{clip.case_id}_{clip.view}", "labels_ef": truth, "segmenter_ef": read})
    return rows


def pseudo_video_reads(judge, clips, efs, es_frame: float, histogram) -> list[dict]:
    """Per TEST map and target: the segmenter's EF proxy of the beating pseudo video itself, before any noise
    (what the reading gives when no model is in the way)."""
    rows = []
    for c in clips:
        for ef in efs:
            maps = beating_maps(c.ed_map, len(c.video), es_frame, ef=ef)
            video = beating_pseudo_video(maps, histogram)[0, 0].numpy()
            rows.append({"map": f"{c.case_id}_{c.view}", "target_ef": ef, "pseudo_ef": ef_area_proxy(segment(judge, video))})
    return rows


def agreement(targets, measured) -> dict:
    """Correlation, mean absolute error and bias (measured - target) of paired EFs."""
    t, m = np.asarray(targets, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(m)
    t, m = t[ok], m[ok]
    corr = float(np.corrcoef(t, m)[0, 1]) if len(t) > 2 and t.std() > 0 and m.std() > 0 else float("nan")
    return {"n": int(len(t)), "correlation": corr, "mae": float(np.abs(m - t).mean()),
            "bias": float((m - t).mean())}


def same_study(stored: dict, settings: dict) -> bool:
    """Whether stored rows were made with the same model, data, sampler, seeds and samples per target (the t_i,
    the targets and the number of maps may differ: each row names its own)."""
    def fixed(s):
        config = {k: v for k, v in s.get("config", {}).items() if k not in ("start_steps", "efs", "max_maps")}
        return {**s, "config": config}
    return fixed(stored) == fixed(settings)


def run_ef_study(data_root, checkpoint, segmenter, out_json, config: EFStudyConfig = EFStudyConfig(), *,
                 sampler: SamplerConfig | None = None, device="cpu", progress: bool = True) -> dict:
    """Generate and read back every (t_i, map, target) of `config` and write `out_json`: per-video rows, the
    agreement of the beating videos' EF with the targets per t_i, the still pseudo video's, and the real floor.
    Resumable: rows already in `out_json` for the same settings are kept."""
    out_json = Path(out_json)
    payload = load_checkpoint(checkpoint)
    clip = clip_config(payload.get("train_config", {}))
    seed = payload.get("train_config", {}).get("seed", 0)
    train = EchoClips(data_root, "TRAIN", clip, seed=seed)
    test = EchoClips(data_root, "TEST", clip, seed=seed)
    judge, judge_info = load_judge(segmenter, clip, device)
    histogram = train.intensity_histogram()
    pipe = FreeEcho.from_checkpoint(checkpoint, target=histogram, device=device)
    sampler = sampler or SamplerConfig(GenerateConfig.solver, False, steps=GenerateConfig.sampler_steps)
    es_frame = es_frame_of_clips(train.clip(i) for i in range(len(train)))
    clips = [test.clip(i) for i in range(min(len(test), config.max_maps))]
    # The weights' digest, not only the path: a checkpoint trained further in place makes the study again.
    settings = json.loads(json.dumps({"config": asdict(config), "sampler": asdict(sampler),
                                      "checkpoint": str(checkpoint), "checkpoint_sha256": file_digest(checkpoint),
                                      "data": str(data_root), "es_frame": es_frame,
                                      "clip_preparation": PREPARATION_VERSION}))
    stored = json.loads(out_json.read_text()) if out_json.is_file() else {}
    jobs = [(t_i, index, ef) for t_i in config.start_steps for index in range(len(clips))
            for ef in (None, *config.efs)]
    # Rows of the same study are kept, also when it is extended by more t_i or targets.
    wanted = {(t_i, f"{clips[i].case_id}_{clips[i].view}", ef) for t_i, i, ef in jobs}
    rows = [r for r in stored.get("videos", []) if same_study(stored.get("settings", {}), settings)
            and (r["start_step"], r["map"], r["target_ef"]) in wanted]
    done = {(r["start_step"], r["map"], r["target_ef"]) for r in rows}
    for t_i, index, ef in progress_bar(jobs, disable=not progress, desc="EF study", unit="map x target"):
        c = clips[index]
        key = (t_i, f"{c.case_id}_{c.view}", ef)
        if key in done:
            continue
        steps = steps_after(GenerateConfig(start_step=t_i, sampler_steps=sampler.steps))
        result = pipe(c.ed_map, config.samples, t_i, seed=config.seed + 1000 * index, convention="five",
                      sampler=SamplerConfig(sampler.solver, sampler.stochastic_sampler, sampler.guidance, steps),
                      ef=ef, es_frame=es_frame)
        ed_labels = camus_from_five(c.ed_map)
        for k, video in enumerate(result.square):
            seg = segment(judge, unit_from_grey(video))
            rows.append({"start_step": t_i, "map": key[1], "target_ef": ef, "sample": k,
                         "video_ef": ef_area_proxy(seg), "dice_lv_ed": dice(seg[0], ed_labels, LV),
                         "maps_ef": None if result.label_maps is None else
                         ef_area_proxy(camus_from_five(result.label_maps))})
        write_text_atomically(out_json, json.dumps({"settings": settings, "videos": rows}, indent=1) + "\n")
    floor = real_floor(judge, clips)
    pseudo = pseudo_video_reads(judge, clips, config.efs, es_frame, histogram)
    pseudo_ef = {(r["map"], r["target_ef"]): r["pseudo_ef"] for r in pseudo}
    summary = {}
    for t_i in config.start_steps:
        beating = [r for r in rows if r["start_step"] == t_i and r["target_ef"] is not None]
        still = [r["video_ef"] for r in rows if r["start_step"] == t_i and r["target_ef"] is None]
        summary[str(t_i)] = {
            "beating": agreement([r["target_ef"] for r in beating], [r["video_ef"] for r in beating]),
            # The same reader on the video and on its own pseudo video: how much of the motion the model keeps.
            "beating_vs_pseudo_video": agreement([pseudo_ef[(r["map"], r["target_ef"])] for r in beating],
                                                 [r["video_ef"] for r in beating]),
            "still_ef_mean": float(np.nanmean(still)), "still_ef_sd": float(np.nanstd(still)),
            # The still video does not know the target: its correlation with the targets is 0 by construction.
            "still": {k: v for k, v in agreement([ef for ef in config.efs for _ in still],
                                                 [v for _ in config.efs for v in still]).items()
                      if k != "correlation"},
            "dice_lv_ed_beating": float(np.nanmean([r["dice_lv_ed"] for r in beating])),
            "dice_lv_ed_still": float(np.nanmean([r["dice_lv_ed"] for r in rows
                                                  if r["start_step"] == t_i and r["target_ef"] is None])),
            "per_target": {str(ef): float(np.nanmean([r["video_ef"] for r in beating if r["target_ef"] == ef]))
                           for ef in config.efs}}
    report = {"settings": settings, "videos": rows, "summary": summary, "segmenter": judge_info,
              "real_floor": {"clips": floor, **agreement([f["labels_ef"] for f in floor],
                                                         [f["segmenter_ef"] for f in floor])},
              "pseudo_video": {"rows": pseudo, **agreement([r["target_ef"] for r in pseudo],
                                                          [r["pseudo_ef"] for r in pseudo])},
              "code_version": code_version()}
    write_text_atomically(out_json, json.dumps(report, indent=1) + "\n")
    return report
