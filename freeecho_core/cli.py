"""The `freeecho` command: a thin layer over the package (the notebooks call the same functions)."""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import cv2
import torch
import torch.distributed as dist

from freeecho_core.bench.data import data_suite
from freeecho_core.bench.network import bench_forward
from freeecho_core.bench.sampling import cpu_sampling_suite
from freeecho_core.bench.suites import SUITES, run_suite
from freeecho_core.bench.training import cpu_training_suite
from freeecho_core.checkpoint import clip_config, load_checkpoint
from freeecho_core.data.anatomy_stats import SIZE as ANATOMY_SIZE, anatomy_lines, anatomy_statistics, ed_lv_records
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import CACHE_DIR_VARIABLE, SPLITS, EchoClips, detect_format
from freeecho_core.data.make_dataset import FORMATS, make_phantom_dataset
from freeecho_core.data.maps import CONVENTIONS
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.data.stats import folder_statistics, summary_rows
from freeecho_core.edm import karras_sigmas
from freeecho_core.files import check_output_folder, folder_lock, write_text_atomically
from freeecho_core.generate import VIDEO_FORMATS, GenerateConfig, generate_from_map
from freeecho_core.guidance import GUIDES, Guide
from freeecho_core.motion import EF_RANGE
from freeecho_core.options import add_options, at_least, config_values
from freeecho_core.profiles import load_profile, profile_file, profile_section
from freeecho_core.progress import clear_bars
from freeecho_core.sampler import DEFAULT_SAMPLER, SOLVERS, SamplerConfig
from freeecho_core.study.augment import AugmentStudyConfig, run_augment_study, summary_lines as augment_summary_lines
from freeecho_core.study.ef import (STUDY_EFS, EFStudyConfig, check_reader, reader_lines as ef_reader_lines,
                                   run_ef_study, summary_lines as ef_summary_lines)
from freeecho_core.study.guided import GuidedStudyConfig, run_guided_study, summary_lines as guided_summary_lines
from freeecho_core.study.model_card import (held_out_scores, record_held_out_scores, write_model_card,
                                            write_segmenter_card)
from freeecho_core.study.nfe import (REFERENCE, STUDY_NFE, STUDY_SOLVERS, StudyConfig, run_study, steps_for_nfe,
                                     summary_lines as nfe_summary_lines)
from freeecho_core.study.scoring import evaluate
from freeecho_core.study.segmenter import load_segmenter, seg_config_from_profile, train_segmenter, transfer_report
from freeecho_core.study.tables import evaluation_lines
from freeecho_core.study.videos import EvalConfig, own_clsfree_sampler
from freeecho_core.synthesis import DEFAULT_CHECKPOINT, EXAMPLE_MAP
from freeecho_core.train import MODEL_KINDS, config_from_profile, train
from freeecho_core.unet3d import PRESETS, UNet3D, count_parameters


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the command, the option, what was expected)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def resolve_device(option: str, local_rank: int = 0) -> str:
    """--device: auto (the local GPU if there is one, else the CPU), cpu, cuda or cuda:N; refused when absent."""
    if option == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(option)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {option}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {option}: this machine has no CUDA GPU that torch {torch.__version__} can use; "
                         f"use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {option}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(device)


def cmd_info(args: argparse.Namespace) -> None:
    for name, cfg in PRESETS.items():
        print(f"preset {name}: {count_parameters(UNet3D(cfg)):,} parameters  {cfg}")
    sigmas = karras_sigmas()
    print("Karras schedule, 64 steps: " + ", ".join(f"t_i={i}: sigma={sigmas[i]:.4g}" for i in (0, 15, 35, 55, 63)))


