"""Training of the video denoiser with the EDM loss (paper eq. (1); section 3, "Implementation").

Two model kinds share one loop: `unconditional` (the model Free-Echo samples from) and `clsfree` (the
classifier-free baseline: the one-hot ED map joins the input channels and is replaced by the all-zero null
map with probability p_uncond).

Everything random is a function of (seed, step, sample): the data order is a seeded permutation per epoch,
and every sample draws its sigma, noise and condition dropout from its own generator. A run therefore gives
the same weights whether it runs straight, is interrupted and resumed, or is spread over several processes
(DistributedDataParallel under torchrun) with the same global batch.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from freeecho_core.checkpoint import clip_config, code_version, load_checkpoint, save_checkpoints, unet_payload
from freeecho_core.data.case import FIVE_LABELS, one_hot_maps
from freeecho_core.data.dataset import EchoClips, dataset_fingerprint
from freeecho_core.edm import EDMPrecond, edm_loss
from freeecho_core.progress import progress_bar
from freeecho_core.unet3d import PRESETS, UNet3D, unet3d_config
from freeecho_core.validate import as_bool, as_choice, as_float, as_int, check_known

MODEL_KINDS = ("unconditional", "clsfree")


@dataclass(frozen=True)
class TrainConfig:
    kind: str = "unconditional"  # "unconditional" (Free-Echo) or "clsfree" (the Cls-Free baseline)
    preset: str = "paper"  # UNet3D preset
    frames: int = 24  # K frames per clip (paper: 24)
    size: int = 128  # S x S pixels (paper: 128)
    clip_fps: float | None = None  # None: K consecutive frames (the paper); a rate: every recording resampled to it
    batch_size: int = 16  # global batch per optimizer step (paper: 16)
    grad_accum: int = 1  # micro-batches per step on each process
    steps: int = 100_000  # optimizer steps (paper: 100k)
    lr: float = 1e-3  # Adam learning rate (paper: 1e-3)
    lr_cooldown: int = 0  # the last this many steps decay the learning rate linearly to 0; 0: constant (the paper)
    ema_halflife: float = 2212.0  # EMA half-life in training images (the authors' decay 0.995 per step of 16)
    ema_rampup: float = 0.05  # the half-life is at most this share of the images seen so far (EDM's ramp-up)
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    noise_uniform_share: float = 0.0  # share of samples with ln(sigma) uniform over the sampling range; 0: EDM's
    p_uncond: float = 0.1  # Cls-Free: probability of the null condition in training
    checkpoint_every: int = 1000  # steps between checkpoints (one is also written at the end)
    seed: int = 0  # data order, noise, dropout and initial weights
    bf16: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    num_workers: int = 0  # DataLoader worker processes
    compile: bool = False  # torch.compile the denoiser (about 2x faster per CPU step after minutes of warm-up)

    def __post_init__(self):
        """Coerce numeric text (YAML reads 1e-3 as a string) and check every field: one ValueError naming it."""
        as_choice("kind", self.kind, MODEL_KINDS)
        as_choice("preset", self.preset, PRESETS)
        ints = {"frames": 1, "size": 8, "batch_size": 1, "grad_accum": 1, "steps": 1, "lr_cooldown": 0,
                "checkpoint_every": 1, "seed": 0, "num_workers": 0}
        values = {name: as_int(name, getattr(self, name), low) for name, low in ints.items()}
        values |= {"lr": as_float("lr", self.lr, above=0),
                   "ema_halflife": as_float("ema_halflife", self.ema_halflife, above=0),
                   "ema_rampup": as_float("ema_rampup", self.ema_rampup, 0),
                   "grad_clip": as_float("grad_clip", self.grad_clip, 0),
                   "p_uncond": as_float("p_uncond", self.p_uncond, 0, 1),
                   "noise_uniform_share": as_float("noise_uniform_share", self.noise_uniform_share, 0, 1),
                   "clip_fps": None if self.clip_fps is None else as_float("clip_fps", self.clip_fps, above=0),
                   "bf16": as_bool("bf16", self.bf16), "compile": as_bool("compile", self.compile)}
        for name, value in values.items():
            object.__setattr__(self, name, value)
        multiple = PRESETS[self.preset].downsampling  # the UNet halves the frame at each level but the last
        if self.size % multiple:
            raise ValueError(f"size: expected a multiple of {multiple} for the {self.preset} preset, got {self.size}")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def sample_index(seed: int, k: int, n: int) -> int:
    """The dataset index of the k-th sample drawn in training: epoch k // n is a seeded permutation."""
    epoch, offset = divmod(k, n)
    return int(np.random.default_rng([seed, epoch]).permutation(n)[offset])


