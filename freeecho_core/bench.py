"""Benchmarks that store JSON (speed belongs here, not in timed tests): issue 9.

What is timed: one network evaluation D(x, sigma) (per NFE), one video sampled with SDEdit from t_i = 15
(97 evaluations) and, side by side, the authors' cost profile (`reference` mode: 3 identical input channels,
float32, all 64 steps of stochastic Heun from pure noise, 127 evaluations; `sampler.reference_sdedit_sample`),
one training step, the OT solve of eq. (3) and the phantom. Every record names its benchmark, device, dtype,
batch, shape, repeats, median and minimum seconds, a derived throughput, whether a figure is extrapolated
rather than measured, the torch version and the code version (commit). On the CPU the load average is
recorded too: other processes on a shared machine slow a run down.

`run_suite` runs a named set (`smoke`: seconds, for CI; `cpu`: a few minutes on 2 cores, per-video figures
extrapolated from the measured per-evaluation time; `gpu`: everything at the paper size, measured) and
`results_table` turns stored JSON files into the rows of the book's benchmark page.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from freeecho_core.checkpoint import code_version, load_checkpoint
from freeecho_core.edm import EDMPrecond, karras_sigmas
from freeecho_core.sampler import reference_sdedit_sample, sdedit_sample
from freeecho_core.synthesis import AUTHORS_CHURN
from freeecho_core.unet3d import Level, UNet3D, count_parameters, pointwise, unet3d_config

REFERENCE_CHANNELS = 3  # the authors fed 3 identical grey channels
# Lower bound of the seconds per video (97 evaluations) from memory traffic, per GPU: issue 9's estimate for one
# H100 (~12 GB moved per fully fused evaluation). Other devices have no stated floor.
FLOOR_SECONDS_PER_VIDEO = {"H100": 0.43}


# ----------------------------------------------------------------------------- records and timing

def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} CPU, {torch.get_num_threads()} threads"


def environment(device: torch.device) -> dict:
    """The fields every record carries about where and with what it ran."""
    device = torch.device(device)
    env = {"device": device_description(device), "threads": torch.get_num_threads()}
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        env["load_average"] = round(os.getloadavg()[0], 2)  # > threads: the run shared its cores
    return env | {"torch": torch.__version__, "code_version": code_version()}


def time_call(fn, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn() after `warmup` untimed calls (CUDA synchronised)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def timing(times: list[float], items: float, unit: str, warmup: int) -> dict:
    """Median and minimum seconds of the repeats, and the throughput items / median in `unit`."""
    median = statistics.median(times)
    return {"repeats": len(times), "warmup": warmup, "seconds_median": median, "seconds_min": min(times),
            "throughput": items / median, "throughput_unit": unit}


def autocast(device: torch.device, dtype: str):
    """bf16 autocast for dtype 'bfloat16' on the device's type; nothing for 'float32'."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if dtype == "bfloat16" else nullcontext()


def check_video_size(preset: str, size: int) -> None:
    step = unet3d_config(preset).downsampling
    if size % step:
        raise ValueError(f"H and W must be multiples of {step} for preset {preset!r}, got size {size}")


# ----------------------------------------------------------------------------- the network

def build_denoiser(preset: str, *, channels: int = 1, device="cpu", channels_last: bool = False,
                   compile: bool = False, seed: int = 0) -> tuple[torch.nn.Module, EDMPrecond]:
    """A UNet3D preset with random weights in eval mode and its EDM denoiser (optionally channels-last 3-D
    weights and torch.compile'd). Returns (net, denoiser)."""
    torch.manual_seed(seed)
    net = UNet3D(unet3d_config(preset, channels=channels)).to(device).eval()
    # A trained net's last layer is not zero: with EDM's zero initialisation D = c_skip x, and every variant
    # of the network would agree trivially.
    torch.nn.init.normal_(net.final_conv.weight, std=0.1)
    if channels_last:
        for p in net.parameters():
            if p.ndim == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    D = EDMPrecond(torch.compile(net) if compile else net)
    return net, D


def video(batch: int, channels: int, frames: int, size: int, device, channels_last: bool = False) -> torch.Tensor:
    x = torch.rand(batch, 1, frames, size, size, device=device) * 2 - 1
    x = x.expand(-1, channels, -1, -1, -1).contiguous()  # the reference: identical channels
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def forward_gflop(preset: str, channels: int, frames: int, size: int) -> float:
    """Matrix-multiply and convolution GFLOP (2 per multiply-add) of one evaluation of one video, counted by
    torch's FlopCounterMode on the meta device (no compute). Elementwise work is not counted."""
    net = UNet3D(unet3d_config(preset, channels=channels)).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, channels, frames, size, size, device="meta"), torch.zeros(1, device="meta"))
    return counter.get_total_flops() / 1e9


