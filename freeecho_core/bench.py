"""Benchmarks that store JSON (speed belongs here, not in timed tests). Each record names its device,
dtype, batch, thread count and the code version that produced it."""
from __future__ import annotations

import platform
import statistics
import time

import torch

from freeecho_core.checkpoint import code_version
from freeecho_core.edm import EDMPrecond
from freeecho_core.unet3d import UNet3D, count_parameters, unet3d_config


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def time_call(fn, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn() after `warmup` untimed calls (CUDA synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
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


def bench_forward(
    preset: str, *, batch: int = 1, frames: int = 8, size: int = 64, device: str = "cpu",
    dtype: str = "float32", repeats: int = 3, seed: int = 0,
) -> dict:
    """Seconds per network evaluation D(x, sigma) of a UNet3D preset on a (batch, 1, frames, size, size) video."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    net = UNet3D(unet3d_config(preset)).to(dev).eval()
    D = EDMPrecond(net)
    x = torch.randn(batch, 1, frames, size, size, device=dev)
    sigma = torch.full((batch,), 1.0, device=dev)
    autocast = torch.autocast(dev.type, dtype=getattr(torch, dtype), enabled=dtype != "float32")

    def evaluate():
        with torch.no_grad(), autocast:
            D(x, sigma)

    times = time_call(evaluate, dev, repeats)
    return {
        "benchmark": "forward", "preset": preset, "parameters": count_parameters(net),
        "shape": list(x.shape), "batch": batch, "device": device_description(dev), "dtype": dtype,
        "repeats": repeats, "seconds_median": statistics.median(times), "seconds_min": min(times),
        "torch": torch.__version__, "code_version": code_version(),
    }