class StepBatches(torch.utils.data.Sampler):
    """Batches of dataset indices for steps start..steps-1 on one process: the rank's share of each global
    batch, split into `grad_accum` micro-batches."""

    def __init__(self, n: int, config: TrainConfig, start: int, rank: int, world_size: int):
        self.n, self.cfg, self.start, self.rank, self.world = n, config, start, rank, world_size

    def global_positions(self, step: int, micro: int) -> list[int]:
        """Positions k (in the stream of drawn samples) of one micro-batch of this rank."""
        B = self.cfg.batch_size
        mine = list(range(step * B, (step + 1) * B))[self.rank :: self.world]
        per_micro = len(mine) // self.cfg.grad_accum
        return mine[micro * per_micro : (micro + 1) * per_micro]

    def __iter__(self):
        for step in range(self.start, self.cfg.steps):
            for micro in range(self.cfg.grad_accum):
                yield [sample_index(self.cfg.seed, k, self.n) for k in self.global_positions(step, micro)]

    def __len__(self):
        return (self.cfg.steps - self.start) * self.cfg.grad_accum


def build_model(config: TrainConfig) -> UNet3D:
    torch.manual_seed(config.seed)
    cond_channels = len(FIVE_LABELS) if config.kind == "clsfree" else 0
    return UNet3D(unet3d_config(config.preset, cond_channels=cond_channels))


def sample_generators(seed: int, positions: list[int], device) -> list[torch.Generator]:
    """One generator per drawn sample, fixed by (seed, position in the sample stream)."""
    return [torch.Generator(device).manual_seed(seed * 1_000_003 + k) for k in positions]


def dropout_generator(g: torch.Generator) -> torch.Generator:
    """A stream for the condition dropout of a sample, independent of its noise stream `g`."""
    return torch.Generator(g.device).manual_seed(g.initial_seed() ^ (1 << 62))