def bench_forward(
    preset: str, *, batch: int = 1, frames: int = 8, size: int = 64, device: str = "cpu",
    dtype: str = "float32", repeats: int = 3, seed: int = 0, channels: int = 1, channels_last: bool = False,
    compile: bool = False, warmup: int = 1, reference_output: torch.Tensor | None = None,
) -> dict:
    """Seconds per network evaluation D(x, sigma) of a UNet3D preset on a (batch, channels, frames, size, size)
    video. channels=3 in float32 is the authors' cost profile. With `reference_output` (the float32 output of
    the same seeded net and input, or of its first samples) the record holds the largest absolute deviation of this variant's output
    from it: `max_abs_diff`, on x0_hat in [-1, 1] units."""
    check_video_size(preset, size)
    dev = torch.device(device)
    net, D = build_denoiser(preset, channels=channels, device=dev, channels_last=channels_last,
                            compile=compile, seed=seed)
    x = video(batch, channels, frames, size, dev, channels_last)
    sigma = torch.full((batch,), 1.0, device=dev)

    def evaluate():
        with torch.no_grad(), autocast(dev, dtype):
            return D(x, sigma)

    times = time_call(evaluate, dev, repeats, warmup)
    gflop = forward_gflop(preset, channels, frames, size)
    record = {
        "benchmark": "forward", "mode": "reference" if channels == REFERENCE_CHANNELS else "ours",
        "preset": preset, "parameters": count_parameters(net), "shape": list(x.shape), "batch": batch,
        "dtype": dtype, "channels_last": channels_last, "compiled": compile,
        **timing(times, batch, "video evaluations/s", warmup), "extrapolated": False,
    }
    record["seconds_per_video"] = record["seconds_median"] / batch
    record["gflop_per_video"] = gflop
    record["achieved_tflops"] = gflop * batch / record["seconds_median"] / 1e3
    if reference_output is not None:
        out = evaluate().float()[: len(reference_output)]  # a larger batch: its first samples are the same
        record["max_abs_diff"] = float((out - reference_output.to(out.device)).abs().max())
    return record | environment(dev)


def forward_output(preset: str, *, batch: int, frames: int, size: int, device="cpu", seed: int = 0) -> torch.Tensor:
    """The float32 output D(x, sigma = 1) of the seeded net on the seeded input that `bench_forward` times."""
    _, D = build_denoiser(preset, device=device, seed=seed)
    with torch.no_grad():
        return D(video(batch, 1, frames, size, device), torch.ones(batch, device=device))


# ----------------------------------------------------------------------------- sampling: ours and reference

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
        return sdedit_sample(D, init, karras_sigmas(), start_step, generator=gens, **AUTHORS_CHURN)
    if mode == "reference":
        return reference_sdedit_sample(D, init, karras_sigmas(), start_step, generator=gens, **AUTHORS_CHURN)
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


# ----------------------------------------------------------------------------- training

