"""Are the synthetic videos useful? Segmenters trained with and without them (beyond the paper).

The paper proposes Free-Echo for data augmentation and leaves it untested. Here the study's segmenter
(`segmenter.SegUNet`, the judge's architecture and settings) learns from k labelled TRAIN clips (`real`), from the
same k plus the synthetic videos of one method made from the other TRAIN maps (`real + <method>`), and from the
synthetic videos alone (`<method> only`), for several training seeds (each draws its own k clips and initial
weights), and is tested on the annotated frames of the TEST split: Dice per structure and the error of the
area-length EF proxy against the labels'. A synthetic video of Free-Echo, Cls-Free or SDEdit is labelled by its
map on its first (ED) frame only: their motion is the model's own (the guided-sampling study), so no later frame
has a known label. Free-Echo with ILVR (`guidance`) follows a beating pseudo video, here the beat of its own TRAIN
clip (the ED map moving towards the clip's ES map, `motion.beating_maps`), and the guided-sampling study measures
that its frames keep their maps (Dice LV at ED, EF read back), so every one of its frames is labelled by its map.

Leakage is guarded twice: synthetic videos come from TRAIN maps only, and each one's ED frame is compared with
every TRAIN clip's (SSIM, and the distance of the judge's bottleneck features): a video closer to a TRAIN clip
than any TEST clip (a real other heart) comes to its nearest TRAIN clip counts as memorised.

Everything is stored under the study's folder (the videos by `videos.generate_all`, one JSON per trained
segmenter), so an interrupted study resumes; the report goes to <out>/augment-study.json.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from freeecho_core.data.case import to_five_labels
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.lv import camus_from_five, dice, ef_area_proxy
from freeecho_core.files import read_json, write_text_atomically
from freeecho_core.guidance import Guide
from freeecho_core.motion import EF_RANGE, beating_maps, es_frame_of_clips, volume_fraction
from freeecho_core.options import at_least, option, start_step
from freeecho_core.options import start_step as a_start_step  # the field `start_step` hides the name below
from freeecho_core.progress import progress_bar
from freeecho_core.sampler import DEFAULT_SAMPLER, SamplerConfig
from freeecho_core.study.ef import labels_ef
from freeecho_core.study.scoring import load_models
from freeecho_core.study.segmenter import (SegConfig, fit_segmenter, labelled_frames, load_segmenter, segment,
                                           transfer_report)
from freeecho_core.study.significance import paired_bootstrap, verdict_cell
from freeecho_core.study.videos import (EvalConfig, claim_video_folder, data_key, file_digest, generate_all,
                                        load_videos, method_specs, video_key, video_path)

AUGMENT_METHODS = ("free-echo", "free-echo-ilvr", "clsfree", "sdedit")  # the sources of synthetic videos
BEATING = "free-echo-ilvr"  # the source whose videos beat like their TRAIN clip, every frame labelled
FREE_ECHO = ("free-echo", BEATING)  # the rows compared with every other source's addition
GUIDE_SETTINGS = ("guided_step", "guide_factor", "guide_until")  # the config fields that only its videos depend on
BEAT = "the ED map towards the clip's own ES map (`own_beat`)"  # the beat recorded in its videos' key
STRUCTURES = {1: "Dice LV", 2: "Dice myo", 3: "Dice LA"}  # CAMUS label -> column


@dataclass(frozen=True)
class AugmentStudyConfig:
    ks: tuple[int, ...] = field(default=(4, 8, 16, 0), metadata=option(
        "labelled TRAIN clips per segmenter (0: all of them)", at_least(0), many=True))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=option(
        "training seeds: each draws its own k clips and initial weights", at_least(0), many=True))
    methods: tuple[str, ...] = field(default=AUGMENT_METHODS, metadata=option(
        "the methods whose synthetic videos are added", many=True, choices=AUGMENT_METHODS))
    start_step: int = field(default=30, metadata=option(
        "t_i of Free-Echo and SDEdit (the t_i sweep's best SSIM on the stored study)", start_step))
    synthetic_maps: int = field(default=32, metadata=option(
        "the first N TRAIN maps that synthetic videos are made from", at_least(1)))
    samples: int = field(default=2, metadata=option("synthetic videos per map and method", at_least(1)))
    guided_step: int = field(default=15, metadata=option(
        "t_i of Free-Echo with ILVR (the guided-sampling study's)", a_start_step))
    guide_factor: int = field(default=4, metadata=option("ILVR's block size (see generate --guide-factor)",
                                                         at_least(1)))
    guide_until: int = field(default=55, metadata=option("the step ILVR stops at (see generate --guide-until)",
                                                         at_least(1)))
    segmenter_steps: int = field(default=1500, metadata=option("optimizer steps of every segmenter", at_least(1)))
    video_seed: int = field(default=0, metadata=option("seed of the synthetic videos' sample streams", at_least(0)))

    def __post_init__(self):
        for name in ("ks", "seeds", "methods"):
            if not getattr(self, name):
                raise ValueError(f"{name} must hold at least one value")


def synthetic_methods(config: AugmentStudyConfig):
    """The `videos.Method` of every source of synthetic videos, SDEdit and Free-Echo from `config.start_step`,
    Free-Echo with ILVR from `config.guided_step`."""
    return {m.kind: m for m in method_specs(eval_settings(config))}


def eval_settings(config: AugmentStudyConfig, **settings) -> EvalConfig:
    """The video settings of the study's methods (`videos.EvalConfig`)."""
    return EvalConfig(methods=config.methods, start_steps=(config.start_step,), sdedit_step=config.start_step,
                      guided_step=config.guided_step, guide=Guide(factor=config.guide_factor,
                                                                  until=config.guide_until), **settings)


