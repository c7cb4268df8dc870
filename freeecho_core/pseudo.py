"""Pseudo image, its optimal-transport intensity matching and the pseudo video (paper section 2,
"Pseudo Video Generation", eq. (3)).

A 5-label map m (0 outside the scan sector, 1 sector tissue, 2 LV cavity, 3 myocardium, 4 left atrium;
`data.case.to_five_labels`) becomes a grey pseudo image I_0 with one intensity per label. Its grey levels
are then moved onto the intensity distribution mu of real echo frames by the optimal transport problem of
eq. (3), solved with Sinkhorn (squared cost, reg = 1e-3), and the result is repeated over K frames.

Choices made here (book/design.md, section 2, describes what the authors' script did instead):
- Source distribution: the distinct grey levels x_a of I_0 inside the sector ("atoms", at most 4), each
  weighted by its fraction a of the sector's pixels. Labels that share a grey level are one atom: OT
  sees grey levels, not labels. Atoms are exact (no re-binning of 0.5 to a bin centre) and small (4 x 256).
- Target distribution: a histogram (x_b, b) of the grey levels inside the sector of many real frames
  (`data.histogram.intensity_histogram`), not one frame.
- Cost c(x, y) = (x - y)^2 on grey levels in [0, 1], so costs lie in [0, 1] and reg is relative to that.
- Two readings of the plan P: `barycentric_map` (each atom goes to E[y | x], one grey level per label,
  the paper's deterministic reading) and `stochastic_map` (each pixel draws y from its atom's row of P,
  so the image takes on the target's grey-level statistics, not its spatial texture).
Exact 1-D OT (`exact_plan`, quantile matching) cross-checks every Sinkhorn result.
All arrays are numpy, float64 inside; only `pseudo_video` returns a torch tensor.
"""
from __future__ import annotations

import numpy as np
import ot
import torch
from matplotlib import colormaps

from freeecho_core.data.case import FIVE_LABELS
from freeecho_core.data.clips import resize_labels_nearest

AUTHORS_INTENSITIES = {0: 0.0, 1: 0.5, 2: 0.0, 3: 1.0, 4: 0.2}  # label -> grey level in [0, 1] (authors' code)
LV_LABEL = 2
REC601_LUMA = np.array([0.299, 0.587, 0.114])  # grey = luma of an (R, G, B) colour


def check_labels(labels) -> np.ndarray:
    """Return `labels` as an array if it is a valid (H, W) integer 5-label map; raise ValueError otherwise."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"a label map must hold integers, got dtype {labels.dtype}; labels are categories "
            "(convert with .astype(np.int64), and never resize them with interpolation)"
        )
    if labels.ndim != 2:
        raise ValueError(
            f"a label map must be 2-D (H, W), got shape {labels.shape}; for a (T, H, W) stack pass the "
            "end-diastolic frame labels[0]"
        )
    unknown = sorted(set(np.unique(labels).tolist()) - set(FIVE_LABELS))
    if unknown:
        raise ValueError(
            f"unknown labels {unknown}; expected the 5-label convention {FIVE_LABELS} "
            "(CAMUS label files: convert with data.case.to_five_labels)"
        )
    if not (labels == LV_LABEL).any():
        raise ValueError("the label map has no LV cavity (label 2): nothing to condition the video on")
    return labels


def resize_labels(labels, size) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) 5-label map to (size, size) or size = (h, w)
    (`data.clips.resize_labels_nearest`: labels are never interpolated; integer factors are exact)."""
    return resize_labels_nearest(check_labels(labels), size)


def pseudo_image(labels, intensities=AUTHORS_INTENSITIES) -> np.ndarray:
    """The intensity image I_0 of paper section 2: label k painted with grey level intensities[k].

    labels: (H, W) integer 5-label map. Returns float64 (H, W) in [0, 1].
    """
    labels = check_labels(labels)
    missing = sorted(set(FIVE_LABELS) - set(intensities))
    if missing:
        raise ValueError(f"intensities gives no grey level for labels {missing}")
    lut = np.array([intensities[k] for k in sorted(FIVE_LABELS)], dtype=np.float64)
    if not np.all((lut >= 0) & (lut <= 1)):
        raise ValueError(f"intensities must lie in [0, 1], got {intensities}")
    return lut[labels]