def bench_training(
    preset: str = "paper", *, batch: int = 16, frames: int = 24, size: int = 128, device: str = "cpu",
    bf16: bool = True, checkpointing: bool = False, repeats: int = 3, warmup: int = 1, seed: int = 0,
    compile: bool = False, cpu_dtype: str = "float32",
) -> dict:
    """Seconds per optimizer step of the training loop's own code (train.micro_batch_loss: the EDM loss, bf16
    autocast on CUDA when `bf16`, or `cpu_dtype` autocast on the CPU; backward; Adam; EMA) on random clips,
    without data loading; `compile` runs the denoiser through torch.compile, and the first step's seconds (the
    compilation) are recorded apart. On CUDA the peak memory is torch.cuda.max_memory_allocated; running out
    of memory is recorded, not raised."""
    from freeecho_core.train import TrainConfig, ema_decay, micro_batch_loss, sample_generators, update_ema

    check_video_size(preset, size)
    dev = torch.device(device)
    config = TrainConfig(preset=preset, frames=frames, size=size, batch_size=batch, bf16=bf16, seed=seed)
    net, D = build_denoiser(preset, device=dev, seed=seed)
    net.train().set_activation_checkpointing(checkpointing)
    D = torch.compile(D) if compile else D
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    clips = {"video": video(batch, 1, frames, size, dev)}
    step = [0]
    cpu_autocast = autocast(dev, cpu_dtype) if dev.type == "cpu" else nullcontext()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        gens = sample_generators(seed, list(range(step[0] * batch, (step[0] + 1) * batch)), dev)
        with cpu_autocast:
            loss = micro_batch_loss(D, clips, gens, config, dev)
        loss.backward()
        optimizer.step()
        update_ema(ema, net, ema_decay(config, (step[0] + 1) * batch))
        step[0] += 1

    dtype = cpu_dtype if dev.type == "cpu" else ("bfloat16" if bf16 else "float32")
    record = {"benchmark": "training", "preset": preset, "shape": [batch, 1, frames, size, size], "batch": batch,
              "dtype": dtype, "checkpointing": checkpointing, "compiled": compile}
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        if compile:
            first = time_call(train_step, dev, 1, warmup=0)[0]
            times = time_call(train_step, dev, repeats, warmup=max(warmup - 1, 0))
            record["first_step_seconds"] = first
        else:
            times = time_call(train_step, dev, repeats, warmup)
    except torch.cuda.OutOfMemoryError as err:
        del optimizer, clips
        torch.cuda.empty_cache()
        return record | {"error": f"out of memory: {str(err).splitlines()[0]}", "extrapolated": False} | environment(dev)
    record |= timing(times, 1, "it/s", warmup) | {"extrapolated": False}
    record["peak_memory_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None
    return record | environment(dev)


# The training settings of the cpu profile and the faster 8 x 32 x 32 clip, timed on the CPU: eager and compiled,
# one and two threads, bf16 autocast. (frames, size, batch, compile, threads, dtype)
CPU_TRAINING = [(16, 64, 4, False, 1, "float32"), (16, 64, 4, True, 1, "float32"), (16, 64, 4, False, 2, "float32"),
                (16, 64, 4, False, 1, "bfloat16"), (8, 32, 8, False, 1, "float32"), (8, 32, 8, True, 1, "float32")]


def cpu_training_suite(*, preset: str = "cpu", repeats: int = 3, configurations=CPU_TRAINING, out=None,
                       log=print) -> list[dict]:
    """Seconds per training step of the `cpu` preset on this CPU for each configuration (`CPU_TRAINING`); the
    thread count is set for each and restored after. Records go to `out` (JSON list) as they come."""
    run = SuiteRun("cpu-training", None, Path(out) if out else None, log)
    threads = torch.get_num_threads()
    try:
        for frames, size, batch, compiled, n_threads, dtype in configurations:
            torch.set_num_threads(n_threads)
            run.add(bench_training(preset, batch=batch, frames=frames, size=size, device="cpu", repeats=repeats,
                                   compile=compiled, cpu_dtype=dtype))
    finally:
        torch.set_num_threads(threads)
    return run.records


# ----------------------------------------------------------------------------- the stored model's videos (issue 17)

def video_setting(name: str, solver: str, steps: int | None) -> dict:
    """A named sampler setting of Free-Echo from t_i = 15 (ODE; the churn costs the same evaluations)."""
    return {"setting": name, "solver": solver, "steps": steps}


def cpu_sampling_settings() -> list[dict]:
    """The settings the cpu-sampling suite times: the paper's Heun over the schedule's 49 steps (97 NFE), the
    Euler steps that `generate` used before issue 17 (49 NFE), and today's `generate` default."""
    from freeecho_core.generate import GenerateConfig

    default = GenerateConfig()
    return [video_setting("paper: Heun, 49 steps", "heun", None),
            video_setting("before: Euler, 49 steps", "euler", None),
            video_setting(f"generate default: {default.solver}, {default.sampler_steps or 64 - default.start_step} steps",
                          default.solver, default.sampler_steps)]


def cpu_sampling_suite(checkpoint, map_path, *, repeats: int = 1, batch: int = 4, variants: bool = True,
                       out=None, log=print) -> list[dict]:
    """Seconds per Free-Echo video (t_i = 15, a map file in, videos out: the OT pseudo video and the sampler,
    `synthesis.FreeEcho`) of a stored model on this machine's threads, for each of `cpu_sampling_settings`, then,
    for `generate`'s default, torch.compile, `batch` videos per call and bf16 autocast, each with its deviation
    from the eager float32 videos of the same seeds (grey levels of 255); last, the authors' cost profile on a
    net of the same preset (`bench_sampling`'s reference mode: 3 channels, 127 evaluations, float32) and each
    setting's `speedup_vs_reference`. The untimed warm-up of each run is one network evaluation (for a compiled
    net: its compilation, recorded as `warmup_seconds`)."""
    from freeecho_core.synthesis import FreeEcho, SamplerConfig

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
        sampler = SamplerConfig(setting["solver"], stochastic_sampler=False, steps=setting["steps"])
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


def extrapolate_training(measured: dict, batch: int) -> dict:
    """A training record at `batch` from one measured at a smaller batch, assuming time linear in the batch
    (what the CPU shows: batching brings no per-sample gain there). Marked extrapolated."""
    factor = batch / measured["batch"]
    record = dict(measured, batch=batch, shape=[batch] + measured["shape"][1:], extrapolated=True,
                  seconds_median=measured["seconds_median"] * factor, seconds_min=measured["seconds_min"] * factor)
    record["throughput"] = 1 / record["seconds_median"]
    record["extrapolated_from"] = f"{factor:g} x the step time measured at batch {measured['batch']}"
    return record


def activation_memory(preset: str = "paper", *, batch: int = 16, frames: int = 24, size: int = 128) -> dict:
    """GB that autograd keeps for the backward pass of one float32 training forward, counted on the meta device
    (no compute, any machine): `without_checkpointing` (every saved tensor, views of one tensor counted once)
    and an estimate `with_checkpointing` (block inputs and what is saved outside the blocks, plus the largest
    block's activations, rebuilt one block at a time in backward). bf16 autocast roughly halves both;
    attention and convolution kernels on a GPU save somewhat different tensors."""
    net = UNet3D(unet3d_config(preset)).to("meta")
    x, c_noise = torch.zeros(batch, 1, frames, size, size, device="meta"), torch.zeros(batch, device="meta")
    blocks = [b for m in net.modules() if isinstance(m, Level) for b in (*m.blocks, m.spatial_attn, m.temporal_attn)]
    seen, per_block, inputs = {}, [], {}

    def pack(t):
        base = t if t._base is None else t._base
        seen[id(base)] = base.numel() * base.element_size()
        return t

    def saved_bytes():
        return sum(seen.values())

    starts = []
    hooks = [b.register_forward_pre_hook(lambda m, a: starts.append(saved_bytes())) for b in blocks]
    hooks += [b.register_forward_hook(lambda m, a, out: per_block.append(saved_bytes() - starts.pop())) for b in blocks]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, c_noise)
    without = saved_bytes()
    for h in hooks:
        h.remove()
    seen.clear()
    hooks = [b.register_forward_pre_hook(lambda m, a: inputs.__setitem__(id(a[0]), a[0].numel() * 4)) for b in blocks]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net.set_activation_checkpointing(True)(x, c_noise)
    for h in hooks:
        h.remove()
    return {"benchmark": "activation_memory", "preset": preset, "shape": list(x.shape), "batch": batch,
            "dtype": "float32", "without_checkpointing_gb": without / 1e9,
            "with_checkpointing_gb": (saved_bytes() + sum(inputs.values()) + max(per_block)) / 1e9,
            "largest_block_gb": max(per_block) / 1e9, "estimated": True, "extrapolated": False,
            "torch": torch.__version__, "code_version": code_version()}