def own_beat(train: EchoClips):
    """The label maps of TRAIN clip i beating like the clip: from its ED map towards its own ES map (the annotated
    frame with the smallest LV, `EchoClips.annotated_frames`), ES at the split's ED-to-ES timing
    (`motion.es_frame_of_clips`), or at the last frame where every clip ends before its ES (EchoNet-Dynamic's
    tracings in a short clip): the labels are the maps imposed, so they fit the video either way. A clip whose ES
    map gives an EF outside `motion.EF_RANGE` contracts to the nearest EF of the range instead. Each clip's maps
    are made once (the videos and the segmenters' frames ask for them)."""
    try:
        es_frame = es_frame_of_clips(train.clip(i) for i in range(len(train)))
    except ValueError:  # no ES inside any clip
        es_frame = float(train.config.frames - 1)

    @functools.cache
    def beat(i: int) -> np.ndarray:
        clip = train.clip(i)
        _, labels = train.annotated_frames(i)
        es_map = to_five_labels(labels[np.argmin((labels == 1).sum(axis=(1, 2)))], clip.sector)
        ef = 1 - volume_fraction(clip.ed_map, es_map)
        if EF_RANGE[0] <= ef <= EF_RANGE[1]:
            return beating_maps(clip.ed_map, len(clip.video), es_frame, es_map=es_map)
        return beating_maps(clip.ed_map, len(clip.video), es_frame, ef=float(np.clip(ef, *EF_RANGE)))

    return beat


def make_synthetic_videos(train: EchoClips, models: dict, out: Path, config: AugmentStudyConfig,
                          sampler: SamplerConfig, clsfree_sampler: SamplerConfig | None, digests: dict, device,
                          progress: bool, beat=None) -> dict:
    """Generate (resumably) `config.samples` videos per method for the first `config.synthetic_maps` TRAIN maps
    (the beating method's from `beat`, `own_beat`); return the CPU seconds per video of each method, measured when
    its videos were made (stored beside them)."""
    eval_config = eval_settings(config, samples=config.samples, batch=config.samples, sampler=sampler,
                                clsfree_sampler=clsfree_sampler, seed=config.video_seed)
    denoisers = {role: m.denoiser for role, m in models.items()}
    cost = {}
    for kind, method in synthetic_methods(config).items():
        key = video_key(method, eval_config, digests, data_key(train))
        if kind == BEATING:
            key["beat"] = BEAT
        claim_video_folder(out, method, key)
        cost_path = out / "videos" / method.name / "cost.json"
        started = time.process_time()
        made = generate_all(train, denoisers, out, eval_config, device, [method], max_maps=config.synthetic_maps,
                            progress=progress, beats=beat if kind == BEATING else None)
        if made:
            seconds = (time.process_time() - started) / (made * config.samples)
            write_text_atomically(cost_path, json.dumps({"cpu_seconds_per_video": seconds}) + "\n")
        stored = read_json(cost_path, "cost of the videos") if cost_path.is_file() else {}
        cost[kind] = stored.get("cpu_seconds_per_video")
    return cost


