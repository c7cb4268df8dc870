"""The paper's study (section 3, Table 1): generate n videos per test ED map with every method, then score them.

Methods (`method_specs`):
- sdedit@t: SDEdit baseline, the tab20-grey "colour" label image as init, no OT, unconditional model, from t.
- clsfree: the conditional model with classifier-free guidance (w = 7), from pure noise (all 64 steps).
- free-echo@t: Free-Echo, the OT-matched pseudo video (Sinkhorn, barycentric map) as init, from t_i = t.
- free-echo-stochastic@t: our variant, each pixel of the pseudo image drawn from its row of the OT plan.

Generation is seeded per (seed, map, method, sample), batched, resumable (a map whose videos are on disk is
skipped) and shardable: process r of w takes maps r, r + w, ... (torchrun), and process 0 scores them all.
Videos are stored as uint8 (n, K, S, S) .npy files under <out>/videos/<method>/.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from freeecho_core.anatomy import ANATOMY_COLUMNS, feature_distances, finite_mean, map_scores
from freeecho_core.checkpoint import code_version, load_checkpoint, unet_from_payload
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.edm import EDMPrecond, karras_sigmas, randn_per_sample
from freeecho_core.metrics import (FEATURE_NETWORKS, MetricUnavailable, frechet_metric, load_feature_network,
                                   ssim_psnr, to_unit)
from freeecho_core.pseudo import match_intensities, pseudo_video, sdedit_colour_image
from freeecho_core.sampler import SOLVERS, cfg_denoiser, sdedit_sample
from freeecho_core.segmenter import SegUNet, load_segmenter
from freeecho_core.train import one_hot_maps

METHOD_KINDS = ("sdedit", "clsfree", "free-echo", "free-echo-stochastic")
AUTHORS_CHURN = {"S_churn": 80.0, "S_tmin": 0.05, "S_tmax": 50.0, "S_noise": 1.003}  # EDM Alg. 2, their script


@dataclass(frozen=True)
class EvalConfig:
    samples: int = 10  # n generated videos per map (paper: 10)
    start_steps: tuple[int, ...] = (15, 35, 55)  # Free-Echo t_i (paper Table 1)
    sdedit_step: int = 15  # start step of the SDEdit baseline (the paper: the same as Free-Echo's)
    stochastic_step: int = 15  # t_i of the stochastic-OT variant
    guidance: float = 7.0  # Cls-Free guidance weight w (paper: 7.0)
    bins: int = 256  # target histogram bins for the OT step
    solver: str = "heun"  # "heun" (EDM Algorithm 2) or "euler" (half the network evaluations)
    stochastic_sampler: bool = True  # the authors' churn (S_churn 80); False: the deterministic ODE
    batch: int = 10  # videos per network batch
    seed: int = 0
    methods: tuple[str, ...] = METHOD_KINDS  # which kinds of method to run

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        if not set(self.methods) <= set(METHOD_KINDS):
            raise ValueError(f"methods must be among {METHOD_KINDS}, got {self.methods}")


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "sdedit", "clsfree", "free-echo", "free-echo-stochastic"
    start_step: int  # index into the 64-step schedule (0 for Cls-Free: from pure noise)


def method_specs(config: EvalConfig, clsfree: bool = True) -> list[Method]:
    """The methods of `config.methods` in Table 1 order; Cls-Free only when its model is given."""
    methods = [Method(f"sdedit@{config.sdedit_step}", "sdedit", config.sdedit_step),
               Method("clsfree", "clsfree", 0),
               *(Method(f"free-echo@{t}", "free-echo", t) for t in config.start_steps),
               Method(f"free-echo-stochastic@{config.stochastic_step}", "free-echo-stochastic", config.stochastic_step)]
    return [m for m in methods if m.kind in config.methods and (clsfree or m.kind != "clsfree")]


def sample_seeds(seed: int, map_index: int, method: str, n: int) -> list[int]:
    """One seed per generated video, fixed by (seed, map, method, sample)."""
    tag = zlib.crc32(method.encode())
    return [int(np.random.SeedSequence([seed, map_index, tag, s]).generate_state(1)[0]) for s in range(n)]


def load_denoiser(path: str | os.PathLike, device) -> tuple[EDMPrecond, dict]:
    """The EMA denoiser of a checkpoint (ema.pt, or the 'ema' entry of checkpoint.pt) and its training config."""
    payload = load_checkpoint(path)
    weights = "ema" if "ema" in payload else "model"
    return EDMPrecond(unet_from_payload(payload, weights)).to(device).eval(), payload.get("train_config", {})


def initial_videos(method: Method, ed_map: np.ndarray, target, frames: int, seeds: list[int]) -> torch.Tensor:
    """The clean init of one map for an SDEdit-type method: (n, 1, K, S, S) in [-1, 1]."""
    if method.kind == "sdedit":
        return pseudo_video(sdedit_colour_image(ed_map), frames).expand(len(seeds), -1, -1, -1, -1)
    if method.kind == "free-echo":
        image, _ = match_intensities(ed_map, target, "sinkhorn", "barycentric")
        return pseudo_video(image, frames).expand(len(seeds), -1, -1, -1, -1)
    images = [match_intensities(ed_map, target, "sinkhorn", "stochastic", rng=np.random.default_rng(s))[0]
              for s in seeds]
    return pseudo_video(np.stack(images), frames)


@torch.no_grad()
def generate(method: Method, ed_map: np.ndarray, seeds: list[int], models: dict, target, frames: int,
             config: EvalConfig, device) -> torch.Tensor:
    """n = len(seeds) videos (n, K, S, S) in [-1, 1] for one ED map (5-label (S, S) array)."""
    sigmas = karras_sigmas()
    churn = AUTHORS_CHURN if config.stochastic_sampler else {}
    gens = [torch.Generator(device).manual_seed(s) for s in seeds]
    size = ed_map.shape[-1]
    if method.kind == "clsfree":
        cond = one_hot_maps(torch.from_numpy(ed_map)[None].to(device)).expand(len(seeds), -1, -1, -1)
        x = sigmas[0] * randn_per_sample((len(seeds), 1, frames, size, size), gens, device=device)
        guided = cfg_denoiser(models["clsfree"], cond, config.guidance)
        out = SOLVERS[config.solver](guided, x, sigmas, generator=gens, **churn)
    else:
        init = initial_videos(method, ed_map, target, frames, seeds).to(device)
        out = sdedit_sample(models["unconditional"], init, sigmas, method.start_step, generator=gens,
                            solver=config.solver, **churn)
    return out[:, 0].float().clamp(-1, 1).cpu()


def video_path(out: Path, method: Method, case_id: str, view: str) -> Path:
    return out / "videos" / method.name / f"{case_id}_{view}.npy"


def save_videos(path: Path, videos: torch.Tensor) -> None:
    """uint8 (n, K, S, S), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, (to_unit(videos) * 255).round().to(torch.uint8).numpy())
    os.replace(tmp, path)