# ----------------------------------------------------------------------------- the pieces around the network

def ot_problem(bins: int, phantom_frames: int = 16, phantom_height: int = 64):
    """The OT problem of eq. (3) for one phantom case: its ED 5-label map's grey-level atoms (source) and a
    `bins`-bin histogram of its frames' sector pixels (target). Returns (a, x_a, b, x_b)."""
    from freeecho_core.data.case import to_five_labels
    from freeecho_core.data.phantom import PhantomConfig, make_case
    from freeecho_core.data.histogram import intensity_histogram
    from freeecho_core.pseudo import source_atoms

    case = make_case(0, 0, "4CH", PhantomConfig(height=phantom_height, frames=phantom_frames))
    x_a, a, _ = source_atoms(to_five_labels(case.labels[0], case.sector))
    x_b, b = intensity_histogram(case.frames, case.sector, bins)
    return a, x_a, b, x_b


def bench_ot(bins: int, method: str, *, repeats: int = 3, problem=None) -> dict:
    """Seconds per OT plan between the pseudo image's grey levels and a `bins`-bin target histogram:
    `sinkhorn` (log-domain, reg 1e-3, float64; the paper's) or `exact` (1-D quantile matching)."""
    from freeecho_core.pseudo import exact_plan, sinkhorn_plan

    a, x_a, b, x_b = problem if problem is not None else ot_problem(bins)
    solve = {"sinkhorn": sinkhorn_plan, "exact": exact_plan}[method]
    _, info = solve(a, x_a, b, x_b)
    times = time_call(lambda: solve(a, x_a, b, x_b), "cpu", repeats, warmup=0)
    return {"benchmark": "ot", "method": method, "bins": bins, "shape": [len(a), len(b)], "batch": 1,
            "dtype": "float64", **timing(times, 1, "solves/s", 1), "extrapolated": False,
            **{k: info[k] for k in ("marginal_error_a", "marginal_error_b", "transport_cost")},
            "n_iter": info.get("n_iter")} | environment("cpu")