def synthetic_frames(train: EchoClips, out: Path, method, maps: list[int], beat=None) -> tuple[np.ndarray, ...]:
    """The labelled frames of a method's synthetic videos of TRAIN clips `maps`: (N, S, S) grey in [-1, 1], their
    (N, S, S) CAMUS labels, the (N,) clip index of each frame and whether it is its video's ED frame. A video
    gives its ED frame with its clip's map, or, for the beating method (`BEATING`), every frame with its label
    map (`beat`, `own_beat`)."""
    if method.kind == BEATING and beat is None:
        beat = own_beat(train)
    frames, labels, owners, first = [], [], [], []
    for i in maps:
        clip = train.clip(i)
        videos = load_videos(video_path(out, method, clip.case_id, clip.view)).numpy()
        maps_of_frames = beat(i) if method.kind == BEATING else clip.ed_map[None]
        frames.append(videos[:, : len(maps_of_frames)].reshape(-1, *videos.shape[2:]) * 2 - 1)
        labels.append(np.tile(camus_from_five(maps_of_frames).astype(np.int64), (len(videos), 1, 1)))
        owners.append(np.full(len(videos) * len(maps_of_frames), i))
        first.append(np.tile(np.arange(len(maps_of_frames)) == 0, len(videos)))
    return (np.concatenate(frames).astype(np.float32), np.concatenate(labels), np.concatenate(owners),
            np.concatenate(first))


def test_scores(net, test: EchoClips) -> dict[str, dict]:
    """Per TEST recording: Dice per structure on its annotated frames (mean over them) and the error of the
    area-length EF proxy of the segmenter's reading of the whole clip against that of the labels."""
    scores = {}
    for i in range(len(test)):
        clip = test.clip(i)
        keep = (clip.frame_labels >= 0).all(axis=(1, 2))
        if not keep.any():
            continue
        pred = segment(net, clip.video)
        row = {name: float(np.mean([dice(p, t, k) for p, t in zip(pred[keep], clip.frame_labels[keep])]))
               for k, name in STRUCTURES.items() if (clip.frame_labels[keep] == k).any()}
        truth = labels_ef(clip)
        if truth is not None:
            row["EF error"] = abs(ef_area_proxy(pred) - truth)
        scores[f"{clip.case_id}_{clip.view}"] = row
    return scores


def labelled_clips(n_train: int, k: int, seed: int) -> list[int]:
    """The k labelled TRAIN clips of a training seed (0: all), nested: seed s's first 4 are among its first 8."""
    if k > n_train:
        raise ValueError(f"--ks {k}: the TRAIN split holds only {n_train} clips")
    order = np.random.default_rng([seed, 39]).permutation(n_train)
    return sorted(order[: k or n_train].tolist())


def conditions(config: AugmentStudyConfig) -> list[tuple[int, int, str]]:
    """(k, seed, condition) of every segmenter: per k and seed `real` and `real + <method>`, per seed
    `<method> only` (k = None: no real clip)."""
    cells = [(k, s, c) for k in config.ks for s in config.seeds
             for c in ("real", *(f"real + {m}" for m in config.methods))]
    return cells + [(None, s, f"{m} only") for s in config.seeds for m in config.methods]


def condition_method(condition: str) -> str | None:
    """The method whose synthetic videos a condition trains on: None for `real`, X for `real + X` and `X only`."""
    if condition == "real":
        return None
    return condition.removeprefix("real + ").removesuffix(" only")


def condition_settings(settings: dict, kind: str | None) -> dict:
    """What one segmenter's result depends on: the study's settings without its list of methods, and without the
    settings of the guided method's videos (`GUIDE_SETTINGS`) unless it trains on them."""
    config = {name: value for name, value in settings["config"].items()
              if name != "methods" and (kind == BEATING or name not in GUIDE_SETTINGS)}
    return settings | {"config": config}