def load_videos(path: Path) -> torch.Tensor:
    """(n, K, S, S) in [0, 1]."""
    return torch.from_numpy(np.load(path)).float() / 255


def generate_all(data: EchoClips, models: dict, out: Path, config: EvalConfig, device, methods: list[Method],
                 rank: int = 0, world_size: int = 1, max_maps: int | None = None, progress: bool = True) -> int:
    """Generate every missing (map, method) video set of this process's share; return how many were made."""
    target = EchoClips(data.root, "TRAIN", data.config, seed=data.seed).intensity_histogram(config.bins)
    maps = list(range(len(data)))[: max_maps][rank::world_size]
    jobs = [(i, m) for i in maps for m in methods]
    made = 0
    for i, method in tqdm(jobs, disable=not progress or rank, desc="generating", unit="map x method"):
        clip = data.clip(i)
        path = video_path(out, method, clip.case_id, clip.view)
        if path.is_file() and np.load(path, mmap_mode="r").shape[0] == config.samples:
            continue
        seeds = sample_seeds(config.seed, i, method.name, config.samples)
        videos = torch.cat([generate(method, clip.ed_map, seeds[b : b + config.batch], models, target,
                                     data.config.frames, config, device)
                            for b in range(0, len(seeds), config.batch)])
        save_videos(path, videos)
        made += 1
    return made


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
    """The anatomy columns of one method: per-map scores averaged over maps, and the pooled FD-seg / FVD-seg."""
    per_map = [map_scores(judge, g, r, c.ed_map, structures) for g, r, c in zip(generated, real, clips)]
    row = {name: finite_mean([m[name] for m in per_map]) for name in per_map[0]}
    try:
        row |= feature_distances(judge, generated, real)
    except ValueError as why:  # fewer than 2 real clips: no covariance
        row["feature_distances_unavailable"] = str(why)
    return row | {"anatomy_per_map": {f"{c.case_id}_{c.view}": m for c, m in zip(clips, per_map)}}


