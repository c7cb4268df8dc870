"""Video synthesis from an end-diastolic map: the methods, model loading, and a three-line Python API.

Methods (paper section 2 and its baselines; `Method.kind`):
- "free-echo": the OT-matched pseudo video (Sinkhorn, barycentric map) noised to sigma(t_i) and denoised by the
  unconditional model (SDEdit from the pseudo video);
- "free-echo-stochastic": ours, each pixel of the pseudo image drawn from its row of the OT plan;
- "sdedit": the SDEdit baseline, the label image painted with tab20 greys (no OT), from t_i;
- "clsfree": the conditional model with classifier-free guidance (w = 7), from pure noise over all 64 steps;
- "free-echo-ilvr", "free-echo-nc", "free-echo-ilvr-nc": Free-Echo with training-free guidance towards the pseudo
  video's low band (`guidance`: ILVR after each step, noise calibration of the start, or both), not the paper's.
`generate` is what `freeecho generate`, `freeecho evaluate` (the study) and the notebooks all call.

The API, for a stored or trained model::

    pipe = FreeEcho.from_checkpoint()                  # the stored CPU model, or a path to any ema.pt
    out = pipe(labels, samples=4, start_step=15)       # labels: (H, W) integer map, any size and convention
    out.videos                                         # (4, K, h, w) uint8, cropped to the map's aspect
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from freeecho_core.checkpoint import DEFAULT_FPS, LoadedModel, load_model, trained_look
from freeecho_core.data.case import one_hot_maps
from freeecho_core.data.clips import ClipConfig, crop_to_aspect, resize_frames, resize_labels_nearest
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.histogram import intensity_histogram
from freeecho_core.data.maps import prepare_map
from freeecho_core.data.phantom import PhantomConfig, make_case
from freeecho_core.edm import EDMPrecond, karras_sigmas, randn_per_sample
from freeecho_core.guidance import GUIDES, Guide, guide_mask
from freeecho_core.motion import beating_maps, beating_pseudo_video
from freeecho_core.pseudo import match_intensities, pseudo_video, sdedit_colour_image
from freeecho_core.sampler import DEFAULT_SAMPLER, SOLVERS, SamplerConfig, cfg_denoiser, sdedit_sample

GUIDED_KINDS = tuple(f"free-echo-{name}" for name in GUIDES)
METHOD_KINDS = ("sdedit", "clsfree", "free-echo", "free-echo-stochastic", *GUIDED_KINDS)
DEFAULT_KINDS = METHOD_KINDS[:5]  # the study's rows: the paper's Table 1, our stochastic OT, and ILVR
# The stored model trained on a 2-core CPU (the cpu profile: 16 frames x 64 x 64, phantom CAMUS data).
STORED_MODELS = Path(__file__).resolve().parents[1] / "checkpoints" / "cpu"
DEFAULT_CHECKPOINT = STORED_MODELS / "phantom-camus" / "unconditional" / "ema.pt"
# Its sibling on the EchoNet look, for LV-only maps (EchoNet-Dynamic's tracings hold only the LV).
ECHONET_CHECKPOINT = STORED_MODELS / "phantom-echonet" / "unconditional" / "ema.pt"
# The ED map that ships with the repository (a phantom 2CH view): the README's first `generate` command.
EXAMPLE_MAP = Path(__file__).resolve().parents[1] / "examples" / "ed_map_2ch.png"


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # one of METHOD_KINDS
    start_step: int  # index into the 64-step schedule (0 for Cls-Free: from pure noise)
    guide: Guide | None = None  # the guided kinds' settings (`guidance.Guide`, its name the kind's end)

    def __post_init__(self):
        if self.kind not in METHOD_KINDS:
            raise ValueError(f"method kind must be one of {METHOD_KINDS}, got {self.kind!r}")
        if (self.kind in GUIDED_KINDS) != (self.guide is not None) or (
                self.guide is not None and self.kind != f"free-echo-{self.guide.name}"):
            raise ValueError(f"method {self.kind!r} needs {'its' if self.kind in GUIDED_KINDS else 'no'} guide, "
                             f"got {self.guide}")
        steps = len(karras_sigmas()) - 1  # the 64 steps of the schedule
        if not 0 <= self.start_step < steps:
            raise ValueError(f"start step t_i must be in 0..{steps - 1}, got {self.start_step}")


def ot_target(data_root: str | os.PathLike, clip: ClipConfig, seed: int = 0, bins: int = 256):
    """The OT target of a model trained on `data_root`: the grey-level histogram (centres, weights) of that
    dataset's TRAIN clips, the split its training `seed` drew (`LoadedModel.clip` and `.seed`)."""
    return EchoClips(data_root, "TRAIN", clip, seed=seed).intensity_histogram(bins)


