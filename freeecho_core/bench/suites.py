"""Named sets of benchmarks (`freeecho bench --suite NAME`): `smoke` (seconds, for CI), `cpu` (a few
minutes on 2 cores, per-video figures extrapolated from the measured per-evaluation time) and `gpu` (everything
at the paper size, measured). Each run writes its records as JSON under results/bench/.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from freeecho_core.bench.network import (REFERENCE_CHANNELS, activation_memory, bench_forward, bench_op_variants,
                                         bench_profile, forward_output)
from freeecho_core.bench.pipeline import bench_ot, bench_phantom, ot_problem
from freeecho_core.bench.report import SuiteRun
from freeecho_core.bench.sampling import add_ratios, bench_sampling, extrapolate_sampling, sampler_cost
from freeecho_core.bench.timing import environment
from freeecho_core.bench.training import bench_training, extrapolate_training


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