def train_and_test(seg_config: SegConfig, frames, labels, test: EchoClips, real_root, device) -> dict:
    net = fit_segmenter(seg_config, frames, labels, device=device, progress=False)
    result = {"train_frames": int(len(frames)), "test": test_scores(net, test)}
    if real_root:
        report = transfer_report(net, real_root, test.config)
        result["real"] = {k: report[k] for k in ("frames", "dice_lv_median", "dice_lv_mean", "per_recording")}
    return result


def nearest_train(queries: np.ndarray, train: np.ndarray, judge, batch: int = 512) -> dict:
    """For each query ED frame ((Q, S, S) in [-1, 1]): its highest SSIM against the TRAIN ED frames and its
    smallest distance to them in the judge's bottleneck feature space. The SSIM pairs are formed `batch` at a
    time, so memory does not grow with Q x TRAIN."""
    q, r = torch.from_numpy((queries + 1) / 2).double(), torch.from_numpy((train + 1) / 2).double()
    best = torch.full((len(q),), -torch.inf, dtype=torch.float64)
    pairs = torch.cartesian_prod(torch.arange(len(q)), torch.arange(len(r)))
    for chunk in pairs.split(batch):
        ssim = structural_similarity_index_measure(q[chunk[:, 0], None], r[chunk[:, 1], None], data_range=1.0,
                                                   reduction="none")
        best.scatter_reduce_(0, chunk[:, 0], ssim, reduce="amax")
    fq, fr = (judge.features(torch.from_numpy(x)[:, None].float()) for x in (queries, train))
    return {"ssim": best.numpy(), "distance": torch.cdist(fq, fr).min(1).values.numpy()}


def memorisation(train: EchoClips, test: EchoClips, synthetic: dict[str, np.ndarray], judge) -> dict:
    """The memorisation rate of each method's synthetic videos: the share whose ED frame is more like a TRAIN
    clip's than any TEST clip's ever is (SSIM above the TEST clips' highest nearest-TRAIN SSIM, or a feature
    distance below their smallest)."""
    train_ed = np.stack([train.clip(i).video[0] for i in range(len(train))])
    test_ed = np.stack([test.clip(i).video[0] for i in range(len(test))])
    real = nearest_train(test_ed, train_ed, judge)
    thresholds = {"ssim": float(real["ssim"].max()), "distance": float(real["distance"].min())}
    rates = {}
    for name, frames in synthetic.items():
        near = nearest_train(frames, train_ed, judge)
        close = (near["ssim"] > thresholds["ssim"]) | (near["distance"] < thresholds["distance"])
        rates[name] = {"videos": int(len(frames)), "memorised": int(close.sum()), "rate": float(close.mean()),
                       "nearest_ssim_median": float(np.median(near["ssim"])),
                       "nearest_distance_median": float(np.median(near["distance"]))}
    return {"thresholds (TEST clips against TRAIN)": thresholds | {
        "nearest_ssim_median": float(np.median(real["ssim"])),
        "nearest_distance_median": float(np.median(real["distance"]))}, "methods": rates}


def label_agreement(judge, test: EchoClips, synthetic: dict[str, tuple]) -> dict:
    """How well each method's labels fit its synthetic frames: the judge's Dice LV on them against the labels the
    segmenters are trained with (mean over every labelled frame, and over the ED frames alone), beside the judge's
    Dice LV on the annotated TEST frames, what it reaches where the labels are right."""
    def dice_lv(frames, labels):
        return float(np.mean([dice(p, t, 1) for p, t in zip(segment(judge, frames), labels)]))

    real = [score["Dice LV"] for score in test_scores(judge, test).values() if "Dice LV" in score]
    return {"judge on TEST frames": float(np.mean(real)),
            "methods": {kind: {"frames": int(len(frames)), "Dice LV": dice_lv(frames, labels),
                               "Dice LV on ED frames": dice_lv(frames[first], labels[first])}
                        for kind, (frames, labels, _, first) in synthetic.items()}}