def phantom_target(size: int, frames: int, cases: int = 4, bins: int = 256, look: str = "camus"):
    """The OT target when no dataset is given: the grey-level histogram of a few phantom recordings of a look
    ("camus" or "echonet": the scanner settings the model was trained on) at the model's size (the embedded
    default data), (centres, weights)."""
    pooled = 0.0
    for index in range(cases):
        case = make_case(0, index, ("2CH", "4CH")[index % 2], PhantomConfig(height=size, frames=frames, look=look))
        video = (resize_frames(case.frames, size) / 255.0).clip(0, 1)  # frame by frame: OpenCV takes <= 4 channels
        sector = resize_labels_nearest(case.sector, size).astype(bool)
        centres, weights = intensity_histogram(video, sector, bins)
        pooled = pooled + weights
    return centres, pooled / pooled.sum()


def initial_videos(method: Method, ed_map: np.ndarray, target, frames: int, seeds: list[int],
                   label_maps: np.ndarray | None = None) -> torch.Tensor:
    """The clean init of one map for an SDEdit-type method: (n, 1, K, S, S) in [-1, 1]. label_maps: (K, S, S)
    5-label maps of a beating heart (`motion.beating_maps`, frame 0 the ED map) for Free-Echo's pseudo video."""
    if label_maps is not None:
        if method.kind != "free-echo" and method.kind not in GUIDED_KINDS:
            raise ValueError(f"a beating pseudo video is made for the free-echo methods, not {method.kind}")
        if label_maps.shape != (frames, *ed_map.shape) or not np.array_equal(label_maps[0], ed_map):
            raise ValueError(f"label_maps must be ({frames}, {ed_map.shape[0]}, {ed_map.shape[1]}) 5-label maps "
                             f"that start with the ED map, got shape {label_maps.shape}")
        return beating_pseudo_video(label_maps, target).expand(len(seeds), -1, -1, -1, -1)
    if method.kind == "sdedit":
        return pseudo_video(sdedit_colour_image(ed_map), frames).expand(len(seeds), -1, -1, -1, -1)
    if method.kind == "free-echo" or method.kind in GUIDED_KINDS:
        image, _ = match_intensities(ed_map, target, "sinkhorn", "barycentric")
        return pseudo_video(image, frames).expand(len(seeds), -1, -1, -1, -1)
    images = [match_intensities(ed_map, target, "sinkhorn", "stochastic", rng=np.random.default_rng(s))[0]
              for s in seeds]
    return pseudo_video(np.stack(images), frames)


@torch.no_grad()
def generate(method: Method, ed_map: np.ndarray, seeds: list[int], models: dict, target, frames: int,
             sampler: SamplerConfig, device, progress: bool = False, label_maps: np.ndarray | None = None) -> torch.Tensor:
    """n = len(seeds) videos (n, K, S, S) in [-1, 1] for one ED map (5-label (S, S) array). models: the
    denoisers by role, "unconditional" and/or "clsfree". progress: a bar over the sampling steps. label_maps:
    the frames' label maps of a beating pseudo video (Free-Echo only; `initial_videos`)."""
    sigmas = karras_sigmas()
    churn = sampler.solver_options()
    gens = [torch.Generator(device).manual_seed(s) for s in seeds]
    size = ed_map.shape[-1]
    if method.kind == "clsfree":
        cond = one_hot_maps(torch.from_numpy(ed_map)[None].to(device)).expand(len(seeds), -1, -1, -1)
        x = sigmas[0] * randn_per_sample((len(seeds), 1, frames, size, size), gens, device=device)
        guided = cfg_denoiser(models["clsfree"], cond, sampler.guidance)
        schedule = sampler.schedule(0).to(device)
        out = SOLVERS[sampler.solver](guided, x, schedule, generator=gens, progress=progress, **churn)
    else:
        init = initial_videos(method, ed_map, target, frames, seeds, label_maps).to(device)
        weight = None
        if method.guide is not None and method.guide.mask:
            maps = label_maps if label_maps is not None else np.broadcast_to(ed_map, (frames, *ed_map.shape))
            weight = guide_mask(maps, method.guide.mask).to(device)[None, None]
        out = sdedit_sample(models["unconditional"], init, sigmas, method.start_step, generator=gens,
                            solver=sampler.solver, steps=sampler.respaced_steps(method.start_step), progress=progress,
                            guide=method.guide, guide_weight=weight, **churn)
    return out[:, 0].float().clamp(-1, 1).cpu()