def cmd_bench(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if args.suite:
        if args.suite == "data":
            report = data_suite(args.counts, out=args.out)
            print(f"{sum(len(d['runs']) for d in report['datasets'])} loader runs" +
                  (f"; wrote {args.out}" if args.out else ""))
            return
        if args.suite == "cpu-training":
            records = cpu_training_suite(repeats=args.repeats, out=args.out)
        elif args.suite == "cpu-sampling":
            if not args.map.is_file():
                raise ValueError(f"--map {args.map}: no such file; expected an ED label map (PNG or NIfTI)")
            records = cpu_sampling_suite(args.checkpoint, args.map, repeats=args.repeats, batch=args.batch or 4,
                                         out=args.out)
        else:
            records = run_suite(args.suite, device=device, compile=args.compile, out=args.out)
        print(f"{len(records)} records" + (f"; wrote {args.out}" if args.out else ""))
        return
    records = []
    for preset in args.preset:
        record = bench_forward(preset, batch=args.batch or 1, frames=args.frames, size=args.size,
                               device=device, dtype=args.dtype, repeats=args.repeats)
        print(f"{preset}: {record['seconds_median']:.4f} s per network evaluation "
              f"({record['shape']}, {record['dtype']}, {record['device']})")
        records.append(record)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=2) + "\n")
        print(f"wrote {args.out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    config = config_from_profile(profile_section(args.profile, "train"), source=str(profile_file(args.profile)))
    clip = clip_config(asdict(config))
    for split in args.splits:
        clips = EchoClips(args.data, split, clip, seed=config.seed, workers=args.workers)
        if not len(clips):
            print(f"{split}: no clips")
            continue
        start = time.perf_counter()
        store = clips.prepare()
        if store is None:
            raise ValueError(f"--data {args.data}: the dataset folder cannot be written; give --cache-dir")
        print(f"{split}: {len(store)} clips of {clip.frames} x {clip.size} x {clip.size} in {store.folder} "
              f"({store.nbytes() / 1e6:.1f} MB, {store.nbytes() / len(store) / 1e6:.2f} MB per clip; "
              f"{time.perf_counter() - start:.1f} s)")


def cmd_phantom(args: argparse.Namespace) -> None:
    if args.stats:
        if args.out is not None or args.format is not None:
            raise ValueError(f"--stats {args.stats} measures a folder and writes nothing; drop "
                             f"{'--out' if args.out is not None else '--format'} (or --stats, to render one)")
        rows = summary_rows(folder_statistics(args.stats, args.limit))
        print(f"{'statistic':>16}  {'median':>8}  range over {rows[0]['recordings']} recordings ({args.stats})")
        for r in rows:
            print(f"{r['statistic']:>16}  {r['median']:8.3f}  [{r['min']:.3f}, {r['max']:.3f}]")
        print(f"anatomy of the end-diastolic LV, masks squared to {ANATOMY_SIZE} px ({args.stats}):")
        print("\n".join(anatomy_lines(anatomy_statistics(ed_lv_records(args.stats, args.limit)))))
        return
    if args.format is None or args.out is None:
        raise ValueError("give --format and --out to render a dataset, or --stats DIR to measure one")
    config = PhantomConfig(**config_values(args, PhantomConfig))
    out = make_phantom_dataset(args.out, args.format, args.count, args.seed, config, workers=args.workers)
    print(f"wrote {args.count} phantom {'patients' if args.format.startswith('camus') else 'videos'} to {out}")


def cmd_train(args: argparse.Namespace) -> None:
    overrides = {"kind": args.kind} | ({"steps": args.steps} if args.steps is not None else {})
    config = config_from_profile(profile_section(args.profile, args.section),
                                 source=str(profile_file(args.profile)), section=args.section, **overrides)
    run_dir = args.run_dir or Path("runs") / Path(args.profile).stem / config.kind
    check_output_folder(run_dir, "--run-dir")
    device = resolve_device(args.device, local_rank())
    with distributed(device) as (rank, world_size), \
            folder_lock(run_dir, "--run-dir") if rank == 0 else nullcontext():  # one training per run folder
        before = load_checkpoint(run_dir / "checkpoint.pt")["step"] if args.resume else 0
        train(config, args.data, run_dir, resume=args.resume, device=device, rank=rank, world_size=world_size,
              other_data=args.other_data)
        if rank:
            return
        if before == config.steps:
            print(f"{run_dir}/checkpoint.pt is already at step {before} of {config.steps}: nothing to train")
            return
        section = f" --section {args.section}" if args.section != "train" else ""
        steps = f" --steps {args.steps}" if args.steps is not None else ""
        command = f"freeecho train --profile {args.profile}{section} --data {args.data} --kind {config.kind}" \
                  f"{steps} --run-dir {run_dir} --resume"
        card = write_model_card(run_dir, args.data, command)
    print(f"trained {config.kind} from step {before} to step {config.steps}: {run_dir}/checkpoint.pt, "
          f"{run_dir}/ema.pt, {run_dir}/log.csv, {card}")


def cmd_segmenter(args: argparse.Namespace) -> None:
    profile_section(args.profile, "train")
    config = seg_config_from_profile(load_profile(args.profile), args.section)
    out = args.out or Path("runs") / Path(args.profile).stem / "segmenter.pt"
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; expected the segmenter file to write (e.g. segmenter.pt)")
    check_output_folder(out.parent, "--out")
    check_test_on(args.test_on)
    device = resolve_device(args.device)
    train_segmenter(config, args.data, out, device=device)
    command = f"freeecho segmenter --profile {args.profile} --data {args.data} --out {out}"
    command += (f" --section {args.section}" if args.section != "segment" else "") + \
        (f" --test-on {args.test_on}" if args.test_on else "")
    card = write_segmenter_card(out, command)
    net, payload = load_segmenter(out)
    dice = ", ".join(f"{name} {value:.3f}" for name, value in payload["val_dice"].items())
    print(f"wrote {out} and {card}; held-out (VAL) Dice: {dice or 'no VAL clips'}")
    if args.test_on:
        report = transfer_report(net, args.test_on, ClipConfig(frames=config.frames, size=config.size))
        report_path = out.with_suffix(".transfer.json")
        report_path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"--test-on {args.test_on}: Dice LV median {report['dice_lv_median']:.3f} "
              f"[{report['dice_lv_min']:.3f}-{report['dice_lv_max']:.3f}], mean {report['dice_lv_mean']:.3f} over "
              f"{report['frames']} labelled frames of {report['recordings']} recordings (wrote {report_path})")