def run_augment_study(data_root, unconditional, clsfree, segmenter, out, config: AugmentStudyConfig,
                      seg_config: SegConfig, *, sampler: SamplerConfig | None = None,
                      clsfree_sampler: SamplerConfig | None = None, real_root=None, device="cpu",
                      progress: bool = True, json_path=None) -> dict:
    """Make the synthetic videos, train and test every segmenter of `conditions` (each stored in
    <out>/segmenters/), check memorisation with the judge `segmenter`, and write <out>/augment-study.json (and
    `json_path`). `seg_config`: the segmenters' settings (the profile's `segment` section; its steps and seed are
    the study's); `real_root`: a real EchoNet-Dynamic-format folder every segmenter is also tested on."""
    out = Path(out)
    if "clsfree" in config.methods and not clsfree:
        raise ValueError("--methods clsfree needs the Cls-Free model (--clsfree <ema.pt>)")
    sampler = sampler or replace(DEFAULT_SAMPLER, cap_steps=False)
    models = load_models(unconditional, clsfree if "clsfree" in config.methods else None, device)
    clip_config = models["unconditional"].clip
    judge, judge_payload = load_segmenter(segmenter, device)
    if (judge_payload["config"]["frames"], judge_payload["config"]["size"]) != (clip_config.frames, clip_config.size):
        raise ValueError(f"{segmenter}: the judge was trained on other clips than the models "
                         f"({clip_config.frames} x {clip_config.size})")
    seed = models["unconditional"].seed
    train = EchoClips(data_root, "TRAIN", clip_config, seed=seed)
    test = EchoClips(data_root, "TEST", clip_config, seed=seed)
    if not len(test):
        raise ValueError(f"{data_root}: the TEST split is empty")
    for k in config.ks:
        labelled_clips(len(train), k, 0)  # a k beyond the TRAIN split fails now, not after the videos
    digests = {role: file_digest(path) for role, path in (("unconditional", unconditional), ("clsfree", clsfree))
               if path}
    beat = own_beat(train) if BEATING in config.methods else None
    cost = make_synthetic_videos(train, models, out, config, sampler, clsfree_sampler, digests, device, progress,
                                 beat)
    methods = synthetic_methods(config)
    synthetic_maps = list(range(min(config.synthetic_maps, len(train))))
    synthetic = {kind: synthetic_frames(train, out, methods[kind], synthetic_maps, beat) for kind in config.methods}
    # The segmenters learn from the frames given here alone: no flat renderings, no extra phantom hearts.
    seg_config = replace(seg_config, pseudo_share=0.0, phantom_hearts=0)
    settings = json.loads(json.dumps({  # as a stored result reads it back
        "config": asdict(config), "seg_config": asdict(seg_config), "sampler": asdict(sampler),
        "clsfree_sampler": None if clsfree_sampler is None else asdict(clsfree_sampler), "digests": digests,
        "data": data_key(train), "real_root": str(real_root) if real_root else None}))
    rows = []
    for k, s, condition in progress_bar(conditions(config), disable=not progress, desc="augment study",
                                        unit="segmenter"):
        path = out / "segmenters" / f"{'none' if k is None else k}-seed{s}-{condition.replace(' ', '')}.json"
        stored = read_json(path, "augment-study segmenter result") if path.is_file() else None
        kind = condition_method(condition)
        if stored is None or condition_settings(stored["settings"], kind) != condition_settings(settings, kind):
            labelled = [] if k is None else labelled_clips(len(train), k, s)
            parts = [labelled_frames(train, indices=labelled)] if labelled else []
            if kind is not None:  # the videos of the maps not labelled here (with every clip labelled: all of them)
                made, made_labels, owners, _ = synthetic[kind]
                pick = np.isin(owners, [i for i in synthetic_maps if i not in labelled] or synthetic_maps)
                parts.append((made[pick], made_labels[pick]))
            frames, labels = (np.concatenate([p[n] for p in parts]) for n in (0, 1))
            result = train_and_test(replace(seg_config, steps=config.segmenter_steps, seed=s), frames, labels, test,
                                    real_root, device)
            stored = {"settings": settings, "k": k, "seed": s, "condition": condition, **result}
            write_text_atomically(path, json.dumps(stored, indent=1) + "\n")
        rows.append({key: stored[key] for key in ("k", "seed", "condition", "train_frames", "test")}
                    | ({"real": stored["real"]} if "real" in stored else {}))
    report = {**settings, "checkpoint_sha256": digests, "segmenter": str(segmenter),
              "segmenter_sha256": file_digest(segmenter), "data_root": str(data_root), "rows": rows,
              "summary": summary(rows, config), "memorisation": memorisation(
                  train, test, {kind: synthetic[kind][0][synthetic[kind][3]] for kind in config.methods}, judge),
              "label_agreement": label_agreement(judge, test, synthetic),
              "cpu_seconds_per_video": cost, "train_clips": len(train), "test_clips": len(test)}
    text = json.dumps(report, indent=1) + "\n"
    for target in [out / "augment-study.json"] + ([Path(json_path)] if json_path else []):
        write_text_atomically(target, text)
    return report