def score(data: EchoClips, out: Path, methods: list[Method], feature_weights: dict, max_maps: int | None = None,
          device="cpu", segmenter: str | os.PathLike | None = None) -> dict:
    """SSIM/PSNR per map (mean over frames and samples) and FID/FVD per method, or why they are unavailable;
    with a `segmenter` checkpoint, the anatomy metrics of `freeecho_core.anatomy` too."""
    clips = [data.clip(i) for i in range(len(data))][:max_maps]
    judge, judge_info = load_judge(segmenter, data.config, device)
    real = torch.stack([to_unit(torch.from_numpy(c.video)) for c in clips])
    networks, unavailable = {}, {}
    for name in FEATURE_NETWORKS:
        try:
            networks[name] = load_feature_network(name, feature_weights.get(name), device)
        except MetricUnavailable as why:
            unavailable[FEATURE_NETWORKS[name]] = str(why)
    results = {}
    for method in methods:
        generated = [load_videos(video_path(out, method, c.case_id, c.view)) for c in clips]
        per_map = [ssim_psnr(g, r) for g, r in zip(generated, real)]
        ssim, psnr = np.array(per_map).T
        row = {"SSIM": float(ssim.mean()), "SSIM_std": float(ssim.std()), "PSNR": float(psnr.mean()),
               "PSNR_std": float(psnr.std()), "maps": len(clips), "samples_per_map": int(generated[0].shape[0]),
               "per_map": {f"{c.case_id}_{c.view}": {"SSIM": float(s), "PSNR": float(p)}
                           for c, s, p in zip(clips, ssim, psnr)}}
        for name, net in networks.items():
            row[FEATURE_NETWORKS[name]] = frechet_metric(net, torch.cat(generated), real)
        if judge is not None:
            row |= anatomy_row(judge, list(judge_info["val_dice"]), clips, generated, real)
        results[method.name] = row
    if judge is None:
        unavailable["anatomy"] = "anatomy metrics: no segmenter checkpoint given"
    return {"methods": results, "unavailable": unavailable, "segmenter": judge_info}


def evaluate(data_root, unconditional: str | os.PathLike, clsfree: str | os.PathLike | None, out,
             config: EvalConfig = EvalConfig(), *, split: str = "TEST", feature_weights: dict | None = None,
             device="cpu", rank: int = 0, world_size: int = 1, max_maps: int | None = None,
             progress: bool = True, segmenter: str | os.PathLike | None = None) -> dict | None:
    """Generate (resumably, sharded over processes) and score; process 0 writes and returns <out>/metrics.json.
    `segmenter`: a checkpoint of `freeecho_core.segmenter` for the anatomy metrics (optional)."""
    out, device = Path(out), torch.device(device)
    models, train_config = {}, {}
    models["unconditional"], train_config = load_denoiser(unconditional, device)
    if clsfree:
        models["clsfree"], _ = load_denoiser(clsfree, device)
    clip = ClipConfig(frames=train_config.get("frames", 24), size=train_config.get("size", 128))
    data = EchoClips(data_root, split, clip, seed=train_config.get("seed", 0))
    if len(data) == 0:
        raise ValueError(f"{data_root}: the {split} split is empty")
    methods = method_specs(config, clsfree=bool(clsfree))
    made = generate_all(data, models, out, config, device, methods, rank, world_size, max_maps, progress)
    if world_size > 1:
        dist.barrier()
    if rank:
        return None
    metrics = score(data, out, methods, feature_weights or {}, max_maps, device, segmenter)
    report = {"dataset": str(data_root), "split": split, "clip": asdict(clip), "config": asdict(config),
              "checkpoints": {"unconditional": str(unconditional), "clsfree": str(clsfree) if clsfree else None},
              "train_config": train_config, "generated_now": made, "code_version": code_version(), **metrics}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


