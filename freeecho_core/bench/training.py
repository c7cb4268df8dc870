"""One optimizer step of the EDM loss (eq. 2 of EDM, `train.micro_batch_loss`): steps per second and peak
memory, and the cpu profile's training settings timed eager and compiled, on one and two threads.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from pathlib import Path

import torch

from freeecho_core.bench.network import build_denoiser, video
from freeecho_core.bench.report import SuiteRun
from freeecho_core.bench.timing import autocast, check_video_size, environment, time_call, timing
from freeecho_core.train import TrainConfig, ema_decay, micro_batch_loss, sample_generators, update_ema


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


def extrapolate_training(measured: dict, batch: int) -> dict:
    """A training record at `batch` from one measured at a smaller batch, assuming time linear in the batch
    (what the CPU shows: batching brings no per-sample gain there). Marked extrapolated."""
    factor = batch / measured["batch"]
    record = dict(measured, batch=batch, shape=[batch] + measured["shape"][1:], extrapolated=True,
                  seconds_median=measured["seconds_median"] * factor, seconds_min=measured["seconds_min"] * factor)
    record["throughput"] = 1 / record["seconds_median"]
    record["extrapolated_from"] = f"{factor:g} x the step time measured at batch {measured['batch']}"
    return record
