"""Does a generated video keep the ejection fraction its pseudo video beats with?

For each TEST map and each target EF, Free-Echo generates videos from a beating pseudo video
(`motion.beating_maps`, ES timing from the TRAIN clips), and the stored segmenter reads them back: the EF proxy
of the generated video (`data.lv.ef_area_proxy`, area-length, ES the smallest volume) against the target, and
the Dice LV of its ED frame against the input map. Beside it: the still pseudo video of the paper (its EF is
whatever the model invents, compared with the same targets) and the floor, the EF proxy error of the same
segmenter on the recorded VAL and TEST clips (held out from the models and the judge) against their own annotated
ED and ES labels; and the segmenter's reading of
the beating pseudo video itself, before any noise, which separates what the model loses from what the reading
does: the generated video's EF proxy against its own pseudo video's, both read by the same segmenter, is what
the model keeps of the motion. The same seeds serve every target of a map, so the targets differ only in the
motion of the pseudo video.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from freeecho_core.checkpoint import code_version, load_model
from freeecho_core.data.clips import PREPARATION_VERSION, UNLABELLED, ClipConfig, unit_from_grey
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.lv import camus_from_five, dice, ef_area_proxy
from freeecho_core.files import read_json, write_text_atomically
from freeecho_core.guidance import Guide
from freeecho_core.motion import EF_RANGE, beating_maps, beating_pseudo_video, es_frame_of_clips
from freeecho_core.options import at_least, finite_number, option, start_step
from freeecho_core.progress import progress_bar
from freeecho_core.sampler import DEFAULT_SAMPLER, SamplerConfig
from freeecho_core.study.scoring import load_judge
from freeecho_core.study.segmenter import load_segmenter, segment
from freeecho_core.study.videos import file_digest
from freeecho_core.synthesis import FreeEcho

STUDY_EFS = (0.3, 0.4, 0.5, 0.6, 0.7)
# The EF reader's largest acceptable error on beating pseudo videos of known EF (no model in the way): a reader
# this close can judge how well a generator keeps its pseudo video's beat.
PSEUDO_VIDEO_READER_GOAL = 0.05
LV = 1  # CAMUS label of the LV cavity


@dataclass(frozen=True)
class EFStudyConfig:
    efs: tuple[float, ...] = field(default=STUDY_EFS, metadata=option(
        "the target EFs", finite_number, many=True))
    start_steps: tuple[int, ...] = field(default=(15, 30, 45), metadata=option(
        "t_i: the paper's, and later starts that keep more of the motion", start_step, many=True))
    samples: int = field(default=2, metadata=option("videos per (map, target)", at_least(1)))
    max_maps: int = field(default=8, metadata=option("the first N maps of the split", at_least(1)))
    seed: int = field(default=0, metadata=option("seed of the first map's videos (map i: seed + 1000 i)",
                                                 at_least(0)))
    # A calibration of the prescription, measured on other maps: the beat each video is given is
    # ef_offset + ef_scale x target (within EF_RANGE), so that a model whose videos contract less than prescribed
    # can be told to contract them more. Every score compares the videos with the target, never the prescription.
    ef_offset: float = field(default=0.0, metadata=option(
        "the calibration's offset: the beat prescribed is offset + scale x target (from VAL maps; scores use the "
        "target)", finite_number))
    ef_scale: float = field(default=1.0, metadata=option("the calibration's scale (see --ef-offset)", finite_number))
    split: str = field(default="TEST", metadata=option(
        "the maps' split (VAL: to calibrate --ef-offset without touching the TEST maps)", choices=("VAL", "TEST")))


def labels_ef(clip) -> float | None:
    """The EF proxy of a clip's labels (every annotated frame: all of a phantom clip's, ED and ES of a CAMUS one);
    None without an annotated frame after ED."""
    labelled = [k for k in range(len(clip.frame_labels)) if (clip.frame_labels[k] != UNLABELLED).any()]
    return None if len(labelled) < 2 or labelled[0] != 0 else ef_area_proxy(clip.frame_labels[labelled])


def real_floor(judge, clips) -> list[dict]:
    """Per recorded clip with an annotated frame after ED: the EF proxy of its labels (`labels_ef`) and of the
    segmenter's reading of its video."""
    return [{"clip": f"{clip.case_id}_{clip.view}", "labels_ef": truth, "segmenter_ef": ef_area_proxy(segment(judge, clip.video))}
            for clip in clips if (truth := labels_ef(clip)) is not None]