# The paper's Table 1, on the REAL datasets (SSIM, PSNR, FID, FVD). Shown beside ours, never mixed with them.
PAPER_TABLE1 = {
    "CAMUS": {"sdedit@15": (0.23, 19.54, 32.45, 213.50), "clsfree": (0.52, 22.49, 22.50, 150.80),
              "free-echo@15": (0.48, 20.43, 26.31, 195.41), "free-echo@35": (0.27, 16.54, 53.71, 312.12),
              "free-echo@55": (0.12, 13.45, 67.15, 412.55)},
    "EchoNet-Dynamic": {"sdedit@15": (0.34, 21.52, 25.49, 250.45), "clsfree": (0.56, 20.04, 18.56, 130.85),
                        "free-echo@15": (0.51, 20.78, 24.22, 180.39), "free-echo@35": (0.32, 18.72, 44.67, 332.12),
                        "free-echo@55": (0.21, 16.66, 59.85, 395.73)},
}


def markdown_table(reports: dict[str, dict], paper: dict[str, str] | None = None) -> str:
    """Table 1 layout: dataset, method, t_i, SSIM, PSNR, FID, FVD (mean +- std over maps; "n/a" where a metric
    is unavailable), then the anatomy columns that any report holds (Dice per structure, EF proxy error,
    LV area roughness, FD-seg, FVD-seg; "-" for the paper, which did not measure them). `paper` maps a
    dataset label of ours to the paper's real dataset whose numbers are added as separate rows, labelled
    as the paper's."""
    anatomy = [c for c in ANATOMY_COLUMNS if any(c in row for r in reports.values() for row in r["methods"].values())]
    header = ["dataset", "method", "t_i", "SSIM", "PSNR (dB)", "FID", "FVD", *anatomy]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, report in reports.items():
        for name, row in report["methods"].items():
            method, _, step = name.partition("@")
            cells = [label, method, step or "-", f"{row['SSIM']:.3f} +- {row['SSIM_std']:.3f}",
                     f"{row['PSNR']:.2f} +- {row['PSNR_std']:.2f}",
                     *(f"{row[m]:.2f}" if m in row else "n/a" for m in ("FID", "FVD")),
                     *(f"{row[c]:.3g}" if c in row else "n/a" for c in anatomy)]
            lines.append("| " + " | ".join(cells) + " |")
        real = (paper or {}).get(label)
        for name, values in PAPER_TABLE1.get(real, {}).items():
            method, _, step = name.partition("@")
            cells = [f"paper, real {real}", method, step or "-", *(f"{v:.2f}" for v in values)]
            lines.append("| " + " | ".join(f"*{c}*" for c in cells) + " |" + " - |" * len(anatomy))
    return "\n".join(lines)


def paper_ordering(report: dict, metric: str = "SSIM") -> dict[str, bool]:
    """The paper's claims about Table 1, checked on a report: Cls-Free above Free-Echo@15 above SDEdit, and
    Free-Echo worsening from t_i = 15 to 35 to 55."""
    m = {name: row[metric] for name, row in report["methods"].items()}
    return {f"Cls-Free above Free-Echo@15 ({metric})": m["clsfree"] > m["free-echo@15"],
            f"Free-Echo@15 above SDEdit ({metric})": m["free-echo@15"] > m["sdedit@15"],
            f"Free-Echo worsens from t_i = 15 to 35 to 55 ({metric})":
                m["free-echo@15"] > m["free-echo@35"] > m["free-echo@55"]}