def per_recording(rows: list[dict], k, condition: str, metric: str) -> dict[str, float]:
    """A condition's metric per TEST recording, averaged over the training seeds."""
    chosen = [r for r in rows if r["k"] == k and r["condition"] == condition]
    names = sorted(set.intersection(*(set(r["test"]) for r in chosen))) if chosen else []
    return {n: float(np.mean([r["test"][n][metric] for r in chosen if metric in r["test"][n]])) for n in names
            if any(metric in r["test"][n] for r in chosen)}


def summary(rows: list[dict], config: AugmentStudyConfig, metric: str = "Dice LV") -> list[dict]:
    """Per k and condition: the mean TEST `metric` over recordings (seeds averaged) and, for `real + <method>`,
    the paired bootstrap over TEST recordings against `real` and, for Free-Echo's additions (`FREE_ECHO`), against
    the other methods' additions."""
    lines = []
    for k in [*config.ks, None]:
        names = ("real", *(f"real + {m}" for m in config.methods)) if k is not None else \
            tuple(f"{m} only" for m in config.methods)
        base = per_recording(rows, k, "real", metric) if k is not None else {}
        for name in names:
            values = per_recording(rows, k, name, metric)
            if not values:
                continue
            line = {"k": "all" if k == 0 else ("-" if k is None else k), "condition": name,
                    metric: float(np.mean(list(values.values()))),
                    "s.e.": float(np.std(list(values.values()), ddof=1) / np.sqrt(len(values))) if len(values) > 1
                    else float("nan"), "recordings": len(values)}
            if name.startswith("real + ") and base:
                shared = sorted(set(values) & set(base))
                line["minus real"] = verdict_cell(paired_bootstrap([values[n] for n in shared],
                                                                   [base[n] for n in shared]))
                own = condition_method(name)
                if own in FREE_ECHO:
                    for other in config.methods:
                        rival = per_recording(rows, k, f"real + {other}", metric) if other != own else {}
                        if rival:
                            both = sorted(set(values) & set(rival))
                            line[f"minus real + {other}"] = verdict_cell(paired_bootstrap(
                                [values[n] for n in both], [rival[n] for n in both]))
            lines.append(line)
    return lines


def summary_lines(report: dict) -> list[str]:
    """The printed summary of a stored augmentation study."""
    lines = [f"{r['condition']:>20} k={r['k']!s:>4}: Dice LV {r['Dice LV']:.3f} ± {r['s.e.']:.3f}"
             + (f"; vs real {r['minus real']}" if "minus real" in r else "") for r in report["summary"]]
    for name, m in report["memorisation"]["methods"].items():
        lines.append(f"{name}: {m['memorised']} of {m['videos']} synthetic videos closer to a TRAIN clip than any "
                     f"TEST clip comes (memorisation rate {m['rate']:.3f})")
    return lines