def bench_phantom(frames: int, height: int, *, repeats: int = 2) -> dict:
    """Seconds per rendered phantom case (data.phantom.make_case: labels and speckle video; numpy, one core)."""
    from freeecho_core.data.phantom import PhantomConfig, make_case

    config = PhantomConfig(height=height, frames=frames)
    shape = list(make_case(0, 0, "4CH", config).frames.shape)
    times = time_call(lambda: make_case(0, 1, "4CH", config), "cpu", repeats, warmup=0)
    return {"benchmark": "phantom", "shape": shape, "batch": 1, "dtype": "uint8",
            **timing(times, 1, "cases/s", 1), "extrapolated": False} | environment("cpu")


# ----------------------------------------------------------------------------- optimisation checks

def op_variants(frames: int, size: int, device, dim: int = 32, heads: int = 8, dim_head: int = 32) -> dict:
    """Alternative implementations of the full-resolution hot spots: name -> {variant: fn()} (the first
    variant is the baseline). Inputs are random, at the UNet's first level (dim channels, frames x size^2)."""
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, dim, frames, size, size, device=device, generator=g)
    w3 = torch.randn(dim, dim, 1, 3, 3, device=device, generator=g) * 0.05
    x_cl, w3_cl = (t.contiguous(memory_format=torch.channels_last_3d) for t in (x, w3))
    qkv_conv = torch.nn.Conv2d(dim, 3 * heads * dim_head, 1, bias=False).to(device)
    frames_2d = x.transpose(1, 2).reshape(frames, dim, size, size)
    q, k, v = (torch.randn(size * size, heads, frames, dim_head, device=device, generator=g) for _ in range(3))
    bias = torch.randn(heads, frames, frames, device=device, generator=g)

    def per_frame_conv2d():
        y = F.conv2d(frames_2d, w3[:, :, 0], padding=1)
        return y.reshape(1, frames, dim, size, size).transpose(1, 2)

    return {
        "temporal attention, relative-position bias mask": {
            "3-D mask (heads, T, T): math kernel": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
            "4-D mask (1, heads, T, T): fused kernel [kept]": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias[None]),
        },
        "1x1 projection to q, k, v (32 -> 768 channels)": {
            "Conv2d 1x1": lambda: qkv_conv(frames_2d).flatten(2),
            "batched matmul (unet3d.pointwise) [kept]": lambda: pointwise(qkv_conv, frames_2d.flatten(2)),
        },
        "per-frame 3x3 convolution": {
            "Conv3d (1, 3, 3) [kept]": lambda: F.conv3d(x, w3, padding=(0, 1, 1)),
            "Conv2d on the frames (reshape)": per_frame_conv2d,
            "Conv3d channels-last-3d": lambda: F.conv3d(x_cl, w3_cl, padding=(0, 1, 1)),
        },
    }


def bench_op_variants(*, frames: int, size: int, device: str = "cpu", repeats: int = 3) -> list[dict]:
    """Time each variant of `op_variants`; record its speedup over the op's baseline and its largest
    absolute difference from the baseline's output."""
    dev = torch.device(device)
    records = []
    with torch.no_grad():
        for op, variants in op_variants(frames, size, dev).items():
            baseline_out, baseline_s = None, None
            for variant, fn in variants.items():
                out = fn()
                times = time_call(fn, dev, repeats, warmup=0)
                baseline_out = out if baseline_out is None else baseline_out
                record = {"benchmark": "op", "op": op, "variant": variant, "shape": [1, 32, frames, size, size],
                          "batch": 1, "dtype": "float32", **timing(times, 1, "calls/s", 1), "extrapolated": False,
                          "max_abs_diff": float((out.float() - baseline_out.float()).abs().max())}
                baseline_s = baseline_s or record["seconds_median"]
                records.append(record | {"speedup": baseline_s / record["seconds_median"]} | environment(dev))
    return records


def profile_summary(fn, device, rows: int = 15) -> dict:
    """Where the time of one fn() call goes: the `rows` operators with the most self time (device time on
    CUDA, CPU time otherwise), in seconds and as shares of the total."""
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    fn()
    with profile(activities=activities) as prof:
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events)
    return {"total_seconds": total / 1e6, "top_ops": [
        {"name": e.key, "calls": e.count, "self_seconds": getattr(e, key) / 1e6, "share": getattr(e, key) / total}
        for e in events[:rows]]}


def bench_profile(what: str, preset: str, *, batch: int, frames: int, size: int, device="cpu",
                  dtype: str = "float32", checkpointing: bool = False) -> dict:
    """A profiler summary of one network evaluation (`forward`) or one training step (`training`)."""
    dev = torch.device(device)
    net, D = build_denoiser(preset, device=dev)
    x, sigma = video(batch, 1, frames, size, dev), torch.ones(batch, device=dev)
    if what == "forward":
        def fn():
            with torch.no_grad(), autocast(dev, dtype):
                D(x, sigma)
    else:
        net.train().set_activation_checkpointing(checkpointing)

        def fn():
            with autocast(dev, dtype):
                loss = D(x, sigma).float().square().mean()
            loss.backward()
    return {"benchmark": "profile", "what": what, "preset": preset, "shape": list(x.shape), "batch": batch,
            "dtype": dtype, "checkpointing": checkpointing, "extrapolated": False,
            **profile_summary(fn, dev)} | environment(dev)


