"""Records and timing shared by every benchmark: the machine, the code version, repeated timed calls.

Every record names its benchmark, device, dtype, batch, shape, repeats, median and minimum seconds, a derived
throughput, whether a figure is extrapolated rather than measured, the torch version and the code version
(commit). On the CPU the load average is recorded too: other processes on a shared machine slow a run down.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from freeecho_core.checkpoint import code_version
from freeecho_core.unet3d import unet3d_config


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
