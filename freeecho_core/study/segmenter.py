"""A compact 2-D segmentation network that judges generated videos (not part of the paper's method).

`SegUNet` labels each frame with the CAMUS classes (0 background, 1 LV cavity, 2 myocardium, 3 left atrium).
It is trained on the labelled frames of a dataset's TRAIN split clips (phantom and real CAMUS: every annotated
frame; EchoNet-Dynamic: the traced frames that lie in the clip of K frames from ED, LV only), or for a phantom
study on more phantom hearts than the study's own (`judge_hearts`), and scored by Dice on the dataset's VAL
split, so that its own accuracy is known before it measures anything. Its bottleneck features (global average
pooled) are the feature space of the `FD-seg` and `FVD-seg` distances in `study.anatomy`.
"""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freeecho_core.checkpoint import code_version, load_checkpoint, save_checkpoint
from freeecho_core.data.case import CAMUS_LABELS, to_five_labels
from freeecho_core.data.clips import UNLABELLED, ClipConfig
from freeecho_core.data.dataset import SPLITS, EchoClips
from freeecho_core.data.lv import dice
from freeecho_core.data.make_dataset import make_phantom_dataset, phantom_manifest
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.motion import beating_pseudo_video
from freeecho_core.progress import progress_bar
from freeecho_core.validate import as_bool, as_float, as_int, check_known, first_reason

CLASSES = len(CAMUS_LABELS)  # 0 background, 1 LV, 2 myocardium, 3 LA


@dataclass(frozen=True)
class SegConfig:
    frames: int = 24  # K frames per clip: must match the clips the segmenter will judge
    size: int = 128  # S x S pixels: likewise
    dim: int = 16  # channels of the first level; doubled per level
    levels: int = 3  # resolution levels (S must be divisible by 2 ** (levels - 1))
    steps: int = 2000  # optimizer steps
    batch_size: int = 16  # frames per step
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # data order and initial weights
    augment: bool = False  # random pose and grey-level changes of every training frame (`augment_batch`)
    # Share of the training frames shown as a blend of the frame and its flat pseudo rendering (`flat_renderings`),
    # so that the segmenter also reads pseudo videos and the half-denoised videos between them and echo.
    pseudo_share: float = 0.0
    # 0: learn from the dataset's TRAIN split. N (a phantom dataset only): learn from the TRAIN split of N other
    # phantom hearts, rendered with the dataset's own phantom settings and seed `phantom_seed` (`judge_hearts`).
    # A study's phantom holds few hearts; a judge that has seen more of them reads ES shapes and EF far better.
    phantom_hearts: int = 0
    phantom_seed: int = 1000

    def __post_init__(self):
        """Coerce numeric text and check every field: one ValueError naming it."""
        ints = {"frames": 1, "size": 8, "dim": 1, "levels": 1, "steps": 1, "batch_size": 1, "seed": 0,
                "phantom_hearts": 0, "phantom_seed": 0}
        for name, low in ints.items():
            object.__setattr__(self, name, as_int(name, getattr(self, name), low))
        object.__setattr__(self, "lr", as_float("lr", self.lr, above=0))
        object.__setattr__(self, "augment", as_bool("augment", self.augment))
        object.__setattr__(self, "pseudo_share", as_float("pseudo_share", self.pseudo_share, 0, 1))
        if self.size % 2 ** (self.levels - 1):
            raise ValueError(f"size {self.size} must be divisible by 2 ** (levels - 1) = {2 ** (self.levels - 1)}")


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU())