# ----------------------------------------------------------------------------- suites

@dataclass(frozen=True)
class SuiteSizes:
    preset: str = "paper"  # UNet3D preset (paper: the authors' 3.1 M-parameter net)
    frames: int = 24  # K frames per video (paper: 24)
    size: int = 128  # S x S pixels (paper: 128)
    start_step: int = 15  # t_i: 97 network evaluations (paper Table 1's first setting)
    batches: tuple[int, ...] = (1, 8)  # sampling batches, ours and the reference
    dtypes: tuple[str, ...] = ("bfloat16", "float32")  # ours; the reference is always float32
    measure_sampling: bool = True  # False: per video = evaluations x the measured time per evaluation
    forward_repeats: int = 3  # timed network evaluations per configuration
    sampling_repeats: int = 1  # timed sampling runs per configuration
    variant_frames: int = 24  # video of the whole-network variants (layout, dtype, batching) ...
    variant_size: int = 128  # ... and of the operator variants
    variant_batch: int = 8  # batch of the whole-network variants (the batching variant doubles it)
    train_batch: int = 16  # the batch the training figure is for (paper: 16)
    train_measured_batch: int = 16  # the batch actually run; smaller: the figure is extrapolated
    train_frames: int = 24
    train_size: int = 128
    train_repeats: int = 3
    train_checkpointing: tuple[bool, ...] = (True, False)  # activation checkpointing settings to time
    ot_bins: tuple[int, ...] = (256, 1024)  # target histogram bins of the OT solve
    phantom_sizes: tuple[tuple[int, int], ...] = ((16, 64), (24, 128))  # (frames, height) of phantom cases
    profile: bool = True  # store a profiler summary of one evaluation (and, on CUDA, one training step)


SUITES = {
    "smoke": SuiteSizes(preset="tiny", frames=2, size=8, batches=(1, 2), dtypes=("float32",), forward_repeats=1,
                        variant_frames=2, variant_size=8, variant_batch=1, train_batch=4, train_measured_batch=2,
                        train_frames=2, train_size=8, train_repeats=1, train_checkpointing=(False,),
                        ot_bins=(32,), phantom_sizes=((2, 16),)),
    "cpu": SuiteSizes(batches=(1,), dtypes=("float32",), measure_sampling=False, forward_repeats=2,
                      variant_frames=16, variant_size=64, variant_batch=1, train_measured_batch=1, train_repeats=1,
                      train_checkpointing=(False,)),
    "gpu": SuiteSizes(),
}


class SuiteRun:
    """Collects a suite's records, printing one line per record and rewriting `out` after each (a run that is
    cut short keeps what it measured)."""

    def __init__(self, name: str, sizes: SuiteSizes, out: Path | None, log):
        self.name, self.sizes, self.out, self.log, self.records = name, sizes, out, log, []

    def add(self, record: dict) -> dict:
        record = {"suite": self.name} | record
        self.records.append(record)
        self.log(summary_line(record))
        self.save()
        return record

    def save(self) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.records, indent=2) + "\n")