def cmd_generate(args: argparse.Namespace) -> None:
    config = GenerateConfig(**config_values(args, GenerateConfig), sampler=sampler_from(args), guide=guide_from(args))
    device = resolve_device(args.device)
    check_output_folder(args.out, "--out")
    with folder_lock(args.out, "--out"):
        result = generate_from_map(args.map, args.checkpoint, args.out, config, convention=args.labels,
                                   data=args.data, video_format=args.format, device=device, progress=True,
                                   es_map_path=args.es_map)
    n, K, h, w = result["videos"].shape
    print(f"wrote {n} videos of {K} frames ({h} x {w} pixels, {result['fps']:.1f} fps; map read as "
          f"{result['convention']} labels) to {args.out}")


def sampler_from(args: argparse.Namespace, cap_steps: bool = True) -> SamplerConfig:
    """The SamplerConfig of `add_options(parser, SamplerConfig, ...)`'s options; an option a command does not
    offer (--guidance on generate) keeps the default's value."""
    values = config_values(args, SamplerConfig, [n for n in SAMPLER_OPTIONS if hasattr(args, n)])
    return SamplerConfig(**({n: getattr(DEFAULT_SAMPLER, n) for n in SAMPLER_OPTIONS} | values), cap_steps=cap_steps)


SAMPLER_OPTIONS = ["solver", "churn", "steps", "guidance"]


def add_guide_options(parser: argparse.ArgumentParser, flag: bool = True) -> None:
    """The guide's settings (`guidance.Guide`) and, with `flag`, --guide to turn it on."""
    if flag:
        parser.add_argument("--guide", choices=GUIDES, help="training-free guidance towards the pseudo video (not "
                            "the paper's): ilvr, its low band after each step; nc, a calibrated start; ilvr-nc, both "
                            "(default: none, the paper's Free-Echo)")
    add_options(parser, Guide)


def guide_from(args: argparse.Namespace, name: str | None = None) -> Guide | None:
    """The Guide of `add_guide_options`' options: of --guide, or of `name`; None without either."""
    name = name or getattr(args, "guide", None)
    return None if name is None else Guide.named(name, **config_values(args, Guide))