def constant_reading(truths, value: float) -> dict:
    """What a reader that ignores its input scores: `value` (e.g. the TRAIN clips' mean EF) for every video,
    against the true EFs (mean absolute error and bias; its correlation is undefined)."""
    return {"value": float(value)} | {k: v for k, v in agreement(truths, [value] * len(truths)).items()
                                      if k != "correlation"}


def pseudo_video_reads(judge, clips, efs, es_frame: float, histogram) -> list[dict]:
    """Per TEST map and target: the EF proxy of the beating label maps (exact) and the segmenter's reading of the
    beating pseudo video made from them, before any noise (what the reading gives when no model is in the way)."""
    rows = []
    for c in clips:
        for ef in efs:
            maps = beating_maps(c.ed_map, len(c.video), es_frame, ef=ef)
            video = beating_pseudo_video(maps, histogram)[0, 0].numpy()
            rows.append({"map": f"{c.case_id}_{c.view}", "target_ef": ef,
                         "maps_ef": ef_area_proxy(camus_from_five(maps)), "pseudo_ef": ef_area_proxy(segment(judge, video))})
    return rows


def reader_error(judge, train: EchoClips, val: EchoClips, test: EchoClips, maps, efs, es_frame: float,
                 histogram) -> dict:
    """The EF reader's own error, with no model in the way: `real_floor`, its reading of the recorded VAL and
    TEST clips against their labels, and `pseudo_video`, its reading of the beating pseudo videos of `maps` (TEST
    clips) at targets `efs` against the exact EF proxy of their label maps; each beside what a reader that
    ignores its input scores (the TRAIN clips' mean EF; the mean target)."""
    floor = real_floor(judge, [split.clip(i) for split in (val, test) for i in range(len(split))])
    train_ef = float(np.nanmean([ef for i in range(len(train)) if (ef := labels_ef(train.clip(i))) is not None]))
    pseudo = pseudo_video_reads(judge, maps, efs, es_frame, histogram)
    return {"real_floor": {"clips": floor, **agreement([f["labels_ef"] for f in floor],
                                                       [f["segmenter_ef"] for f in floor]),
                           "ignoring_input": constant_reading([f["labels_ef"] for f in floor], train_ef)},
            "pseudo_video": {"rows": pseudo, **agreement([r["maps_ef"] for r in pseudo],
                                                        [r["pseudo_ef"] for r in pseudo]),
                             "ignoring_input": constant_reading([r["maps_ef"] for r in pseudo],
                                                                float(np.mean(efs)))}}


def check_reader(data_root, segmenter, efs=STUDY_EFS, max_maps: int = 8, seed: int = 0, device="cpu") -> dict:
    """`reader_error` of a segmenter on a dataset, at the clips it judges (its own frames and size), no model
    needed: the error that every EF figure read with it carries. `seed`: the split seed of the models it judges
    (their training seed; 0 for the stored ones)."""
    config = load_segmenter(segmenter)[1]["config"]
    clip = ClipConfig(frames=config["frames"], size=config["size"])
    judge, judge_info = load_judge(segmenter, clip, device)
    train, val, test = (EchoClips(data_root, split, clip, seed=seed) for split in ("TRAIN", "VAL", "TEST"))
    es_frame = es_frame_of_clips(train.clip(i) for i in range(len(train)))
    maps = [test.clip(i) for i in range(min(len(test), max_maps))]
    reader = reader_error(judge, train, val, test, maps, efs, es_frame, train.intensity_histogram())
    return {"data": str(data_root), "segmenter": judge_info, "efs": list(efs), "es_frame": es_frame, **reader}


def reader_lines(reader: dict) -> list[str]:
    """The printed reader error (`reader_error`): the beating pseudo videos, then the recorded clips."""
    pseudo, floor = reader["pseudo_video"], reader["real_floor"]
    return [f"the beating pseudo video itself: r {pseudo['correlation']:.2f}, MAE {pseudo['mae']:.3f}, bias "
            f"{pseudo['bias']:+.3f} ({pseudo['n']} videos; a reader that ignores the video: MAE "
            f"{pseudo['ignoring_input']['mae']:.3f})",
            f"recorded VAL and TEST clips, segmenter vs labels: r {floor['correlation']:.2f}, MAE {floor['mae']:.3f}, "
            f"bias {floor['bias']:+.3f} ({floor['n']} clips; a reader that answers the TRAIN clips' mean EF "
            f"{floor['ignoring_input']['value']:.2f}: MAE {floor['ignoring_input']['mae']:.3f})"]


