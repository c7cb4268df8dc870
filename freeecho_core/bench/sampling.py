"""Sampling one video: ours (SDEdit from t_i = 15, 97 evaluations) beside the authors' cost profile
(`reference`: 3 channels, float32, all 64 steps of stochastic Heun from pure noise, 127 evaluations;
`sampler.reference_sdedit_sample`), extrapolated from the per-evaluation time where a run would take too long;
and the stored cpu model's videos with every solver (`cpu_sampling_suite`).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from freeecho_core.bench.network import REFERENCE_CHANNELS, build_denoiser, video
from freeecho_core.bench.report import SuiteRun
from freeecho_core.bench.timing import autocast, check_video_size, environment, time_call, timing
from freeecho_core.checkpoint import load_checkpoint
from freeecho_core.edm import karras_sigmas
from freeecho_core.sampler import DEFAULT_SAMPLER, PAPER_SAMPLER, SamplerConfig, reference_sdedit_sample, sdedit_sample
from freeecho_core.synthesis import FreeEcho


# Lower bound of the seconds per video (97 evaluations) from memory traffic, per GPU: the estimate for one
# H100 (~12 GB moved per fully fused evaluation). Other devices have no stated floor.
FLOOR_SECONDS_PER_VIDEO = {"H100": 0.43}


class CountingDenoiser:
    """Wraps a denoiser: runs it under `autocast(device, dtype)` and counts its calls (network evaluations)."""

    def __init__(self, D, device, dtype: str = "float32"):
        self.D, self.device, self.dtype, self.calls = D, device, dtype, 0

    def __call__(self, x, sigma):
        self.calls += 1
        with autocast(self.device, self.dtype):
            return self.D(x, sigma)


def sample_video(mode: str, D, init: torch.Tensor, start_step: int, seed: int = 0) -> torch.Tensor:
    """One batch of videos: `ours` is SDEdit from t_i (sampler.sdedit_sample, stochastic Heun with the
    authors' churn); `reference` is the authors' script (sampler.reference_sdedit_sample)."""
    gens = [torch.Generator(init.device).manual_seed(seed + b) for b in range(init.shape[0])]
    if mode == "ours":
        return sdedit_sample(D, init, karras_sigmas(), start_step, generator=gens, **PAPER_SAMPLER.solver_options())
    if mode == "reference":
        return reference_sdedit_sample(D, init, karras_sigmas(), start_step, generator=gens, **PAPER_SAMPLER.solver_options())
    raise ValueError(f"mode must be 'ours' or 'reference', got {mode!r}")


def sampler_cost(mode: str, *, batch: int, frames: int, size: int, start_step: int = 15, device="cpu",
                 repeats: int = 3) -> tuple[int, float]:
    """(network evaluations, seconds of everything but the network) of one sampling run, measured with a
    zero-cost denoiser D(x, sigma) = x: the sampler's own float64 arithmetic and noise draws."""
    channels = REFERENCE_CHANNELS if mode == "reference" else 1
    init = video(batch, channels, frames, size, device)
    D = CountingDenoiser(lambda x, sigma: x, device)
    times = time_call(lambda: sample_video(mode, D, init, start_step), device, repeats, warmup=0)
    return D.calls // repeats, statistics.median(times)


def bench_sampling(
    mode: str, preset: str = "paper", *, batch: int = 1, frames: int = 24, size: int = 128,
    start_step: int = 15, device: str = "cpu", dtype: str = "float32", repeats: int = 1,
    channels_last: bool = False, compile: bool = False, seed: int = 0,
) -> dict:
    """Seconds per video of a full sampling run, measured: `ours` (1 channel, `dtype`, from t_i) or the
    `reference` cost profile (3 channels, float32 only, 127 evaluations). The untimed warm-up is one
    network evaluation."""
    if mode == "reference" and dtype != "float32":
        raise ValueError("the reference mode is the authors' float32 profile")
    check_video_size(preset, size)
    dev = torch.device(device)
    channels = REFERENCE_CHANNELS if mode == "reference" else 1
    _, D = build_denoiser(preset, channels=channels, device=dev, channels_last=channels_last,
                          compile=compile, seed=seed)
    counted = CountingDenoiser(D, dev, dtype)
    init = video(batch, channels, frames, size, dev, channels_last)
    with torch.no_grad():
        time_call(lambda: counted(init, torch.ones(batch, device=dev)), dev, repeats=0, warmup=1)
        counted.calls = 0
        times = time_call(lambda: sample_video(mode, counted, init, start_step, seed), dev, repeats, warmup=0)
    record = sampling_record(mode, preset, batch, list(init.shape), start_step, dtype, counted.calls // repeats,
                             timing(times, batch, "videos/s", 0), extrapolated=False)
    return record | {"channels_last": channels_last, "compiled": compile} | environment(dev)


def sampling_record(mode, preset, batch, shape, start_step, dtype, nfe, timed: dict, extrapolated: bool) -> dict:
    record = {"benchmark": "sampling", "mode": mode, "preset": preset, "shape": shape, "batch": batch,
              "start_step": start_step, "dtype": dtype, "nfe": nfe, **timed, "extrapolated": extrapolated}
    return record | {"seconds_per_video": record["seconds_median"] / batch}


def extrapolate_sampling(forward: dict, nfe: int, overhead_seconds: float, start_step: int) -> dict:
    """Seconds per sampling run estimated as nfe x the measured seconds per evaluation (a `forward` record at
    the same batch) + the sampler's own measured cost; marked extrapolated."""
    median = nfe * forward["seconds_median"] + overhead_seconds
    timed = {"repeats": forward["repeats"], "warmup": forward["warmup"], "seconds_median": median,
             "seconds_min": nfe * forward["seconds_min"] + overhead_seconds,
             "throughput": forward["batch"] / median, "throughput_unit": "videos/s"}
    record = sampling_record(forward["mode"], forward["preset"], forward["batch"], forward["shape"], start_step,
                             forward["dtype"], nfe, timed, extrapolated=True)
    record["extrapolated_from"] = (f"{nfe} x the measured {forward['seconds_median']:.4g} s per evaluation "
                                   f"+ {overhead_seconds:.3g} s measured sampler overhead")
    keep = ("channels_last", "compiled", "device", "threads", "load_average", "torch", "code_version")
    return record | {k: forward[k] for k in keep if k in forward}


def floor_seconds(device: str) -> float | None:
    return next((s for name, s in FLOOR_SECONDS_PER_VIDEO.items() if name in device), None)


def add_ratios(records: list[dict]) -> None:
    """For each of our sampling records: speedup_vs_reference = reference seconds per video / ours, at the
    same batch and shape, and ratio_to_floor = ours / the device's bandwidth floor (None where none is known)."""
    refs = {(r["batch"], tuple(r["shape"][2:])): r for r in records
            if r["benchmark"] == "sampling" and r["mode"] == "reference"}
    for r in records:
        if r["benchmark"] != "sampling" or r["mode"] != "ours":
            continue
        ref = refs.get((r["batch"], tuple(r["shape"][2:])))
        r["speedup_vs_reference"] = ref["seconds_per_video"] / r["seconds_per_video"] if ref else None
        floor = floor_seconds(r["device"]) if r["start_step"] == 15 else None
        r["floor_seconds_per_video"] = floor
        r["ratio_to_floor"] = r["seconds_per_video"] / floor if floor else None


def video_setting(name: str, solver: str, steps: int | None) -> dict:
    """A named sampler setting of Free-Echo from t_i = 15 (ODE; the churn costs the same evaluations)."""
    return {"setting": name, "solver": solver, "steps": steps}


def cpu_sampling_settings() -> list[dict]:
    """The settings the cpu-sampling suite times: the paper's Heun over the schedule's 49 steps (97 NFE), the
    Euler steps that `generate` used before its quality study (49 NFE), and today's `generate` default."""
    default = DEFAULT_SAMPLER
    return [video_setting("paper: Heun, 49 steps", "heun", None),
            video_setting("before: Euler, 49 steps", "euler", None),
            video_setting(f"generate default: {default.solver}, {default.steps} steps", default.solver, default.steps)]


def cpu_sampling_suite(checkpoint, map_path, *, repeats: int = 1, batch: int = 4, variants: bool = True,
                       out=None, log=print) -> list[dict]:
    """Seconds per Free-Echo video (t_i = 15, a map file in, videos out: the OT pseudo video and the sampler,
    `synthesis.FreeEcho`) of a stored model on this machine's threads, for each of `cpu_sampling_settings`, then,
    for `generate`'s default, torch.compile, `batch` videos per call and bf16 autocast, each with its deviation
    from the eager float32 videos of the same seeds (grey levels of 255); last, the authors' cost profile on a
    net of the same preset (`bench_sampling`'s reference mode: 3 channels, 127 evaluations, float32) and each
    setting's `speedup_vs_reference`. The untimed warm-up of each run is one network evaluation (for a compiled
    net: its compilation, recorded as `warmup_seconds`)."""
    run = SuiteRun("cpu-sampling", None, Path(out) if out else None, log)
    pipe = FreeEcho.from_checkpoint(checkpoint)
    eager_net, preset = pipe.denoiser.net, load_checkpoint(checkpoint)["train_config"]["preset"]
    shape = [1, 1, pipe.frames, pipe.size, pipe.size]
    settings = cpu_sampling_settings()
    runs = [(s, 1, "float32", False) for s in settings]
    if variants:
        default = settings[-1]
        runs += [(default, 1, "float32", True), (default, batch, "float32", False), (default, batch, "float32", True),
                 (default, 1, "bfloat16", False)]
    eager_videos = {}
    for setting, n, dtype, compiled in runs:
        pipe.denoiser.net = torch.compile(eager_net) if compiled else eager_net
        sampler = SamplerConfig(setting["solver"], None, setting["steps"])
        x = torch.zeros([n] + shape[1:])
        start = time.perf_counter()
        with torch.no_grad(), autocast("cpu", dtype):
            pipe.denoiser(x, torch.ones(n))
        warmup = time.perf_counter() - start
        counted = CountingDenoiser(pipe.denoiser, "cpu", dtype)
        pipe.denoiser = counted
        with torch.no_grad():
            videos = []
            times = time_call(lambda: videos.append(pipe(map_path, n, 15, seed=0, sampler=sampler).square), "cpu",
                              repeats, warmup=0)
        pipe.denoiser = counted.D
        record = {"benchmark": "video", "setting": setting["setting"], "solver": setting["solver"],
                  "nfe": counted.calls // repeats, "start_step": 15, "preset": preset,
                  "checkpoint": str(checkpoint), "shape": [n] + shape[1:], "batch": n, "dtype": dtype,
                  "compiled": compiled, "warmup_seconds": warmup, **timing(times, n, "videos/s", 1),
                  "extrapolated": False}
        record["seconds_per_video"] = record["seconds_median"] / n
        key = setting["setting"]
        first = videos[-1][:1].astype(np.int16)
        if (dtype, compiled, n) == ("float32", False, 1):
            eager_videos[key] = first
        else:
            diff = np.abs(first - eager_videos[key])
            record |= {"max_abs_diff_grey": int(diff.max()), "mean_abs_diff_grey": float(diff.mean())}
        run.add(record | environment("cpu"))
    reference = bench_sampling("reference", preset, batch=1, frames=pipe.frames, size=pipe.size, start_step=15,
                               repeats=repeats)
    run.add(reference)
    for r in run.records:
        if r["benchmark"] == "video":
            r["speedup_vs_reference"] = reference["seconds_per_video"] / r["seconds_per_video"]
    run.save()
    return run.records