def micro_batch_loss(denoiser, batch: dict, gens: list[torch.Generator], config: TrainConfig, device) -> torch.Tensor:
    """Mean EDM loss of one micro-batch; Cls-Free drops the condition per sample with probability p_uncond."""
    x0 = batch["video"].to(device)
    cond = None
    if config.kind == "clsfree":
        cond = one_hot_maps(batch["ed_map"].to(device))
        keep = torch.stack([torch.rand((), generator=dropout_generator(g), device=device) >= config.p_uncond
                            for g in gens])
        cond = cond * keep[:, None, None, None]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.bf16 and x0.device.type == "cuda")
    with autocast:
        loss = edm_loss(denoiser, x0, cond, uniform_share=config.noise_uniform_share, generator=gens)
    return loss.float().mean()


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based): constant, then over the last `lr_cooldown` steps of
    the run a linear decay that reaches 0 after the final step (the cool-down of a warmup-stable-decay schedule,
    Hu et al. 2024, MiniCPM; Hagele et al. 2024). A function of the step only, so a resumed run is bit-exact."""
    left = config.steps - step
    if left > config.lr_cooldown:
        return config.lr
    return config.lr * left / (config.lr_cooldown + 1)


def ema_decay(config: TrainConfig, images_seen: int) -> float:
    """Per-step EMA decay after `images_seen` training images: the half-life (in images) grows as
    ema_rampup * images_seen up to ema_halflife (Karras et al. 2022, EDM training/training_loop.py), so the EMA
    of a run of any length forgets its initial weights."""
    halflife = min(config.ema_halflife, images_seen * config.ema_rampup)
    return 0.5 ** (config.batch_size / max(halflife, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)


def training_state(config: TrainConfig, model, ema, optimizer, step: int, data: dict, version: dict) -> dict:
    return unet_payload(model, code_version=version, train_config=asdict(config), ema=ema.state_dict(),
                        optimizer=optimizer.state_dict(),
                        step=step, data=data)


def write_checkpoints(run_dir: Path, config: TrainConfig, model, ema, optimizer, step: int, data: dict,
                      version: dict) -> None:
    """`checkpoint.pt` (everything needed to resume) and `ema.pt` (config + EMA weights, for sampling), written as
    a pair: a failed write leaves the previous pair as it was. Both carry `data` (the training folder, its
    fingerprint and the frame rate of its clips, which sampled videos are played at) and `version`, the code
    version the process started with (the checkout may change under a long run)."""
    save_checkpoints({run_dir / "checkpoint.pt": training_state(config, model, ema, optimizer, step, data, version),
                      run_dir / "ema.pt": unet_payload(ema, code_version=version, train_config=asdict(config),
                                                       step=step, data=data)})


def resume_state(run_dir: Path, config: TrainConfig, model, ema, optimizer, data: dict,
                 other_data: bool = False) -> int:
    """Load checkpoint.pt into model, EMA and optimizer; return the step to continue from. Refuses other
    training settings, a step beyond `config.steps`, and (unless `other_data`) a dataset whose fingerprint
    differs from the one recorded (checkpoints from before fingerprints were recorded are taken as they are)."""
    path = run_dir / "checkpoint.pt"
    payload = load_checkpoint(path)
    stored = payload["train_config"]
    changed = {k for k in ("kind", "preset", "frames", "size", "clip_fps", "batch_size", "seed")
               if stored.get(k) != getattr(config, k)}
    if changed:
        raise ValueError(f"{path} was trained with other {sorted(changed)}: "
                         f"{ {k: stored.get(k) for k in changed} }; resume with the same settings")
    if int(payload["step"]) > config.steps:
        raise ValueError(f"{path} is at step {payload['step']}, beyond the {config.steps} steps asked for; "
                         f"give --steps {payload['step']} or more to continue it")
    recorded = (payload.get("data") or {}).get("fingerprint")
    if recorded and recorded != data["fingerprint"] and not other_data:
        raise ValueError(f"{path} was trained on {payload['data']['path']} (fingerprint {recorded}), but "
                         f"{data['path']} has fingerprint {data['fingerprint']}: resume on the same data, or "
                         f"pass --other-data to continue on this one")
    model.load_state_dict(payload["model"])
    ema.load_state_dict(payload["ema"])
    optimizer.load_state_dict(payload["optimizer"])
    return int(payload["step"])


def train(config: TrainConfig, data_root: str | os.PathLike, run_dir: str | os.PathLike, *, resume: bool = False,
          device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1, progress: bool = True,
          other_data: bool = False) -> Path:
    """Train `config.steps` optimizer steps on the TRAIN split of `data_root`; checkpoints and `log.csv` go to
    `run_dir`. Under torchrun, call with the process's rank and world size after `init_process_group`.
    `other_data`: resume on a dataset other than the one the checkpoint records."""
    run_dir, device = Path(run_dir), torch.device(device)
    if config.batch_size % (world_size * config.grad_accum):
        raise ValueError(f"batch_size {config.batch_size} must split evenly over {world_size} processes x "
                         f"{config.grad_accum} micro-batches")
    dataset = EchoClips(data_root, "TRAIN", clip_config(asdict(config)), seed=config.seed)
    if len(dataset) == 0:
        raise ValueError(f"{data_root}: the TRAIN split is empty")
    if not resume and (run_dir / "checkpoint.pt").exists():
        raise FileExistsError(f"{run_dir / 'checkpoint.pt'} exists: pass resume=True (--resume) or a new run folder")
    data = {"path": str(data_root), "fps": dataset.frame_rate(), "fingerprint": dataset_fingerprint(data_root)}
    version = code_version()
    model = build_model(config).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = resume_state(run_dir, config, model, ema, optimizer, data, other_data) if resume else 0
    if rank == 0:
        remove_stale_temporaries(run_dir)
    denoiser = EDMPrecond(model)
    if config.compile:
        denoiser = torch.compile(denoiser)
    if world_size > 1:
        denoiser = DistributedDataParallel(denoiser)
    sampler = StepBatches(len(dataset), config, start, rank, world_size)
    loader = iter(DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers))
    log = TrainLog(run_dir / "log.csv", enabled=rank == 0, resume_step=start)
    bar = progress_bar(range(start, config.steps), initial=start, total=config.steps, disable=not progress or rank,
               desc=f"train {config.kind}", unit="step")
    done = start
    try:
        for step in bar:
            loss = optimizer_step(denoiser, model, optimizer, loader, sampler, config, step, device, world_size)
            update_ema(ema, model, ema_decay(config, (step + 1) * config.batch_size))
            done = step + 1
            log.write(done, loss)
            bar.set_postfix(loss=f"{loss:.4f}")
            if done % config.checkpoint_every == 0 and rank == 0:
                write_checkpoints(run_dir, config, model, ema, optimizer, done, data, version)
    except KeyboardInterrupt:
        if rank == 0:  # keep the steps completed so far
            write_checkpoints(run_dir, config, model, ema, optimizer, done, data, version)
        raise
    except BaseException:
        if rank == 0 and not (run_dir / "checkpoint.pt").exists():  # a log of steps that no checkpoint holds
            (run_dir / "log.csv").unlink(missing_ok=True)
        raise
    if rank == 0 and done > start and done % config.checkpoint_every:
        write_checkpoints(run_dir, config, model, ema, optimizer, done, data, version)
    return run_dir


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary checkpoint files that a killed process left behind (`save_checkpoint` names them
    .<name>.<random>.tmp); none can be in use, since one run folder has one training process."""
    for name in ("checkpoint.pt", "ema.pt"):
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def ensure_trained(config: TrainConfig, data_root, run_dir, **kwargs) -> Path:
    """Train into `run_dir` unless its checkpoint already reached `config.steps`; resume a shorter one."""
    checkpoint = Path(run_dir) / "checkpoint.pt"
    if checkpoint.exists() and load_checkpoint(checkpoint)["step"] >= config.steps:
        return Path(run_dir)
    return train(config, data_root, run_dir, resume=checkpoint.exists(), **kwargs)