def agreement(targets, measured) -> dict:
    """Correlation, mean absolute error and bias (measured - target) of paired EFs."""
    t, m = np.asarray(targets, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(m)
    t, m = t[ok], m[ok]
    corr = float(np.corrcoef(t, m)[0, 1]) if len(t) > 2 and t.std() > 0 and m.std() > 0 else float("nan")
    return {"n": int(len(t)), "correlation": corr, "mae": float(np.abs(m - t).mean()),
            "bias": float((m - t).mean())}


def prescribed_ef(target: float, offset: float = 0.0, scale: float = 1.0) -> float:
    """The EF a beating pseudo video is given for a target: offset + scale x target (a calibration), within the
    range the contraction is solved for (`motion.EF_RANGE`)."""
    return float(np.clip(offset + scale * target, *EF_RANGE))


def same_study(stored: dict, settings: dict) -> bool:
    """Whether stored rows were made with the same model, data, sampler, seeds and samples per target (the t_i,
    the targets and the number of maps may differ: each row names its own)."""
    def fixed(s):
        config = {k: v for k, v in s.get("config", {}).items() if k not in ("start_steps", "efs", "max_maps")}
        return {**s, "config": config}
    return fixed(stored) == fixed(settings)


def run_ef_study(data_root, checkpoint, segmenter, out_json, config: EFStudyConfig = EFStudyConfig(), *,
                 sampler: SamplerConfig | None = None, guide: Guide | None = None, device="cpu",
                 progress: bool = True) -> dict:
    """Generate and read back every (t_i, map, target) of `config` and write `out_json`: per-video rows, the
    agreement of the beating videos' EF with the targets per t_i, the still pseudo video's, and the reader's own
    error (`reader_error`). `guide`: the guided Free-Echo (`guidance`) instead of the paper's. Resumable: rows
    already in `out_json` for the same settings are kept."""
    out_json = Path(out_json)
    model = load_model(checkpoint, device, "unconditional")
    train = EchoClips(data_root, "TRAIN", model.clip, seed=model.seed)
    val, test = (EchoClips(data_root, split, model.clip, seed=model.seed) for split in ("VAL", "TEST"))
    judge, judge_info = load_judge(segmenter, model.clip, device)
    pipe = FreeEcho.from_model(model, data=data_root)
    histogram = pipe.target
    sampler = sampler or DEFAULT_SAMPLER
    es_frame = es_frame_of_clips(train.clip(i) for i in range(len(train)))
    maps = test if config.split == "TEST" else val
    clips = [maps.clip(i) for i in range(min(len(maps), config.max_maps))]
    # The weights' digest, not only the path: a checkpoint trained further in place makes the study again.
    settings = json.loads(json.dumps({"config": asdict(config), "sampler": asdict(sampler),
                                      "guide": None if guide is None else asdict(guide),
                                      "checkpoint": str(checkpoint), "checkpoint_sha256": file_digest(checkpoint),
                                      "data": str(data_root), "es_frame": es_frame,
                                      "clip_preparation": PREPARATION_VERSION}))
    stored = read_json(out_json, "EF study") if out_json.is_file() else {}
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
        started = time.perf_counter()
        prescribed = None if ef is None else prescribed_ef(ef, config.ef_offset, config.ef_scale)
        result = pipe(c.ed_map, config.samples, t_i, seed=config.seed + 1000 * index, convention="five",
                      sampler=sampler, ef=prescribed, es_frame=es_frame, guide=guide)
        seconds = (time.perf_counter() - started) / config.samples
        ed_labels = camus_from_five(c.ed_map)
        for k, video in enumerate(result.square):
            seg = segment(judge, unit_from_grey(video))
            rows.append({"start_step": t_i, "map": key[1], "target_ef": ef, "prescribed_ef": prescribed,
                         "sample": k, "seconds": seconds,
                         "video_ef": ef_area_proxy(seg), "dice_lv_ed": dice(seg[0], ed_labels, LV),
                         "maps_ef": None if result.label_maps is None else
                         ef_area_proxy(camus_from_five(result.label_maps))})
        write_text_atomically(out_json, json.dumps({"settings": settings, "videos": rows}, indent=1) + "\n")
    reader = reader_error(judge, train, val, test, clips, config.efs, es_frame, histogram)
    pseudo_ef = {(r["map"], r["target_ef"]): r["pseudo_ef"] for r in reader["pseudo_video"]["rows"]}
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
                           for ef in config.efs},
            "network_evaluations": sampler.network_evaluations(t_i) + (guide.extra_evaluations() if guide else 0),
            "seconds_per_video": float(np.mean([r["seconds"] for r in rows if r["start_step"] == t_i and "seconds" in r]
                                               or [np.nan]))}
    report = {"settings": settings, "videos": rows, "summary": summary, "segmenter": judge_info, **reader,
              "code_version": code_version()}
    write_text_atomically(out_json, json.dumps(report, indent=1) + "\n")
    return report