def findings(report: dict) -> str:
    """The stored study in words: at the smallest k, what adding each method's videos changes in TEST Dice LV
    against the labelled clips alone (paired over TEST recordings), how Free-Echo's addition compares with the
    others', what the synthetic videos alone reach, and the memorisation rates."""
    lines = report["summary"]
    smallest = min((line["k"] for line in lines if isinstance(line["k"], int)), default=None)
    if smallest is None:
        smallest = "all"
    at = {line["condition"]: line for line in lines if line["k"] == smallest}
    clips = f"{smallest} labelled TRAIN clip{'' if smallest == 1 else 's'}"
    real = at["real"]
    text = (f"With {clips} a segmenter reaches a TEST Dice LV of {real['Dice LV']:.3f} ± {real['s.e.']:.3f} (s.e. "
            f"over {real['recordings']} TEST recordings, seeds averaged).")
    added = [f"{name.removeprefix('real + ')} {line['minus real']}" for name, line in at.items()
             if "minus real" in line]
    if added:
        text += (" Adding synthetic videos of the other TRAIN maps changes it by (paired bootstrap): "
                 + "; ".join(added) + ".")
    for own in FREE_ECHO:
        rivals = [f"{key.removeprefix('minus real + ')} {value}" for key, value in at.get(f"real + {own}", {}).items()
                  if key.startswith("minus real + ")]
        if rivals:
            text += f" {own}'s videos against the others' as the addition: " + "; ".join(rivals) + "."
    alone = [line for line in lines if line["k"] == "-"]
    if alone:
        text += " Synthetic videos alone: " + ", ".join(f"{line['condition'].removesuffix(' only')} "
                                                          f"{line['Dice LV']:.3f}" for line in alone) + "."
    agreement = report.get("label_agreement")
    if agreement:
        text += (" How well the synthetic labels fit their frames (the judge's Dice LV against them; "
                 f"{agreement['judge on TEST frames']:.3f} on annotated TEST frames): " + ", ".join(
                     f"{name} {m['Dice LV']:.3f}" for name, m in agreement["methods"].items()) + ".")
    rates = report["memorisation"]["methods"]
    text += " Memorisation (a video's ED frame closer to a TRAIN clip than any TEST clip comes): " + ", ".join(
        f"{name} {m['memorised']} of {m['videos']}" for name, m in rates.items()) + "."
    return text


LABELS_OFF = 0.03  # a source's labels are off when the judge's Dice LV on its frames is this far below real frames'


def synthetic_share(rows: list[dict], k: int, method: str) -> float:
    """The share of synthetic frames in the training frames of `real + method` at k (seeds averaged)."""
    def frames(condition):
        return np.mean([r["train_frames"] for r in rows if r["k"] == k and r["condition"] == condition])
    return float(1 - frames("real") / frames(f"real + {method}"))


def where_it_fails(report: dict) -> str:
    """Where adding synthetic videos does not help, in words, from the stored study: the sources whose addition
    lowers TEST Dice LV at some k (paired bootstrap), with how well their labels fit their frames
    (`label_agreement`), the sources that memorise, and what synthetic videos alone fall short of."""
    lines, sentences = report["summary"], []
    agreement = (report.get("label_agreement") or {}).get("methods", {})
    judge = (report.get("label_agreement") or {}).get("judge on TEST frames")
    for method in report["config"]["methods"]:
        hurt = [line["k"] for line in lines if line["condition"] == f"real + {method}"
                and str(line.get("minus real", "")).startswith("fails")]
        if not hurt:
            continue
        sentence = f"Adding {method}'s videos lowers TEST Dice LV at k = {', '.join(map(str, hurt))}"
        if method in agreement and judge is not None:
            fit = agreement[method]["Dice LV"]
            sentence += f"; its labels fit its frames with a Dice LV of {fit:.3f} by the judge ({judge:.3f} on real frames)"
            if judge - fit > LABELS_OFF:
                sentence += ", so they teach boundaries that are off"
            else:
                share = synthetic_share(report["rows"], 0 if hurt[0] == "all" else hurt[0], method)
                sentence += (", so the labels are not what fails: its frames differ from recorded ones, and at k = "
                             f"{hurt[0]} they are {share:.0%} of the training frames")
        sentences.append(sentence + ".")
    for method, m in report["memorisation"]["methods"].items():
        if m["memorised"]:
            sentences.append(f"{method}'s videos fail the memorisation check: {m['memorised']} of {m['videos']} come "
                             f"closer to a TRAIN clip than any TEST clip comes, so they repeat training hearts more "
                             f"than they add new ones.")
    ks = [line["k"] for line in lines if isinstance(line["k"], int)]
    alone = [line for line in lines if line["k"] == "-"]
    if ks and alone:
        best = max(alone, key=lambda line: line["Dice LV"])
        real = next(line for line in lines if line["k"] == min(ks) and line["condition"] == "real")
        if best["Dice LV"] < real["Dice LV"]:
            sentences.append(f"Synthetic videos alone do not replace real ones: the best, "
                             f"{best['condition'].removesuffix(' only')}, reaches {best['Dice LV']:.3f}, below the "
                             f"{real['Dice LV']:.3f} of {min(ks)} labelled clips.")
    return " ".join(sentences) or "Adding synthetic videos lowers TEST Dice LV for no source and k."
