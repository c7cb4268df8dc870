"""Scoring the cached videos against the real test clips: SSIM/PSNR per frame (and their luminance, contrast
and structure terms inside and outside the sector), the Frechet metrics where their weights are given, the
anatomy metrics and map specificity through the judge segmenter, and a second scan of the same heart as the
ceiling. `evaluate` runs the whole study: load the models, generate (`videos.generate_all`), score, write
metrics.json.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from freeecho_core.checkpoint import LoadedModel, code_version, load_model
from freeecho_core.data.case import FIVE_LABELS, FIVE_LV
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.make_dataset import rescan_clip
from freeecho_core.files import check_output_folder, write_text_atomically
from freeecho_core.study.anatomy import feature_distances, finite_mean, map_scores, map_specificity
from freeecho_core.study.metrics import (FEATURE_NETWORKS, SSIM_TERMS, MetricUnavailable, fan_iou, frechet_metric,
                                         load_feature_network, region_means, ssim_maps, ssim_psnr, to_unit,
                                         video_fans)
from freeecho_core.study.segmenter import SegUNet, load_segmenter
from freeecho_core.study.videos import (EvalConfig, claim_video_folder, data_key, file_digest, generate_all,
                                        load_videos, method_specs, video_key, video_path)
from freeecho_core.synthesis import Method


def load_judge(segmenter: str | os.PathLike | None, clip: ClipConfig, device) -> tuple[SegUNet | None, dict]:
    """The anatomy segmenter of `segmenter` (None: no anatomy metrics), checked against the clip size."""
    if not segmenter:
        return None, {}
    net, payload = load_segmenter(segmenter, device)
    if (payload["config"]["frames"], payload["config"]["size"]) != (clip.frames, clip.size):
        raise ValueError(f"{segmenter}: trained on clips of {payload['config']['frames']} x {payload['config']['size']}"
                         f" pixels, but the evaluated clips are {clip.frames} x {clip.size}: train one at that size")
    return net, {"path": str(segmenter), "val_dice": payload["val_dice"]}


def anatomy_row(judge: SegUNet, structures: list[str], clips: list, generated: list[torch.Tensor],
                real: torch.Tensor) -> dict:
    """The anatomy columns of one method: per-map scores averaged over maps, the pooled FD-seg / FVD-seg, and
    the map specificity (two or more maps)."""
    per_map = [map_scores(judge, g, r, c.ed_map, structures) for g, r, c in zip(generated, real, clips)]
    row = {name: finite_mean([m[name] for m in per_map]) for name in per_map[0]}
    try:
        row |= feature_distances(judge, generated, real)
    except ValueError as why:  # fewer than 2 real clips: no covariance
        row["feature_distances_unavailable"] = str(why)
    if len(clips) > 1:
        row |= map_specificity(judge, generated, [c.ed_map for c in clips])
    return row | {"anatomy_per_map": {f"{c.case_id}_{c.view}": m for c, m in zip(clips, per_map)}}


def feature_networks(feature_weights: dict, device) -> tuple[dict, dict]:
    """The pretrained feature networks whose weights were given ({name: network}) and, for the others, why
    their metric is unavailable ({metric: reason}). A given file that is not such a network raises."""
    networks, unavailable = {}, {}
    for name in FEATURE_NETWORKS:
        try:
            networks[name] = load_feature_network(name, feature_weights.get(name), device)
        except MetricUnavailable as why:
            unavailable[FEATURE_NETWORKS[name]] = str(why)
    return networks, unavailable


def ssim_breakdown(generated: list[torch.Tensor], real: torch.Tensor, clips: list) -> list[dict]:
    """Where a method's SSIM comes from, per map: its three factors (`metrics.ssim_terms`) and its mean over each
    region of the ED map (inside the scan sector, outside the LV, and each of the five labels)."""
    per_map = []
    for g, r, c in zip(generated, real, clips):
        labels = torch.from_numpy(c.ed_map)
        regions = ({"in sector": labels != 0, "outside the LV": (labels != 0) & (labels != FIVE_LV)}
                   | {name: labels == k for k, name in FIVE_LABELS.items()})
        maps = ssim_maps(g, r)  # the windows once; then a mean per region
        whole = region_means(maps)
        per_map.append({name: whole[name] for name in SSIM_TERMS}
                       | {f"SSIM {region}": region_means(maps, mask)["SSIM"] for region, mask in regions.items()
                          if mask.any()})
    return per_map


def mean_over_maps(per_map: list[dict]) -> dict:
    """The mean over maps of every entry of per-map scores (NaN-free entries only; a map may lack a region)."""
    names = dict.fromkeys(name for entry in per_map for name in entry)
    return {name: finite_mean([entry.get(name, float("nan")) for entry in per_map]) for name in names}


def cone_row(generated: list[torch.Tensor], clips: list) -> dict:
    """The cone columns of one method (`metrics.fan_iou`): the fan IoU of each video against its own map's sector,
    averaged over videos and maps (and per map, `fan IoU per map`), and, with two or more maps, against the other
    maps' sectors: what a video whose cone ignores its map scores. Each video's fan is found once."""
    fans = [video_fans(g) for g in generated]
    own = [float(np.mean(fan_iou(f, c.sector))) for f, c in zip(fans, clips)]
    row = {"fan IoU": float(np.mean(own)), "fan IoU per map": own}
    if len(clips) > 1:
        row["fan IoU, other maps"] = float(np.mean([np.mean(fan_iou(f, other.sector)) for i, f in enumerate(fans)
                                                    for j, other in enumerate(clips) if i != j]))
    return row


def method_row(generated: list[torch.Tensor], clips: list, real: torch.Tensor, networks: dict,
               judge: SegUNet | None, judge_info: dict) -> dict:
    """The scores of one method's videos (`generated`: (n, K, S, S) in [0, 1] per clip): SSIM/PSNR per map
    (mean over frames and samples) and their spread over maps, SSIM's breakdown, FID/FVD for the loaded
    `networks`, and the anatomy metrics when a segmenter (`judge`) is given."""
    ssim, psnr = np.array([ssim_psnr(g, r) for g, r in zip(generated, real)]).T
    breakdown, cone = ssim_breakdown(generated, real, clips), cone_row(generated, clips)
    fans = cone.pop("fan IoU per map")
    row = {"SSIM": float(ssim.mean()), "SSIM_std": float(ssim.std()), "PSNR": float(psnr.mean()),
           "PSNR_std": float(psnr.std()), "maps": len(clips), "samples_per_map": int(generated[0].shape[0]),
           "per_map": {f"{c.case_id}_{c.view}": {"SSIM": float(s), "PSNR": float(p), "fan IoU": f,
                                                 "SSIM outside the LV": b.get("SSIM outside the LV", float("nan"))}
                       for c, s, p, f, b in zip(clips, ssim, psnr, fans, breakdown)},
           "SSIM_breakdown": mean_over_maps(breakdown), **cone}
    for name, net in networks.items():
        row[FEATURE_NETWORKS[name]] = frechet_metric(net, torch.cat(generated), real)
    if judge is not None:
        row |= anatomy_row(judge, list(judge_info["val_dice"]), clips, generated, real)
    return row


def score(data: EchoClips, out: Path, methods: list[Method], feature_weights: dict, max_maps: int | None = None,
          device="cpu", segmenter: str | os.PathLike | None = None, networks: tuple[dict, dict] | None = None) -> dict:
    """SSIM/PSNR per map (mean over frames and samples) and FID/FVD per method, or why they are unavailable;
    with a `segmenter` checkpoint, the anatomy metrics of `freeecho_core.anatomy` too. `networks`: the result
    of `feature_networks`, when already loaded."""
    clips = [data.clip(i) for i in range(len(data))][:max_maps]
    judge, judge_info = load_judge(segmenter, data.config, device)
    real = torch.stack([to_unit(torch.from_numpy(c.video)) for c in clips])
    networks, unavailable = networks or feature_networks(feature_weights, device)
    unavailable = dict(unavailable)
    results = {}
    for method in methods:
        generated = [load_videos(video_path(out, method, c.case_id, c.view)) for c in clips]
        results[method.name] = method_row(generated, clips, real, networks, judge, judge_info)
    report = {"methods": results, "unavailable": unavailable, "segmenter": judge_info}
    if judge is None:
        unavailable["anatomy"] = "anatomy metrics: no segmenter checkpoint given"
    elif len(clips) > 1:  # the ceiling: the judge reading the real clips of the maps
        report["real_specificity"] = map_specificity(judge, [r[None] for r in real], [c.ed_map for c in clips])
    report["real_cone"] = cone_row([r[None] for r in real], clips)  # the recordings' own fans at the clip size
    report["real_cone"].pop("fan IoU per map")
    return report


def second_scan_row(data: EchoClips, max_maps: int | None = None, device="cpu",
                    segmenter: str | os.PathLike | None = None) -> dict:
    """The scores of a perfect generator but for the speckle: each test clip of a CAMUS-format phantom scanned
    a second time (`make_dataset.rescan_clip`: the same heart, beat and labels, new scatterers), scored like a
    method with one sample per map (no FID/FVD). The ceiling of SSIM and PSNR against one real clip."""
    clips = [data.clip(i) for i in range(len(data))][:max_maps]
    judge, judge_info = load_judge(segmenter, data.config, device)
    real = torch.stack([to_unit(torch.from_numpy(c.video)) for c in clips])
    rescans = [rescan_clip(data.root, c.case_id, c.view, data.config) for c in clips]
    generated = [to_unit(torch.from_numpy(r.video))[None] for r in rescans]
    return method_row(generated, clips, real, {}, judge, judge_info)


def load_models(unconditional: str | os.PathLike, clsfree: str | os.PathLike | None, device,
                compile: bool = False) -> dict[str, LoadedModel]:
    """The models by role ("unconditional", and "clsfree" when given), checked to share a clip size.
    `compile`: torch.compile the networks."""
    models = {"unconditional": load_model(unconditional, device, "unconditional")}
    if clsfree:
        models["clsfree"] = load_model(clsfree, device, "clsfree")
        a, b = models["unconditional"].clip, models["clsfree"].clip
        if (b.frames, b.size) != (a.frames, a.size):
            raise ValueError(f"{clsfree} was trained on other clips ({b.frames} x {b.size}) than {unconditional} "
                             f"({a.frames} x {a.size}); both models must share a clip size")
    if compile:
        for model in models.values():
            model.denoiser.net = torch.compile(model.denoiser.net)
    return models


def evaluate(data_root, unconditional: str | os.PathLike, clsfree: str | os.PathLike | None, out,
             config: EvalConfig = EvalConfig(), *, split: str = "TEST", feature_weights: dict | None = None,
             device="cpu", rank: int = 0, world_size: int = 1, max_maps: int | None = None,
             progress: bool = True, segmenter: str | os.PathLike | None = None,
             compile: bool = False, models: dict[str, LoadedModel] | None = None) -> dict | None:
    """Generate (resumably, sharded over processes) and score; process 0 writes and returns <out>/metrics.json.
    `segmenter`: a checkpoint of `study.segmenter` for the anatomy metrics (optional). `compile`:
    torch.compile the networks (minutes of warm-up, then faster sampling: for long runs). `models`: what
    `load_models` returned for these checkpoints, to share loaded (and compiled) networks between runs."""
    out, device = Path(out), torch.device(device)
    check_output_folder(out, "--out")
    models = models or load_models(unconditional, clsfree, device, compile)
    model = models["unconditional"]
    clip = model.clip
    # A wrong segmenter or feature-network file is reported now, not after the generation.
    load_judge(segmenter, clip, device)
    networks = feature_networks(feature_weights or {}, device) if rank == 0 else ({}, {})
    data = EchoClips(data_root, split, clip, seed=model.seed)
    if len(data) == 0:
        raise ValueError(f"{data_root}: the {split} split is empty")
    methods = method_specs(config, clsfree=bool(clsfree))
    if not methods:
        raise ValueError(f"no method to run: the Cls-Free baseline (--methods {' '.join(config.methods)}) needs "
                         f"its model, --clsfree <ema.pt>")
    if rank == 0:
        digests = {role: file_digest(path) for role, path in (("unconditional", unconditional),
                                                               ("clsfree", clsfree)) if path}
        made_for = data_key(data)
        for method in methods:
            claim_video_folder(out, method, video_key(method, config, digests, made_for))
    if world_size > 1:
        dist.barrier()
    denoisers = {role: m.denoiser for role, m in models.items()}
    made = generate_all(data, denoisers, out, config, device, methods, rank, world_size, max_maps, progress)
    if world_size > 1:
        dist.barrier()
    if rank:
        return None
    metrics = score(data, out, methods, feature_weights or {}, max_maps, device, segmenter, networks)
    report = {"dataset": str(data_root), "split": split, "clip": asdict(clip), "config": asdict(config),
              "checkpoints": {"unconditional": str(unconditional), "clsfree": str(clsfree) if clsfree else None},
              "train_config": model.train_config, "generated_now": made, "code_version": code_version(), **metrics}
    write_text_atomically(out / "metrics.json", json.dumps(report, indent=1) + "\n")
    return report