def summary_lines(report: dict) -> list[str]:
    """The printed summary of an EF study (`run_ef_study`): per t_i the beating videos' EF proxy against the
    targets and against their own pseudo videos', the still videos', Dice LV at ED; then the reader's own floors."""
    lines = []
    for t_i, row in report["summary"].items():
        b, kept = row["beating"], row["beating_vs_pseudo_video"]
        lines.append(f"t_i = {t_i}: beating EF proxy vs target: r {b['correlation']:.2f}, MAE {b['mae']:.3f}, bias "
                     f"{b['bias']:+.3f}; vs its pseudo video's: r {kept['correlation']:.2f}, MAE {kept['mae']:.3f}; "
                     f"still: MAE {row['still']['mae']:.3f} (its EF {row['still_ef_mean']:.2f}); "
                     f"Dice LV at ED {row['dice_lv_ed_beating']:.3f} (still {row['dice_lv_ed_still']:.3f})")
    return lines + reader_lines(report)


SUMMARY_COLUMNS = ("t_i", "pseudo video", "correlation", "MAE", "bias", "Dice LV at ED", "r with its pseudo video",
                   "MAE to its pseudo video")


def summary_rows(report: dict) -> list[dict]:
    """The study's table (`SUMMARY_COLUMNS`): per t_i the beating and the still videos' EF proxy against the
    targets, then the floors of the reader: the beating pseudo video read before any noise, the recorded VAL and
    TEST clips, and what a reader that ignores its input scores on each."""
    rows = []
    for t_i, s in report["summary"].items():
        kept = s["beating_vs_pseudo_video"]
        rows.append({"t_i": int(t_i), "pseudo video": "beating", "correlation": s["beating"]["correlation"],
                     "MAE": s["beating"]["mae"], "bias": s["beating"]["bias"], "Dice LV at ED": s["dice_lv_ed_beating"],
                     "r with its pseudo video": kept["correlation"], "MAE to its pseudo video": kept["mae"]})
        rows.append({"t_i": int(t_i), "pseudo video": f"still (its EF {s['still_ef_mean']:.2f})",
                     "correlation": None, "MAE": s["still"]["mae"], "bias": s["still"]["bias"],
                     "Dice LV at ED": s["dice_lv_ed_still"]})
    pseudo, floor = report["pseudo_video"], report["real_floor"]
    rows.append({"t_i": "-", "pseudo video": "beating, read before any noise (no model)",
                 "correlation": pseudo["correlation"], "MAE": pseudo["mae"], "bias": pseudo["bias"],
                 "Dice LV at ED": None})
    rows.append({"t_i": "-", "pseudo video": "recorded VAL and TEST clips (the floor)",
                 "correlation": floor["correlation"], "MAE": floor["mae"], "bias": floor["bias"], "Dice LV at ED": None})
    for name, reads in (("beating pseudo videos", pseudo), ("recorded VAL and TEST clips", floor)):
        if "ignoring_input" in reads:  # a study stored before this floor was recorded has none
            ignoring = reads["ignoring_input"]
            rows.append({"t_i": "-", "pseudo video": f"{name}, read as {ignoring['value']:.2f} whatever they show",
                         "correlation": None, "MAE": ignoring["mae"], "bias": ignoring["bias"], "Dice LV at ED": None})
    return rows


def per_target_rows(report: dict) -> list[dict]:
    """The mean EF proxy per target ("target <ef>" columns) of the beating label maps, of the beating pseudo
    video read by the segmenter, and of the videos at each t_i."""
    targets = report["settings"]["config"]["efs"]
    def mean(rows, key, ef):
        return float(np.mean([r[key] for r in rows if r["target_ef"] == ef]))
    rows = [{"EF proxy of": "the beating label maps",
             **{f"target {ef}": mean(report["videos"], "maps_ef", ef) for ef in targets}},
            {"EF proxy of": "the beating pseudo video, read by the segmenter",
             **{f"target {ef}": mean(report["pseudo_video"]["rows"], "pseudo_ef", ef) for ef in targets}}]
    return rows + [{"EF proxy of": f"the videos, tᵢ = {t_i}", **{f"target {ef}": s["per_target"][str(ef)]
                                                                  for ef in targets}}
                   for t_i, s in report["summary"].items()]