def source_atoms(labels, intensities=AUTHORS_INTENSITIES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The source distribution of eq. (3): the grey levels of I_0 inside the sector (label != 0).

    labels: (H, W) integer 5-label map. Returns x_a (n,) sorted distinct grey levels, a (n,) their pixel
    fractions (sum 1), and index (H, W) int64: the atom of each pixel, -1 outside the sector.
    """
    I_0 = pseudo_image(labels, intensities)
    sector = np.asarray(labels) != 0
    x_a, inverse, counts = np.unique(I_0[sector], return_inverse=True, return_counts=True)
    index = np.full(I_0.shape, -1, dtype=np.int64)
    index[sector] = inverse
    return x_a, counts / counts.sum(), index


def _distribution(weights, points, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Upcast a discrete distribution to float64 and normalise its weights to sum 1."""
    weights, points = np.asarray(weights, np.float64), np.asarray(points, np.float64)
    if weights.ndim != 1 or weights.shape != points.shape:
        raise ValueError(f"{name}: weights {weights.shape} and points {points.shape} must be equal 1-D shapes")
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"{name}: weights must be non-negative with a positive sum")
    return weights / weights.sum(), points


def _plan_info(plan, a, b, x_a, x_b) -> dict:
    """Marginal errors max|P 1 - a|, max|P^T 1 - b| and the transport cost <P, C> of a plan."""
    C = ot.dist(x_a[:, None], x_b[:, None], metric="sqeuclidean")
    return {
        "marginal_error_a": float(np.abs(plan.sum(1) - a).max()),
        "marginal_error_b": float(np.abs(plan.sum(0) - b).max()),
        "transport_cost": float(np.sum(plan * C)),
    }


def sinkhorn_plan(a, x_a, b, x_b, reg: float = 1e-3, *, tol: float = 1e-9, numItermax: int = 100_000):
    """Entropic OT plan between 1-D distributions (a at x_a) and (b at x_b) for eq. (3).

    Solves min_P <P, C> + reg sum P log P, P 1 = a, P^T 1 = b, C_ij = (x_a[i] - x_b[j])^2, with POT's
    log-domain Sinkhorn in float64 (any input dtype is upcast; weights are normalised to sum 1). With grey
    levels in [0, 1] the costs lie in [0, 1]: reg = 1e-3 (the paper's value) is relative to that scale.
    Shapes: a, x_a (n,); b, x_b (m,). Returns plan (n, m) float64 and info with marginal_error_a,
    marginal_error_b (max abs), transport_cost <P, C> and n_iter. Raises RuntimeError if a marginal
    error exceeds `tol` (Sinkhorn did not converge within numItermax iterations).
    """
    a, x_a = _distribution(a, x_a, "source")
    b, x_b = _distribution(b, x_b, "target")
    i, j = a > 0, b > 0  # solve on the supports: the log-domain solver takes log(a), log(b)
    C = ot.dist(x_a[i, None], x_b[j, None], metric="sqeuclidean")
    P, log = ot.sinkhorn(a[i], b[j], C, reg, method="sinkhorn_log", numItermax=numItermax,
                         stopThr=tol, log=True, warn=False)
    plan = np.zeros((a.size, b.size))
    plan[np.ix_(i, j)] = P
    info = {**_plan_info(plan, a, b, x_a, x_b), "n_iter": int(log["niter"]) + 1}
    error = max(info["marginal_error_a"], info["marginal_error_b"])
    if not error <= tol:
        raise RuntimeError(
            f"Sinkhorn did not converge: marginal error {error:.2e} > tol {tol:.0e} after {info['n_iter']} "
            f"iterations at reg={reg} (costs in [0, 1]); raise numItermax or reg, or use exact_plan"
        )
    return plan, info


def exact_plan(a, x_a, b, x_b):
    """Exact OT plan between 1-D distributions (a at x_a) and (b at x_b), squared cost (POT `emd_1d`).

    In 1-D this is quantile matching: the k-th quantile of the source goes to the k-th quantile of the
    target. Same shapes, upcasting and info as `sinkhorn_plan` (without n_iter).
    """
    a, x_a = _distribution(a, x_a, "source")
    b, x_b = _distribution(b, x_b, "target")
    plan = np.asarray(ot.emd_1d(x_a, x_b, a, b, metric="sqeuclidean", dense=True), dtype=np.float64)
    return plan, _plan_info(plan, a, b, x_a, x_b)


METHODS = ("sinkhorn", "exact")
MAPPINGS = ("barycentric", "stochastic")


def barycentric_map(plan, x_b) -> np.ndarray:
    """T(x_a[i]) = E[y | x = x_a[i]] = sum_j P_ij x_b[j] / sum_j P_ij: one new grey level per atom.

    plan: (n, m); x_b: (m,). Returns (n,) float64.
    """
    plan, x_b = np.asarray(plan, np.float64), np.asarray(x_b, np.float64)
    mass = plan.sum(1)
    if np.any(mass <= 0):
        raise ValueError("every source atom needs mass in the plan; drop atoms with zero weight")
    return plan @ x_b / mass