def run_suite(name: str, *, device: str = "cpu", compile: bool = False, out=None, log=print, **overrides) -> list[dict]:
    """Run the `smoke`, `cpu` or `gpu` suite on `device` (keyword overrides replace SuiteSizes fields, e.g. a
    tiny dry run of the gpu suite on the CPU). `compile` adds torch.compile'd variants of our network. Records go
    to `out` (JSON list) as they come; the list is returned, with the ratios of `add_ratios` filled in."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}")
    sizes = replace(SUITES[name], **overrides)
    run = SuiteRun(name, sizes, Path(out) if out else None, log)
    run.add({"benchmark": "suite", "sizes": asdict(sizes), "compile": compile, "extrapolated": False}
            | environment(device))
    suite_sampling(run, device, compile)
    suite_variants(run, device, compile)
    suite_training(run, device)
    for bins in sizes.ot_bins:
        # Smoke: a 32-row phantom; at 16 rows a target histogram of a few hundred pixels has isolated grey levels
        # on which Sinkhorn at reg 1e-3 stalls (a marginal error of 1e-7 after 100,000 iterations).
        problem = ot_problem(bins, *((2, 32) if name == "smoke" else (16, 64)))
        for method, repeats in (("sinkhorn", 3), ("exact", 20)):
            run.add(bench_ot(bins, method, repeats=repeats, problem=problem))
    for frames, height in sizes.phantom_sizes:
        run.add(bench_phantom(frames, height))
    if sizes.profile:
        run.add(bench_profile("forward", sizes.preset, batch=sizes.variant_batch, frames=sizes.variant_frames,
                              size=sizes.variant_size, device=device, dtype=sizes.dtypes[0]))
        if torch.device(device).type == "cuda":
            run.add(bench_profile("training", sizes.preset, batch=sizes.train_batch, frames=sizes.train_frames,
                                  size=sizes.train_size, device=device, dtype="bfloat16", checkpointing=True))
    add_ratios(run.records)
    run.save()
    return run.records


def suite_sampling(run: SuiteRun, device: str, compile: bool) -> None:
    """Per-evaluation times of ours and the reference, then per-video times: measured (a full sampling run)
    or extrapolated from the per-evaluation times."""
    s = run.sizes
    video_kw = dict(frames=s.frames, size=s.size, device=device)
    ours = [dict(batch=b, dtype=d) for b in s.batches for d in s.dtypes]
    ours += [dict(batch=b, dtype=s.dtypes[0], compile=True) for b in s.batches] if compile else []
    runs = [("ours", kw) for kw in ours] + [("reference", dict(batch=b, dtype="float32")) for b in s.batches]
    forwards = [run.add(bench_forward(s.preset, repeats=s.forward_repeats, **video_kw, **kw,
                                      channels=REFERENCE_CHANNELS if mode == "reference" else 1))
                for mode, kw in runs]
    for (mode, kw), forward in zip(runs, forwards):
        if s.measure_sampling:
            run.add(bench_sampling(mode, s.preset, start_step=s.start_step, repeats=s.sampling_repeats,
                                   **video_kw, **kw))
        else:
            nfe, overhead = sampler_cost(mode, batch=kw["batch"], frames=s.frames, size=s.size,
                                         start_step=s.start_step, device=device)
            run.add(extrapolate_sampling(forward, nfe, overhead, s.start_step))


def suite_variants(run: SuiteRun, device: str, compile: bool) -> None:
    """Whole-network variants of our evaluation at the variant size, each with its speedup over float32 and
    its output's largest deviation from float32's, then the operator variants."""
    s = run.sizes
    kw = dict(frames=s.variant_frames, size=s.variant_size, device=device, repeats=s.forward_repeats)
    variants = [dict(dtype="float32"), dict(dtype="bfloat16"), dict(dtype="float32", channels_last=True),
                dict(dtype="bfloat16", channels_last=True)] + ([dict(dtype="bfloat16", compile=True)] if compile else [])
    reference = forward_output(s.preset, batch=s.variant_batch, frames=s.variant_frames, size=s.variant_size,
                               device=device)
    base = None
    for v in variants + [dict(dtype="float32", batch=2 * s.variant_batch)]:
        record = bench_forward(s.preset, **({"batch": s.variant_batch} | v), **kw, reference_output=reference)
        base = base or record
        speedup = base["seconds_per_video"] / record["seconds_per_video"]
        run.add(record | {"benchmark": "forward_variant", "speedup_vs_float32": speedup})
    for record in bench_op_variants(frames=s.variant_frames, size=s.variant_size, device=device,
                                    repeats=s.forward_repeats):
        run.add(record)


def suite_training(run: SuiteRun, device: str) -> None:
    s = run.sizes
    run.add(activation_memory(s.preset, batch=s.train_batch, frames=s.train_frames, size=s.train_size))
    for checkpointing in s.train_checkpointing:
        record = run.add(bench_training(s.preset, batch=s.train_measured_batch, frames=s.train_frames,
                                        size=s.train_size, device=device, checkpointing=checkpointing,
                                        repeats=s.train_repeats, warmup=0 if run.name == "cpu" else 1))
        if s.train_measured_batch != s.train_batch and "error" not in record:
            run.add(extrapolate_training({k: v for k, v in record.items() if k != "suite"}, s.train_batch))


# ----------------------------------------------------------------------------- reading stored results

def summary_line(r: dict) -> str:
    """One printed line per record."""
    if r["benchmark"] == "suite":
        return f"suite {r['suite']}: {r['device']}, torch {r['torch']}, commit {r['code_version']['commit'][:10]}"
    if "error" in r:
        return f"{r['benchmark']} {r.get('shape')}: {r['error']}"
    if r["benchmark"] == "activation_memory":
        return (f"activation memory (estimate) {r['shape']}: {r['without_checkpointing_gb']:.1f} GB, "
                f"{r['with_checkpointing_gb']:.1f} GB with checkpointing")
    if r["benchmark"] == "profile":
        top = ", ".join(f"{o['name']} {o['share']:.0%}" for o in r["top_ops"][:4])
        return f"profile {r['what']} {r['shape']}: {r['total_seconds']:.3f} s; {top}"
    extra = " (extrapolated)" if r.get("extrapolated") else ""
    return (f"{r['benchmark']} [{describe(r)}] {r['shape']} {r['dtype']}: {r['seconds_median']:.4g} s median, "
            f"{r['throughput']:.4g} {r['throughput_unit']}{extra}")


def describe(r: dict) -> str:
    """What a record measured, in words."""
    parts = [r.get("preset"), r.get("mode"), r.get("setting"), r.get("op"), r.get("variant"), r.get("method"),
             r.get("what")]
    if r.get("bins"):
        parts.append(f"{r['bins']} bins")
    if r.get("nfe"):
        parts.append(f"{r['nfe']} NFE")
    if r.get("channels_last"):
        parts.append("channels-last")
    if r.get("compiled"):
        parts.append("compiled")
    if r.get("checkpointing"):
        parts.append("checkpointing")
    if r.get("benchmark") == "training" and r.get("threads"):
        parts.append(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}")
    return ", ".join(p for p in parts if p)


def stored_suites(folder) -> dict[str, list[dict]]:
    """The stored benchmark runs of a folder (results/bench): {file stem: records} of each JSON file that holds a
    list of records; other JSON there (the quality study, nfe-quality.json) is not a timing run."""
    suites = {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}
    return {name: records for name, records in suites.items() if isinstance(records, list)}


def results_table(paths) -> list[dict]:
    """The rows of the benchmark page from stored suite JSON files: one row per timed record, with the device,
    dtype, batch, shape, seconds, throughput, whether it is extrapolated, the speedup over the reference mode
    and the ratio to the bandwidth floor where they apply, and the commit."""
    rows = []
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            if r["benchmark"] in ("suite", "profile", "activation_memory") or "error" in r:
                continue
            rows.append({
                "file": Path(path).name, "benchmark": r["benchmark"], "mode": r.get("mode"), "what": describe(r),
                "device": r["device"],
                "dtype": r["dtype"], "batch": r["batch"], "shape": "x".join(map(str, r["shape"])),
                "seconds": r["seconds_median"], "per_video_s": r.get("seconds_per_video"),
                "throughput": f"{r['throughput']:.3g} {r['throughput_unit']}",
                "extrapolated": bool(r.get("extrapolated")),
                "speedup_vs_reference": r.get("speedup_vs_reference"), "ratio_to_floor": r.get("ratio_to_floor"),
                "speedup": r.get("speedup_vs_float32", r.get("speedup")), "max_abs_diff": r.get("max_abs_diff"),
                "commit": r["code_version"]["commit"][:10] + ("+" if r["code_version"].get("dirty") else ""),
            })
    return rows


# Issue 9's targets for one H100 at the paper size (24 x 128 x 128, t_i = 15): (what, "at most"/"at least", value).
H100_TARGETS = (
    ("sampling, ours, batch 8: seconds per video", "at most", 0.6),
    ("sampling, batch 8: speedup over the reference mode", "at least", 5.0),
    ("training, batch 16: optimizer steps per second", "at least", 2.0),
    ("training, batch 16: peak memory (GB)", "at most", 70.0),
)


def measured_at_paper_size(r: dict, benchmark: str, batch: int) -> bool:
    """A measured (not extrapolated, not failed) record of the paper net at 24 x 128 x 128 and this batch."""
    return (r["benchmark"] == benchmark and r.get("preset") == "paper" and r["batch"] == batch
            and r["shape"][2:] == [24, 128, 128] and not r.get("extrapolated") and "error" not in r)


def target_rows(records: list[dict]) -> list[dict]:
    """Issue 9's H100 targets against one stored suite: per target the best measured value (None where the
    suite measured nothing that qualifies, e.g. a CPU suite that extrapolates), and whether it is met."""
    ours = [r for r in records if measured_at_paper_size(r, "sampling", 8) and r["mode"] == "ours"
            and r["start_step"] == 15]
    train = [r for r in records if measured_at_paper_size(r, "training", 16)]
    fastest = max(train, key=lambda r: r["throughput"], default=None)
    reached = [
        min((r["seconds_per_video"] for r in ours), default=None),
        max((r["speedup_vs_reference"] for r in ours if r.get("speedup_vs_reference")), default=None),
        fastest["throughput"] if fastest else None,
        fastest["peak_memory_gb"] if fastest else None,
    ]
    rows = []
    for (what, bound, target), value in zip(H100_TARGETS, reached):
        met = None if value is None else (value <= target if bound == "at most" else value >= target)
        rows.append({"target": what, "bound": f"{bound} {target:g}", "reached": value, "met": met})
    return rows