class SegUNet(nn.Module):
    """A plain 2-D UNet: (N, 1, S, S) grey frames in [-1, 1] -> (N, 4, S, S) class logits."""

    def __init__(self, config: SegConfig):
        super().__init__()
        self.config = config
        dims = [config.dim * 2 ** k for k in range(config.levels)]
        self.down = nn.ModuleList(conv_block(c_in, c_out) for c_in, c_out in zip([1] + dims[:-1], dims))
        self.up = nn.ModuleList(conv_block(c_low + c_skip, c_skip) for c_low, c_skip in zip(dims[:0:-1], dims[-2::-1]))
        self.head = nn.Conv2d(dims[0], CLASSES, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations of every level, full resolution first; the last is the bottleneck."""
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        h = skips[-1]
        for block, skip in zip(self.up, skips[-2::-1]):
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return self.head(h)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) -> (N, d) bottleneck activations averaged over the pixels (d = dim * 2 ** (levels - 1))."""
        return self.encode(x)[-1].mean(dim=(-2, -1))


def labelled_frames(data: EchoClips, renderings: bool = False, indices=None):
    """Every annotated frame of a split's clips (of the clips `indices` only, when given): (N, S, S) float32 grey
    in [-1, 1] and (N, S, S) int64 CAMUS labels; with
    `renderings`, also each frame's flat pseudo rendering (N, S, S) float32: its labels painted with the grey
    levels that eq. (3) gives its clip's ED map against the split's histogram (`motion.beating_pseudo_video`),
    the pseudo video that Free-Echo starts from when its map beats like this clip."""
    target = data.intensity_histogram() if renderings else None
    frames, labels, flat = [], [], []
    for i in range(len(data)) if indices is None else indices:
        clip = data.clip(i)
        keep = (clip.frame_labels >= 0).all(axis=(1, 2))
        frames.append(clip.video[keep])
        labels.append(clip.frame_labels[keep])
        if renderings and keep.any():
            maps = np.concatenate([clip.ed_map[None], to_five_labels(clip.frame_labels[keep], clip.sector)])
            flat.append(beating_pseudo_video(maps, target)[0, 0, 1:].numpy())
    frames, labels = np.concatenate(frames), np.concatenate(labels)
    if len(frames) == 0:
        raise ValueError(f"{data.root}: the {data.split} split has no labelled frames to train a segmenter on")
    return (frames, labels, np.concatenate(flat)) if renderings else (frames, labels)


def blend_renderings(x: torch.Tensor, flat: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A `share` of the frames x (N, 1, S, S) replaced by a x + (1 - a) flat with a ~ U(0, 1) per frame: from the
    flat pseudo rendering (a = 0) to the echo frame (a = 1), as a video is on its way from one to the other."""
    chosen = (torch.rand(len(x), generator=generator) < share).to(x.dtype)
    a = 1 - chosen * (1 - torch.rand(len(x), generator=generator, dtype=x.dtype))
    return a[:, None, None, None] * x + (1 - a[:, None, None, None]) * flat


@torch.no_grad()
def segment(net: SegUNet, video: torch.Tensor | np.ndarray, batch: int = 64) -> np.ndarray:
    """CAMUS labels of every frame: (..., S, S) grey in [-1, 1] -> (..., S, S) int64 (argmax of the logits)."""
    video = torch.as_tensor(np.asarray(video, dtype=np.float32))
    frames = video.reshape(-1, 1, *video.shape[-2:])
    device = next(net.parameters()).device
    out = torch.cat([net(frames[i : i + batch].to(device)).argmax(1).cpu() for i in range(0, len(frames), batch)])
    return out.reshape(video.shape).numpy()


def dice_report(net: SegUNet, data: EchoClips) -> dict[str, float]:
    """Mean Dice per structure over the labelled frames of a split, for the structures its labels contain."""
    frames, labels = labelled_frames(data)
    pred = segment(net, frames)
    present = [k for k in range(1, CLASSES) if (labels == k).any()]
    return {CAMUS_LABELS[k]: float(np.mean([dice(p, t, k) for p, t in zip(pred, labels)])) for k in present}


def transfer_report(net: SegUNet, root: str | os.PathLike, clip: ClipConfig) -> dict:
    """How a segmenter trained on one dataset (the phantom) reads another (real echo): Dice LV on every annotated
    frame of every split of `root` (EchoNet-Dynamic: the two traced frames of each video, wherever they lie in
    it; `EchoClips.annotated_frames`), as median, range and mean over the frames, and per recording."""
    per_recording = {}
    for split in SPLITS:
        data = EchoClips(root, split, clip)
        for i in range(len(data)):
            frames, labels = data.annotated_frames(i)
            name = data.items[i] if data.format == "echonet" else f"{data.items[i][0].name}_{data.items[i][1]}"
            per_recording[name] = [dice(p, t, 1) for p, t in zip(segment(net, frames), labels)]
    scores = np.array([d for values in per_recording.values() for d in values])
    if not len(scores):
        raise ValueError(f"{root}: no labelled frames to test the segmenter on")
    return {"root": str(root), "frames": int(len(scores)), "recordings": len(per_recording),
            "dice_lv_median": float(np.median(scores)), "dice_lv_min": float(scores.min()),
            "dice_lv_max": float(scores.max()), "dice_lv_mean": float(scores.mean()),
            "per_recording": {k: float(np.mean(v)) for k, v in per_recording.items()}}


def augment_batch(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random changes that a segmenter trained on the phantom must not depend on, to read real echo and generated
    videos (domain randomisation): per frame, a pose change (scale 0.8-1.25, rotation +-15 deg, shift +-10 % of
    the frame; labels by nearest neighbour), a grey curve (gamma 0.5-2 on [0, 1]), a gain and contrast change,
    a blur of up to 1 px and noise. x: (N, 1, S, S) grey in [-1, 1]; y: (N, S, S) labels. No mirror: the LV keeps
    its side of the image, as in every apical view of CAMUS and EchoNet-Dynamic."""
    n = len(x)

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

    angle, scale = torch.deg2rad(uniform(-15, 15)), torch.exp(uniform(np.log(0.8), np.log(1.25)))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    rows = (torch.stack([cos, -sin, uniform(-0.2, 0.2)], 1), torch.stack([sin, cos, uniform(-0.2, 0.2)], 1))
    theta = torch.stack(rows, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long()
    grey = ((x + 1) / 2).clamp(0, 1) ** torch.exp(uniform(np.log(0.5), np.log(2.0), 1, 1, 1))
    grey = grey * uniform(0.7, 1.3, 1, 1, 1) + uniform(-0.1, 0.1, 1, 1, 1)
    sigma = uniform(0.0, 1.0)
    kernel = torch.exp(-(torch.arange(-2, 3)[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (N, 5) per-frame Gaussian, separable
    grey = F.conv2d(grey.transpose(0, 1), kernel[:, None, None, :], padding=(0, 2), groups=n)
    grey = F.conv2d(grey, kernel[:, None, :, None], padding=(2, 0), groups=n).transpose(0, 1)
    grey = grey + uniform(0, 0.05, 1, 1, 1) * torch.randn(grey.shape, generator=generator)
    return (2 * grey.clamp(0, 1) - 1), y


@contextmanager
def judge_hearts(config: SegConfig, data_root: str | os.PathLike, progress: bool = True):
    """The dataset a segmenter learns from: `data_root` itself, or (`config.phantom_hearts` > 0) a temporary
    phantom of that many other hearts, rendered like `data_root`'s phantom (its phantom.json) but with seed
    `config.phantom_seed`, so that none of them is one of the study's hearts."""
    if not config.phantom_hearts:
        yield Path(data_root)
        return
    manifest = phantom_manifest(data_root, "phantom_hearts needs a phantom dataset (set phantom_hearts to 0 to "
                                           "learn from its own TRAIN split)")
    if manifest["seed"] == config.phantom_seed:
        raise ValueError(f"phantom_seed {config.phantom_seed} is the seed of {data_root}'s phantom: its hearts would "
                         f"include the study's TEST hearts; pick another seed")
    with tempfile.TemporaryDirectory(prefix="judge-hearts-") as tmp:
        yield make_phantom_dataset(Path(tmp) / "phantom", manifest["format"], config.phantom_hearts,
                                   config.phantom_seed, PhantomConfig(**manifest["config"]), progress=progress)


def fit_segmenter(config: SegConfig, frames: np.ndarray, labels: np.ndarray, flat: np.ndarray | None = None, *,
                  device="cpu", progress: bool = True) -> SegUNet:
    """The training loop (cross-entropy, Adam, seeded order) on frames in memory: (N, S, S) grey in [-1, 1] and
    their (N, S, S) CAMUS labels (UNLABELLED pixels ignored); `flat`, the frames' flat pseudo renderings, when
    `config.pseudo_share` blends them in. Returns the network in eval mode."""
    if config.pseudo_share and flat is None:
        raise ValueError("pseudo_share needs the frames' flat renderings (flat)")
    torch.manual_seed(config.seed)
    net = SegUNet(config).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x_all, y_all = torch.from_numpy(frames)[:, None], torch.from_numpy(labels)
    flat_all = torch.from_numpy(flat)[:, None] if config.pseudo_share else None
    for _ in progress_bar(range(config.steps), disable=not progress, desc="train segmenter", unit="step"):
        idx = torch.from_numpy(rng.integers(0, len(frames), config.batch_size))
        x, y = x_all[idx], y_all[idx]
        if config.pseudo_share:
            x = blend_renderings(x, flat_all[idx], config.pseudo_share, generator)
        if config.augment:
            x, y = augment_batch(x, y, generator)
        loss = F.cross_entropy(net(x.to(device)), y.to(device), ignore_index=UNLABELLED)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


def train_segmenter(config: SegConfig, data_root: str | os.PathLike, out: str | os.PathLike, *,
                    device="cpu", progress: bool = True) -> Path:
    """Train on the labelled frames of a TRAIN split (`data_root`'s, or that of the extra phantom hearts of
    `judge_hearts`; cross-entropy, Adam, seeded order), score Dice on `data_root`'s VAL split and write `out` (a
    weights-only checkpoint holding the config, weights, the VAL Dice and the code version)."""
    clip = ClipConfig(frames=config.frames, size=config.size)
    with judge_hearts(config, data_root, progress) as train_root:
        train_data = EchoClips(train_root, "TRAIN", clip, seed=config.seed)
        frames, labels, *flat = labelled_frames(train_data, renderings=bool(config.pseudo_share))
    started = time.perf_counter()
    net = fit_segmenter(config, frames, labels, *flat, device=device, progress=progress)
    val = EchoClips(data_root, "VAL", clip, seed=config.seed)
    report = dice_report(net, val) if len(val) else {}
    payload = {"config": asdict(config), "model": net.state_dict(), "val_dice": report, "train_frames": len(frames),
               "data_root": str(data_root), "training_seconds": time.perf_counter() - started,
               "code_version": code_version()}
    return save_checkpoint(out, payload)


def load_segmenter(path: str | os.PathLike, device="cpu") -> tuple[SegUNet, dict]:
    """The segmenter of a checkpoint written by `train_segmenter` (weights only) and its payload."""
    payload = load_checkpoint(path)
    if "val_dice" not in payload:
        raise ValueError(f"{path} is not a segmenter checkpoint (no 'val_dice' entry): train one with "
                         f"train_segmenter or `freeecho segmenter`")
    try:
        net = SegUNet(SegConfig(**payload["config"]))
        net.load_state_dict(payload["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise ValueError(f"{path}: its weights do not fit its segmenter config ({first_reason(err)})") from None
    return net.to(device).eval(), payload


def seg_config_from_profile(profile: dict, section_name: str = "segment") -> SegConfig:
    """The segmenter of a profile (params/<profile>.yaml): its `segment` section (or another segmenter section,
    such as `segment_transfer`), at the clip frames and size of its `train` section (the segmenter judges the
    videos of the models trained there)."""
    if section_name not in profile and section_name != "segment":
        raise ValueError(f"the profile has no section {section_name!r}")
    section = profile.get(section_name) or {}
    if not isinstance(section, dict):
        raise ValueError(f"section `{section_name}` is not a mapping of settings")
    fixed = sorted({"frames", "size"} & set(section))
    if fixed:
        raise ValueError(f"{section_name}: {fixed} are not segmenter settings; frames and size come from `train` "
                         f"(the clips the segmenter judges)")
    try:
        check_known("segmenter settings", section, set(SegConfig.__dataclass_fields__) - {"frames", "size"})
        return SegConfig(frames=profile["train"]["frames"], size=profile["train"]["size"], **section)
    except ValueError as err:
        raise ValueError(f"{section_name}.{err}") from None


def trained_segmenter(config: SegConfig, data_root, path, **kwargs) -> tuple[Path, str]:
    """`path` when a segmenter with this config is already there (settings added since it was stored count at
    their defaults), else train it. Returns (path, source)."""
    path = Path(path)
    if path.is_file() and asdict(SegConfig(**load_checkpoint(path)["config"])) == asdict(config):
        return path, "stored"
    return train_segmenter(config, data_root, path, **kwargs), "trained here"