def trained_checkpoint(config: TrainConfig, data_root, run_dir, stored_dir=None, **kwargs) -> tuple[Path, str]:
    """The EMA checkpoint to use for a profile: `stored_dir`/ema.pt when it is there (a committed run),
    else train (or finish) the run in `run_dir`. Returns (path to ema.pt, "stored" or "trained here")."""
    if stored_dir is not None and (Path(stored_dir) / "ema.pt").is_file():
        return Path(stored_dir) / "ema.pt", "stored"
    return ensure_trained(config, data_root, run_dir, **kwargs) / "ema.pt", "trained here"


def optimizer_step(denoiser, model, optimizer, loader, sampler: StepBatches, config: TrainConfig, step: int,
                   device, world_size: int) -> float:
    """One optimizer step over `grad_accum` micro-batches; raises NonFiniteLoss before touching the weights."""
    optimizer.zero_grad(set_to_none=True)
    for group in optimizer.param_groups:  # also replaces the rate a resumed optimizer state carries
        group["lr"] = learning_rate(config, step)
    total = 0.0
    for micro in range(config.grad_accum):
        gens = sample_generators(config.seed, sampler.global_positions(step, micro), device)
        loss = micro_batch_loss(denoiser, next(loader), gens, config, device) / config.grad_accum
        loss.backward()
        total += loss.detach()
    if world_size > 1:
        dist.all_reduce(total)
        total /= world_size
    total = float(total)
    if not math.isfinite(total):
        raise NonFiniteLoss(f"step {step + 1}: the loss is {total}; training stopped, the last checkpoint is kept")
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return total


class TrainLog:
    """Per-step loss, appended to a CSV beside the checkpoints: step, loss, and training seconds summed over
    every process of the run (a resumed run continues the clock of the rows it keeps)."""

    def __init__(self, path: Path, enabled: bool, resume_step: int = 0):
        """resume_step: the checkpoint's step; rows logged after it by a killed process are dropped, since
        those steps run again. The file is created with its first row, so a run that fails before its first
        step leaves no log behind."""
        self.path, self.enabled, self.start, self.offset = path, enabled, time.perf_counter(), 0.0
        if enabled and path.exists():
            lines = path.read_text().splitlines(keepends=True)
            if lines and not lines[-1].endswith("\n"):  # the torn last row of a killed process
                lines = lines[:-1]
            rows = [log_row(path, n, line) for n, line in enumerate(lines[1:], start=2)]
            kept = lines[:1] + [line for line, (step, _) in zip(lines[1:], rows) if step <= resume_step]
            if len(kept) < len(lines) or not path.read_text().endswith("\n"):
                path.write_text("".join(kept))
            if len(kept) > 1:
                self.offset = [seconds for step, seconds in rows if step <= resume_step][-1]

    def write(self, step: int, loss: float) -> None:
        if not self.enabled:
            return
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("step,loss,seconds\n")
        with self.path.open("a", newline="") as f:
            seconds = self.offset + time.perf_counter() - self.start
            csv.writer(f).writerow([step, f"{loss:.6g}", f"{seconds:.3f}"])


def log_row(path: Path, number: int, line: str) -> tuple[int, float]:
    """(step, seconds) of one row of log.csv, or a ValueError naming the file and the line."""
    try:
        step, _, seconds = line.rstrip("\n").split(",")
        return int(step), float(seconds)
    except ValueError:
        raise ValueError(f"{path}: line {number} is not a step,loss,seconds row ({line.strip()!r}); the log is "
                         f"damaged: restore it, or delete it to start it anew") from None


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a training log.csv as arrays."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no training steps logged")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def config_from_profile(profile: dict, *, source: str = "the profile", section: str = "train",
                        **overrides) -> TrainConfig:
    """A TrainConfig from a profile's `train` section (or a later stage's `section`, params/<profile>.yaml), with
    overrides; errors name `source` (the profile file), the section and the setting."""
    try:
        check_known("training settings", profile, TrainConfig.__dataclass_fields__)
    except ValueError as err:
        raise ValueError(f"{source}: {section}: {err}") from None
    try:
        return replace(TrainConfig(**profile), **overrides)
    except ValueError as err:
        raise ValueError(f"{source}: {section}.{err}") from None