def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """Videos in [-1, 1] -> uint8 grey levels."""
    return ((videos + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).numpy()


@dataclass
class Synthesis:
    """What `FreeEcho` returns for one map.

    videos: (n, K, h, w) uint8, cropped back to the map's aspect ratio (h or w is the model's size S).
    square: (n, K, S, S) uint8, the model's output before cropping.
    ed_map: (S, S) 5-label model input; convention: how the map was read; seeds: one per video.
    label_maps: (K, S, S) 5-label maps of the beating pseudo video (None: the ED map held still).
    """

    videos: np.ndarray
    square: np.ndarray
    ed_map: np.ndarray
    convention: str
    seeds: list[int]
    method: Method
    label_maps: np.ndarray | None = None


class FreeEcho:
    """A trained denoiser with what sampling from it needs: its clip size, the OT target, its frame rate.

    A checkpoint of the unconditional model samples "free-echo" (default), "free-echo-stochastic" and "sdedit";
    one of the conditional model samples "clsfree"."""

    def __init__(self, denoiser: EDMPrecond, frames: int, size: int, *, target=None, fps: float = DEFAULT_FPS,
                 device="cpu", source: str = ""):
        self.denoiser, self.frames, self.size, self.fps, self.device = denoiser, frames, size, fps, device
        self.conditional = bool(denoiser.net.config.cond_channels)
        self.target = phantom_target(size, frames) if target is None and not self.conditional else target
        self.source = source

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike = DEFAULT_CHECKPOINT, *, data: str | os.PathLike | None = None,
                        target=None, device="cpu"):
        """Load ema.pt (or checkpoint.pt). The OT target (centres, weights): `target` if given, else the TRAIN
        clips of `data`, the model's training dataset (`ot_target`), else the phantom's (`phantom_target`)."""
        return cls.from_model(load_model(path, device), data=data, target=target)

    @classmethod
    def from_model(cls, model: LoadedModel, *, data: str | os.PathLike | None = None, target=None):
        """The pipeline of a loaded model (`checkpoint.load_model`), its OT target as in `from_checkpoint` (the
        phantom's of the look the model was trained on, `checkpoint.trained_look`)."""
        if target is None and data is not None:
            target = ot_target(data, model.clip, model.seed)
        elif target is None and model.role == "unconditional":
            target = phantom_target(model.clip.size, model.clip.frames, look=trained_look(model.path))
        device = next(model.denoiser.parameters()).device
        return cls(model.denoiser, model.clip.frames, model.clip.size, target=target, fps=model.fps, device=device,
                   source=str(model.path))

    def __call__(self, labels, samples: int = 4, start_step: int = 15, seed: int = 0, *, method: str | None = None,
                 convention: str = "auto", sampler: SamplerConfig = DEFAULT_SAMPLER, progress: bool = False,
                 ef: float | None = None, es_map=None, es_frame: float | None = None,
                 guide: Guide | None = None) -> Synthesis:
        """`samples` videos from one ED map (a file path or an (H, W) integer array, in any convention of
        `data.maps`); sample k uses seed + k; progress: a bar over the sampling steps. With a target `ef` or an
        `es_map` (a file or array like the ED map's), Free-Echo's pseudo video beats (`motion.beating_maps`),
        end systole at frame `es_frame` (default: the last frame, as in CAMUS's ED-to-ES half sequences). A `guide`
        (`guidance.Guide`) makes Free-Echo a guided method (kind "free-echo-<guide name>"); a guided `method` alone
        takes its guide's default settings."""
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        kind = method or ("clsfree" if self.conditional else "free-echo")
        if guide is not None:
            if kind not in ("free-echo", f"free-echo-{guide.name}"):
                raise ValueError(f"a guide guides the free-echo method, not {kind!r}")
            kind = f"free-echo-{guide.name}"
        elif kind in GUIDED_KINDS:
            guide = Guide.named(kind.removeprefix("free-echo-"))
        if (kind == "clsfree") != self.conditional:
            model = "a conditional (Cls-Free)" if self.conditional else "an unconditional"
            raise ValueError(f"{self.source or 'this model'} is {model} model; it cannot sample {kind!r} "
                             f"({'only clsfree' if self.conditional else 'free-echo, free-echo-stochastic or sdedit'})")
        chosen = Method(kind if kind == "clsfree" else f"{kind}@{start_step}", kind, 0 if kind == "clsfree" else start_step,
                        guide)
        prepared = prepare_map(labels, self.size, convention)
        label_maps = None
        if ef is not None or es_map is not None:
            es = None
            if es_map is not None:
                es = prepare_map(es_map, self.size, convention)
                if es.shape != prepared.shape:
                    raise ValueError(f"the ES map is {es.shape[0]} x {es.shape[1]} pixels and the ED map "
                                     f"{prepared.shape[0]} x {prepared.shape[1]}: give the two maps of one recording")
            label_maps = beating_maps(prepared.ed_map, self.frames, self.frames - 1 if es_frame is None else es_frame,
                                      ef, None if es is None else es.ed_map)
        seeds = [seed + k for k in range(samples)]
        role = "clsfree" if self.conditional else "unconditional"
        square = to_uint8(generate(chosen, prepared.ed_map, seeds, {role: self.denoiser}, self.target, self.frames,
                                   sampler, self.device, progress, label_maps))
        return Synthesis(crop_to_aspect(square, prepared.shape), square, prepared.ed_map, prepared.convention,
                         seeds, chosen, label_maps)