def stochastic_map(source_index, plan, x_b, rng: np.random.Generator) -> np.ndarray:
    """Each pixel draws its grey level y ~ P_i. / sum_j P_ij from the plan row of its source atom i.

    source_index: integer array of any shape (e.g. (H, W)) of atom indices into the rows of plan (n, m),
    -1 for pixels without an atom (outside the sector, left at 0); x_b: (m,) target grey levels.
    Returns float64 of the shape of source_index. All randomness comes from `rng`.
    """
    source_index = np.asarray(source_index)
    plan, x_b = np.asarray(plan, np.float64), np.asarray(x_b, np.float64)
    if not np.issubdtype(source_index.dtype, np.integer) or source_index.max() >= plan.shape[0]:
        raise ValueError(f"source_index must hold integer atom indices below {plan.shape[0]} (or -1)")
    y = np.zeros(source_index.shape)
    for i, row in enumerate(plan):
        pixels = source_index == i
        if pixels.any():
            y[pixels] = rng.choice(x_b, size=int(pixels.sum()), p=row / row.sum())
    return y


def match_intensities(
    labels,
    target,
    method: str = "sinkhorn",
    mapping: str = "barycentric",
    reg: float = 1e-3,
    rng: np.random.Generator | None = None,
    intensities=AUTHORS_INTENSITIES,
) -> tuple[np.ndarray, dict]:
    """The OT step of paper eq. (3): the pseudo image I_0 with its grey levels moved onto the target.

    labels: (H, W) integer 5-label map; target: (centres, weights) on [0, 1], e.g. `data.histogram.intensity_histogram`.
    method: "sinkhorn" (the paper's, at `reg`) or "exact"; mapping: "barycentric" or "stochastic" (needs
    `rng`). Pixels outside the sector (label 0) stay 0. Returns the image, float64 (H, W) in [0, 1], and a
    report: the plan's info (marginal errors, transport cost), plan (n, m), source_levels x_a,
    source_weights a, mapped_levels T(x_a), and the W1 distances to the target of the source grey levels
    (W1_source) and of the matched image's sector pixels (W1_matched).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {list(MAPPINGS)}")
    if mapping == "stochastic" and rng is None:
        raise ValueError("mapping='stochastic' draws pixels: pass rng=np.random.default_rng(seed)")
    b, x_b = _distribution(target[1], target[0], "target")
    if x_b.min() < 0 or x_b.max() > 1:
        raise ValueError("target grey levels must lie in [0, 1] (see data.histogram.intensity_histogram)")
    x_a, a, index = source_atoms(labels, intensities)
    plan, info = sinkhorn_plan(a, x_a, b, x_b, reg) if method == "sinkhorn" else exact_plan(a, x_a, b, x_b)
    T = barycentric_map(plan, x_b)
    if mapping == "barycentric":
        image = np.where(index >= 0, T[index], 0.0)
    else:
        image = stochastic_map(index, plan, x_b, rng)
    report = {
        **info,
        "plan": plan,
        "source_levels": x_a,
        "source_weights": a,
        "mapped_levels": T,
        "W1_source": float(ot.wasserstein_1d(x_a, x_b, a, b)),
        "W1_matched": float(ot.wasserstein_1d(image[index >= 0], x_b, None, b)),
    }
    return image, report


def pseudo_video(image, frames: int) -> torch.Tensor:
    """The still pseudo video: an image in [0, 1] mapped to 2 I - 1 and repeated over K = `frames` frames.

    image: (H, W) or a batch (B, H, W), numpy or torch. Returns float32 (1, 1, K, H, W) or (B, 1, K, H, W)
    in [-1, 1], the data range of the diffusion model (book/design.md, section 1).
    """
    I = torch.as_tensor(image, dtype=torch.float32)
    if I.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (B, H, W), got shape {tuple(I.shape)}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if I.min() < 0 or I.max() > 1:
        raise ValueError(f"image must lie in [0, 1], got [{I.min().item()}, {I.max().item()}]")
    I = I if I.ndim == 3 else I[None]
    return (2 * I - 1)[:, None, None].repeat(1, 1, frames, 1, 1)


def sdedit_colour_image(labels) -> np.ndarray:
    """The plain SDEdit baseline's input: label k painted with the luma of tab20 colour k, no OT.

    The authors painted labels with matplotlib's tab20 colours; the model sees one grey channel, so each
    colour becomes 0.299 R + 0.587 G + 0.114 B. Label 0 (outside the sector) stays 0.
    labels: (H, W) integer 5-label map. Returns float64 (H, W) in [0, 1].
    """
    labels = check_labels(labels)
    grey = np.array(colormaps["tab20"].colors[: len(FIVE_LABELS)]) @ REC601_LUMA
    grey[0] = 0.0
    return grey[labels]