@contextmanager
def distributed(device: str):
    """The process group of a torchrun launch (WORLD_SIZE > 1: NCCL on GPUs, else Gloo) for the block, destroyed
    after it; yields (rank, world_size). A plain launch is rank 0 of 1."""
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world_size > 1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
    try:
        yield rank, world_size
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def local_rank() -> int:
    """The GPU index of this process under torchrun (0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def cmd_evaluate(args: argparse.Namespace) -> None:
    # Steps re-spaced at every t_i: the start is all that differs between the Free-Echo rows.
    sampler = sampler_from(args, cap_steps=False)
    config = EvalConfig(**config_values(args, EvalConfig), sampler=sampler, guide=Guide(**config_values(args, Guide)),
                        clsfree_sampler=own_clsfree_sampler(sampler, args.clsfree_solver, args.clsfree_sampler_steps))
    device = resolve_device(args.device, local_rank())  # under torchrun the maps are sharded
    if args.segmenter is not None and not args.segmenter.is_file():
        raise ValueError(f"--segmenter {args.segmenter}: no such file; expected a checkpoint of freeecho segmenter")
    weights = {"inception": args.inception_weights, "i3d": args.i3d_weights, "r2plus1d": args.r2plus1d_weights}
    check_output_folder(args.out, "--out")
    with distributed(device) as (rank, world_size), \
            folder_lock(args.out, "--out") if rank == 0 else nullcontext():
        report = evaluate(args.data, args.unconditional, args.clsfree, args.out, config, split=args.split,
                          feature_weights=weights, device=device, rank=rank, world_size=world_size,
                          max_maps=args.max_maps, segmenter=args.segmenter, compile=args.compile)
    if report is None:
        return
    print("\n".join(evaluation_lines(report)))
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    if args.model_cards:
        scores = held_out_scores(report, args.command_line)
        for role, checkpoint in (("unconditional", args.unconditional), ("clsfree", args.clsfree)):
            card = record_held_out_scores(checkpoint, scores[role]) if checkpoint and role in scores else None
            if card:
                print(f"added the {role} model's scores to {card}")


def grid_entry(text: str) -> list[tuple[str, int]]:
    """SOLVER:NFE[,NFE...] -> [(solver, nfe), ...]."""
    solver, _, nfes = text.partition(":")
    if solver not in SOLVERS or not nfes:
        raise argparse.ArgumentTypeError(f"expected SOLVER:NFE,NFE,... with a solver among {sorted(SOLVERS)}, "
                                         f"got {text!r}")
    try:
        settings = [(solver, int(n)) for n in nfes.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers of evaluations after {solver}:, got {nfes!r}")
    for setting in settings:
        try:
            steps_for_nfe(*setting)
        except ValueError as why:
            raise argparse.ArgumentTypeError(str(why))
    return settings


def cmd_nfe_study(args: argparse.Namespace) -> None:
    grid = tuple(s for entry in args.grid for s in entry) if args.grid else StudyConfig.grid
    if REFERENCE not in grid:
        raise ValueError(f"--grid must hold the study's reference setting, {REFERENCE[0]}:{REFERENCE[1]}")
    config = StudyConfig(grid=grid, **config_values(args, StudyConfig))
    study = run_study(args.data, args.unconditional, args.clsfree, args.segmenter, args.out, config,
                      device=resolve_device(args.device), compile=args.compile, json_path=args.json)
    print("\n".join(nfe_summary_lines(study)))
    print(f"wrote {args.json or Path(args.out) / 'study.json'}")


def check_ef_study_inputs(args: argparse.Namespace, reads: str) -> None:
    """The --segmenter file (what the study `reads` with it) and --efs in the range a pseudo video beats with."""
    if not args.segmenter.is_file():
        raise ValueError(f"--segmenter {args.segmenter}: no such file; the study reads {reads}")
    if not EF_RANGE[0] <= min(args.efs) <= max(args.efs) <= EF_RANGE[1]:
        raise ValueError(f"--efs must lie in [{EF_RANGE[0]}, {EF_RANGE[1]}], got {args.efs}")


def cmd_ef_reader(args: argparse.Namespace) -> None:
    check_ef_study_inputs(args, "the EF of recorded clips and pseudo videos")
    report = check_reader(args.data, args.segmenter, tuple(args.efs), args.max_maps, args.seed,
                          resolve_device(args.device))
    print("\n".join(ef_reader_lines(report)))
    if args.out:
        check_output_folder(args.out.parent, "--out")
        write_text_atomically(args.out, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


def cmd_ef_study(args: argparse.Namespace) -> None:
    check_ef_study_inputs(args, "the EF with the stored segmenter")
    report = run_ef_study(args.data, args.checkpoint, args.segmenter, args.out,
                          EFStudyConfig(**config_values(args, EFStudyConfig)), guide=guide_from(args),
                          device=resolve_device(args.device))
    print("\n".join(ef_summary_lines(report)))
    print(f"wrote {args.out}")


def cmd_guided_study(args: argparse.Namespace) -> None:
    check_ef_study_inputs(args, "Dice and EF with it")
    check_output_folder(args.out, "--out")
    with folder_lock(args.out, "--out"):
        report = run_guided_study(args.data, args.checkpoint, args.segmenter, args.out,
                                  GuidedStudyConfig(**config_values(args, GuidedStudyConfig)),
                                  sampler=sampler_from(args, cap_steps=False), device=resolve_device(args.device),
                                  json_path=args.json)
    print("\n".join(guided_summary_lines(report)))
    print(f"wrote {args.json or Path(args.out) / 'guided-study.json'}")


def check_test_on(folder: Path | None) -> None:
    """--test-on: a CAMUS or EchoNet-Dynamic folder (or not given), checked before any training."""
    if folder is not None:
        try:
            detect_format(folder)
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"--test-on {error}") from None


def cmd_augment_study(args: argparse.Namespace) -> None:
    for flag, path in (("--segmenter", args.segmenter), ("--unconditional", args.unconditional),
                       ("--clsfree", args.clsfree)):
        if path is not None and not path.is_file():
            raise ValueError(f"{flag} {path}: no such file")
    check_test_on(args.test_on)
    sampler = sampler_from(args, cap_steps=False)
    check_output_folder(args.out, "--out")
    with folder_lock(args.out, "--out"):
        report = run_augment_study(
            args.data, args.unconditional, args.clsfree, args.segmenter, args.out,
            AugmentStudyConfig(**config_values(args, AugmentStudyConfig)),
            seg_config_from_profile(load_profile(args.profile)), sampler=sampler,
            clsfree_sampler=own_clsfree_sampler(sampler, args.clsfree_solver, args.clsfree_sampler_steps),
            real_root=args.test_on, device=resolve_device(args.device), json_path=args.json)
    print("\n".join(augment_summary_lines(report)))
    print(f"wrote {args.json or Path(args.out) / 'augment-study.json'}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="freeecho", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="print Python tracebacks instead of one-line errors")
    parser.add_argument("--cache-dir", type=Path, help="where prepared clips and histograms are kept (default: "
                        "<dataset>/.freeecho_cache; needed for a read-only dataset)")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="model presets, parameter counts and the noise schedule")
    info.set_defaults(func=cmd_info)
    bench = sub.add_parser("bench", help="benchmark suites (sampling, reference mode, training, OT, phantom) or "
                                         "one network evaluation per preset; store JSON")
    bench.add_argument("--suite", choices=sorted(SUITES) + ["cpu-sampling", "cpu-training", "data"],
                       help="run a whole suite (smoke: seconds, for CI; cpu: a few minutes; gpu: the paper size; "
                            "cpu-training: training steps of the cpu preset, eager and compiled, 1 and 2 threads; "
                            "cpu-sampling: seconds per video of the stored model, --checkpoint and --map; "
                            "data: the prepared-clip store and the DataLoader at the paper's clip size, --counts) "
                            "instead of the per-preset evaluation timing")
    bench.add_argument("--compile", action="store_true", help="with --suite: add torch.compile'd variants")
    bench.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                       help="cpu-sampling: the model (default: the stored cpu model)")
    bench.add_argument("--map", type=Path, default=EXAMPLE_MAP, help="cpu-sampling: the ED map (default: the example)")
    bench.add_argument("--preset", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS))
    bench.add_argument("--batch", type=at_least(1),
                       help="videos per call (default 1; cpu-sampling: of its batched variants, default 4)")
    bench.add_argument("--frames", type=at_least(1), default=8)
    bench.add_argument("--size", type=at_least(8), default=64, help="frame height and width in pixels")
    bench.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    bench.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    bench.add_argument("--repeats", type=at_least(1), default=3)
    bench.add_argument("--counts", type=at_least(3), nargs="+", default=[50, 500],
                       help="data: videos of the EchoNet-format phantoms measured (rendered once into runs/bench-data)")
    bench.add_argument("--out", type=Path, help="JSON file for the results")
    bench.set_defaults(func=cmd_bench)
    prep = sub.add_parser("prepare", help="prepare a dataset's clips once into the clip store that training, "
                          "evaluation and the segmenter read (otherwise their first use does it)")
    prep.add_argument("--data", required=True, type=Path, help="a CAMUS or EchoNet-Dynamic folder (real or phantom)")
    prep.add_argument("--profile", default="smoke", help="the profile whose train section gives the clip size")
    prep.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    prep.add_argument("--workers", type=at_least(1), default=None, help="processes (default: all cores)")
    prep.set_defaults(func=cmd_prepare)
    phantom = sub.add_parser("phantom", help="render a phantom dataset in the CAMUS or EchoNet-Dynamic format")
    phantom.add_argument("--format", choices=FORMATS, help="dataset format to render (with --out)")
    phantom.add_argument("--out", type=Path, help="new (or empty) folder to write")
    phantom.add_argument("--stats", type=Path, metavar="DIR",
                         help="instead of rendering, print the grey-level statistics of a CAMUS or EchoNet folder "
                              "(real or phantom) inside the scan fan, and how much its hearts differ (ED LV area, "
                              "pairwise Dice, long-axis angle, EF)")
    phantom.add_argument("--limit", type=at_least(1), default=None, help="with --stats: the first N recordings only")
    phantom.add_argument("--count", type=at_least(1), default=8, help="patients (CAMUS: 2CH and 4CH each) or videos")
    phantom.add_argument("--seed", type=at_least(0), default=0)
    add_options(phantom, PhantomConfig)
    phantom.add_argument("--workers", type=at_least(1), default=None, help="processes (default: all cores)")
    phantom.set_defaults(func=cmd_phantom)
    tr = sub.add_parser("train", help="train a model at a profile (resumable; several GPUs under torchrun)")
    tr.add_argument("--profile", default="smoke", help="smoke, gpu-short, paper, or a YAML file with a train section")
    tr.add_argument("--data", required=True, type=Path, help="a CAMUS or EchoNet-Dynamic folder (real or phantom)")
    tr.add_argument("--kind", default="unconditional", choices=MODEL_KINDS)
    tr.add_argument("--run-dir", type=Path, help="checkpoint folder (default runs/<profile>/<kind>)")
    tr.add_argument("--section", default="train", help="the profile's section of training settings: train, or a "
                    "later stage such as train_high_noise (params/cpu.yaml), continued with --resume")
    tr.add_argument("--steps", type=at_least(1), help="override the profile's number of steps")
    tr.add_argument("--resume", action="store_true", help="continue from <run>/checkpoint.pt")
    tr.add_argument("--other-data", action="store_true", help="with --resume: continue on a dataset other than "
                    "the one the checkpoint was trained on (refused otherwise)")
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    tr.set_defaults(func=cmd_train)
    ev = sub.add_parser("evaluate", help="generate n videos per test map with every method and score them")
    ev.add_argument("--data", required=True, type=Path, help="a CAMUS or EchoNet-Dynamic folder")
    ev.add_argument("--unconditional", required=True, type=Path, help="ema.pt of the unconditional model")
    ev.add_argument("--clsfree", type=Path, help="ema.pt of the Cls-Free model (omit to skip that baseline)")
    ev.add_argument("--out", required=True, type=Path, help="folder for the videos and metrics.json (resumable)")
    ev.add_argument("--split", default="TEST", choices=["TRAIN", "VAL", "TEST"])
    add_options(ev, EvalConfig)
    add_options(ev, SamplerConfig, SAMPLER_OPTIONS, defaults=EvalConfig.sampler)
    add_guide_options(ev, flag=False)
    ev.add_argument("--clsfree-solver", choices=sorted(SOLVERS), help="Cls-Free's own solver (default: --solver's; "
                    "the benchmark page's quality study chooses one for it)")
    ev.add_argument("--clsfree-sampler-steps", type=at_least(2), metavar="N",
                    help="Cls-Free's own steps over its whole noise range (default: --sampler-steps)")
    ev.add_argument("--model-cards", action="store_true",
                    help="add the scores to the model cards (model_card.json) beside the checkpoints")
    ev.add_argument("--compile", action="store_true",
                    help="torch.compile the networks: minutes of warm-up, then faster sampling (long runs)")
    ev.add_argument("--max-maps", type=at_least(1), help="score only the first N test maps")
    ev.add_argument("--inception-weights", help="local InceptionV3 weights for FID (else FID is unavailable)")
    ev.add_argument("--i3d-weights", help="local StyleGAN-V i3d_torchscript.pt for FVD")
    ev.add_argument("--r2plus1d-weights", help="local torchvision r2plus1d_18 state dict for FVD-R(2+1)D")
    ev.add_argument("--segmenter", type=Path, help="a segmenter checkpoint (freeecho segmenter) for the anatomy "
                    "metrics: Dice, EF proxy, LV area roughness, FD-seg, FVD-seg")
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=cmd_evaluate)
    nfe = sub.add_parser("nfe-study", help="quality against network evaluations per video: each solver at "
                         "several NFE on the same TEST maps and seeds (resumable)")
    nfe.add_argument("--data", required=True, type=Path, help="a CAMUS or EchoNet-Dynamic folder")
    nfe.add_argument("--unconditional", required=True, type=Path, help="ema.pt of the unconditional model")
    nfe.add_argument("--clsfree", type=Path, help="ema.pt of the Cls-Free model (for --methods clsfree)")
    nfe.add_argument("--segmenter", required=True, type=Path, help="the segmenter that reads Dice LV and FD-seg")
    nfe.add_argument("--out", required=True, type=Path, help="folder of the videos, one evaluate folder per setting")
    nfe.add_argument("--json", type=Path, help="also write the study here (e.g. results/bench/nfe-quality.json)")
    nfe.add_argument("--grid", type=grid_entry, nargs="+", metavar="SOLVER:NFE,...",
                     help=f"the settings (default: each of {', '.join(STUDY_SOLVERS)} at "
                          f"{', '.join(map(str, STUDY_NFE))} NFE; must include {REFERENCE[0]}:{REFERENCE[1]})")
    add_options(nfe, StudyConfig)
    nfe.add_argument("--compile", action="store_true", help="torch.compile the networks (for long runs)")
    nfe.add_argument("--device", default="auto")
    nfe.set_defaults(func=cmd_nfe_study)
    efs = sub.add_parser("ef-study", help="do generated videos keep the EF their beating pseudo video is given? "
                         "(TEST maps x target EFs, read back by the segmenter; resumable)")
    efs.add_argument("--data", required=True, type=Path, help="a CAMUS or EchoNet-Dynamic folder")
    efs.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="the unconditional model")
    efs.add_argument("--segmenter", required=True, type=Path, help="the segmenter that reads the EF and Dice LV")
    efs.add_argument("--out", required=True, type=Path, help="the study's JSON (e.g. results/cpu/ef-study.json)")
    add_options(efs, EFStudyConfig)
    add_guide_options(efs)
    efs.add_argument("--device", default="auto")
    efs.set_defaults(func=cmd_ef_study)
    er = sub.add_parser("ef-reader", help="the EF reader's own error, no model needed: a segmenter's area-length EF "
                        "on the recorded VAL and TEST clips and on beating pseudo videos of known EF")
    er.add_argument("--data", required=True, type=Path, help="a CAMUS or EchoNet-Dynamic folder")
    er.add_argument("--segmenter", required=True, type=Path, help="the segmenter that reads the EF")
    er.add_argument("--efs", type=float, nargs="+", default=list(STUDY_EFS), help="the pseudo videos' target EFs")
    er.add_argument("--max-maps", type=at_least(1), default=8, help="pseudo videos of the first N TEST maps")
    er.add_argument("--seed", type=at_least(0), default=0, help="the split seed (the judged models' training seed)")
    er.add_argument("--out", type=Path, help="also write the readings to this JSON")
    er.add_argument("--device", default="auto")
    er.set_defaults(func=cmd_ef_reader)
    gs = sub.add_parser("guided-study", help="ILVR against plain Free-Echo over t_i x guide settings: Table 1's "
                        "scores, the map margin and the EF read back")
    gs.add_argument("--data", required=True, type=Path, help="the dataset whose TEST maps are used")
    gs.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="ema.pt of the unconditional model")
    gs.add_argument("--segmenter", required=True, type=Path, help="the judge that reads Dice LV, FD-seg and the EF")
    gs.add_argument("--out", required=True, type=Path, help="the study's folder (its cells and guided-study.json)")
    gs.add_argument("--json", type=Path, help="also write the study here (e.g. results/cpu/guided-study.json)")
    add_options(gs, GuidedStudyConfig)
    add_options(gs, SamplerConfig, ["solver", "churn", "steps"], defaults=DEFAULT_SAMPLER)
    gs.add_argument("--device", default="auto")
    gs.set_defaults(func=cmd_guided_study)
    aug = sub.add_parser("augment-study", help="are the synthetic videos useful? segmenters trained on k labelled "
                         "TRAIN clips with and without synthetic videos of the other TRAIN maps, tested on TEST")
    aug.add_argument("--data", required=True, type=Path, help="the dataset the models were trained on")
    aug.add_argument("--unconditional", type=Path, default=DEFAULT_CHECKPOINT, help="ema.pt of the unconditional model")
    aug.add_argument("--clsfree", type=Path, help="ema.pt of the Cls-Free model (for --methods clsfree)")
    aug.add_argument("--segmenter", required=True, type=Path,
                     help="the judge, whose features the memorisation check compares")
    aug.add_argument("--profile", default="cpu", help="its `segment` section sets the segmenters (at its clip size)")
    aug.add_argument("--out", required=True, type=Path,
                     help="the study's folder (videos, segmenter results; resumable)")
    aug.add_argument("--json", type=Path, help="also write the study here (e.g. results/cpu/augment-study.json)")
    aug.add_argument("--test-on", type=Path, metavar="DIR",
                     help="also test every segmenter on a real EchoNet-Dynamic or CAMUS folder (its annotated frames)")
    add_options(aug, AugmentStudyConfig)
    add_options(aug, SamplerConfig, ["solver", "churn", "steps"], defaults=DEFAULT_SAMPLER)
    aug.add_argument("--clsfree-solver", choices=sorted(SOLVERS), help="Cls-Free's own solver (default: --solver's)")
    aug.add_argument("--clsfree-sampler-steps", type=at_least(2), metavar="N",
                     help="Cls-Free's own steps over its whole noise range (default: --sampler-steps)")
    aug.add_argument("--device", default="auto")
    aug.set_defaults(func=cmd_augment_study)
    gen = sub.add_parser("generate", help="videos from your own ED map (PNG or NIfTI; CAMUS, 5-label or LV-only)")
    gen.add_argument("--map", required=True, type=Path, help="the ED label map: .png, .nii or .nii.gz, any size")
    gen.add_argument("--checkpoint", type=Path,
                     help="ema.pt of an unconditional model (default: the stored CPU model for the map: "
                          "checkpoints/cpu/phantom-camus/unconditional/ema.pt, for an LV-only map "
                          "checkpoints/cpu/phantom-echonet/unconditional/ema.pt)")
    add_options(gen, GenerateConfig)
    add_options(gen, SamplerConfig, ["solver", "churn", "steps"], defaults=GenerateConfig.sampler)
    add_guide_options(gen)
    gen.add_argument("--out", required=True, type=Path, help="folder for the videos, frames (.npy) and record (.json)")
    gen.add_argument("--labels", default="auto", choices=CONVENTIONS,
                     help="the map's label convention (auto: label 4 -> five, a binary mask -> lv, else camus)")
    gen.add_argument("--format", default="avi", choices=sorted(VIDEO_FORMATS))
    gen.add_argument("--data", type=Path, help="the training dataset, whose grey levels are the OT target "
                     "(default: the echo phantom's)")
    gen.add_argument("--es-map", type=Path, help="the ES label map of the same recording: the pseudo video beats "
                     "from the ED map's shapes to its shapes (with its own EF; instead of --ef)")
    gen.add_argument("--device", default="auto")
    gen.set_defaults(func=cmd_generate)
    seg = sub.add_parser("segmenter", help="train the 2-D segmenter that the anatomy metrics read videos with")
    seg.add_argument("--profile", default="smoke", help="its `segment` section, at the `train` clip size")
    seg.add_argument("--section", default="segment",
                     help="the profile's segmenter section: segment (the judge of the anatomy metrics) or another, "
                          "such as segment_transfer (params/cpu.yaml: the settings that read real echo best)")
    seg.add_argument("--data", required=True, type=Path, help="a CAMUS or EchoNet-Dynamic folder (real or phantom)")
    seg.add_argument("--out", type=Path, help="checkpoint to write (default runs/<profile>/segmenter.pt)")
    seg.add_argument("--test-on", type=Path, metavar="DIR",
                     help="then score Dice LV on every labelled frame of another CAMUS or EchoNet-Dynamic folder "
                          "(e.g. real echo after training on the phantom); written beside --out as .transfer.json")
    seg.add_argument("--device", default="auto")
    seg.set_defaults(func=cmd_segmenter)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = "freeecho " + shlex.join(map(str, argv))  # recorded in what a command writes
    # Warnings are kept until the command ends: one line each after a success, none after an error, whose one
    # line then says what went wrong. OpenCV's own log lines are silenced: its failures reach us as errors.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # and FFmpeg's, read when OpenCV first opens a video
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            with cache_dir_variable(args.cache_dir):
                args.func(args)
        except KeyboardInterrupt:
            clear_bars()
            print(f"freeecho {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as err:
            if args.debug:
                raise
            clear_bars()
            print(f"freeecho {args.command}: error: {one_line(err)}", file=sys.stderr)
            return 2
    for warning in dict.fromkeys(str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)):
        print(f"freeecho {args.command}: warning: {one_line(Warning(warning))}", file=sys.stderr)
    return 0


@contextmanager
def cache_dir_variable(cache_dir: Path | None):
    """FREEECHO_CACHE_DIR set to `cache_dir` for the command (read by every EchoClips, in this process and the
    processes it starts), and restored afterwards."""
    previous = os.environ.get(CACHE_DIR_VARIABLE)
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise ValueError(f"--cache-dir {cache_dir}: is a file; expected a folder for the prepared clips")
    if cache_dir is not None:
        os.environ[CACHE_DIR_VARIABLE] = str(cache_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CACHE_DIR_VARIABLE, None)
        else:
            os.environ[CACHE_DIR_VARIABLE] = previous


def one_line(err: Exception) -> str:
    """An exception as one line of text; errors the package does not raise itself on bad input (a bug, most
    likely) say what they are and how to see the traceback."""
    text = "; ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    text = re.sub(r"^\[Errno \d+\] ", "", text)  # an OSError's number says less than its words
    if isinstance(err, KeyError):
        text = f"missing entry {text}"
    if not isinstance(err, (ValueError, OSError, ImportError, RuntimeError, Warning)) or not text:
        text = f"{type(err).__name__}: {text or 'no message'} (rerun with --debug for the traceback)"
    return text


if __name__ == "__main__":
    sys.exit(main())
