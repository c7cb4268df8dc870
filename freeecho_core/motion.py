"""A beating pseudo video: label maps that follow a cardiac cycle with a chosen ejection fraction.

The paper's pseudo video is one image repeated over K frames, so all motion is the model's invention. Here the
label map itself moves, frame by frame, before the grey levels of eq. (3) are put on it:

- The LV cavity contracts from ED to the end-systolic (ES) size that a target EF implies, and relaxes after it.
  Without an ES map, the cavity is eroded from its wall inwards (never from the mitral plane, where it meets the
  left atrium) and the eroded ring becomes myocardium, so the wall thickens as the cavity empties; the left
  atrium grows into the surrounding tissue by the same depth (it fills during systole). With an ES map (CAMUS
  provides one), each structure moves between its ED and ES shapes by interpolating their signed distance
  functions.
- How far a frame has contracted is set by the EF that the project's anatomy metrics measure: the
  single-plane area-length volume V = 8 A^2 / (3 pi L) (`data.lv.lv_volume_curve`). Each frame's contraction is
  solved for (bisection) so that V_k / V_ED follows the phantom's volume curve over a cycle
  (`data.phantom.volume_curve`: ejection to 1 - EF at ES, rapid filling, diastasis, atrial kick), so the EF
  proxy of the label sequence itself is the target, up to the pixel grid.
- The timing, the number of frames from ED to ES, is read from the data (`es_frame_of_clips`): the median over
  a split's clips of the frame that carries the ES annotation.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from freeecho_core.data.case import FIVE_LABELS
from freeecho_core.data.clips import UNLABELLED
from freeecho_core.data.echonet import principal_axis
from freeecho_core.data.lv import camus_from_five, lv_volume_curve
from freeecho_core.data.phantom import volume_curve
from freeecho_core.pseudo import check_labels, match_intensities

TISSUE, LV, MYO, LA = 1, 2, 3, 4  # the 5-label convention (data.case.FIVE_LABELS)
ES_PHASE = 0.38  # end systole as a fraction of the cycle: the middle of the phantom's 0.34-0.42
EF_RANGE = (0.05, 0.85)  # target EFs the contraction is solved for
BISECTION_STEPS = 40


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance in pixels to the mask's border: negative inside, positive outside."""
    mask = np.asarray(mask, dtype=bool)
    return distance_transform_edt(~mask) - distance_transform_edt(mask)


def volume_fraction(ed_map: np.ndarray, frame_map: np.ndarray) -> float:
    """V / V_ED of a frame's 5-label map against the ED map (area-length volumes)."""
    v_ed, v = lv_volume_curve(camus_from_five(np.stack([ed_map, frame_map])))
    return float(v / v_ed)


class Erosion:
    """Contraction without an ES map: the `amount` cavity pixels nearest its wall (ties: the farthest from the
    long axis first, so that the cavity narrows before it shortens) become myocardium, and the left atrium
    takes half as many pixels of the sector tissue nearest to it. The cavity is never eroded from the mitral
    plane, where it meets the left atrium."""

    def __init__(self, ed_map: np.ndarray):
        self.ed_map = ed_map
        lv = ed_map == LV
        wall = ~(lv | (ed_map == LA))
        depth = distance_transform_edt(~wall)  # distance of each pixel to the nearest wall pixel
        centre, axis = principal_axis(lv)
        ys, xs = np.nonzero(lv)
        off_axis = np.abs((xs - centre[0]) * axis[1] - (ys - centre[1]) * axis[0])
        order = np.lexsort((-off_axis, depth[ys, xs]))
        self.lv_pixels = (ys[order], xs[order])
        self.la_pixels = None
        if (ed_map == LA).any():
            ys, xs = np.nonzero(ed_map == TISSUE)
            order = np.argsort(distance_transform_edt(ed_map != LA)[ys, xs], kind="stable")
            self.la_pixels = (ys[order], xs[order])
        self.max_amount = float(len(order) - 1)  # one cavity pixel is always left

    def __call__(self, amount: float) -> np.ndarray:
        out = self.ed_map.copy()
        n = int(round(amount))
        out[self.lv_pixels[0][:n], self.lv_pixels[1][:n]] = MYO
        if self.la_pixels is not None:
            out[self.la_pixels[0][: n // 2], self.la_pixels[1][: n // 2]] = LA
        return out


class Interpolation:
    """Contraction towards a given ES map. Each structure's border moves by interpolating its signed distance
    functions at ED and ES, (1 - a) d_ED + a d_ES < 0; for the cavity, whose volume sets the EF, the pixels that
    change sides are taken one at a time, in the order of the `a` at which they change (ties: the farthest from
    the long axis first), so that `amount` counts them: 0 is the ED map, `max_amount` the ES map. The wall and
    the atrium follow at the `a` of the last cavity pixel moved. The sector is the ED map's."""

    def __init__(self, ed_map: np.ndarray, es_map: np.ndarray):
        if ed_map.shape != es_map.shape:
            raise ValueError(f"the ES map has shape {es_map.shape}, the ED map {ed_map.shape}: give both at one size")
        self.ed_map, self.sector = ed_map, ed_map > 0
        self.fields = {name: (signed_distance(mask(ed_map)), signed_distance(mask(es_map) & self.sector))
                       for name, mask in (("epi", lambda m: (m == LV) | (m == MYO)), ("la", lambda m: m == LA))}
        d_ed, d_es = signed_distance(ed_map == LV), signed_distance((es_map == LV) & self.sector)
        ys, xs = np.nonzero((d_ed < 0) != (d_es < 0))  # never 0: a pixel lies at least 1 inside or outside
        switch = d_ed[ys, xs] / (d_ed[ys, xs] - d_es[ys, xs])
        centre, axis = principal_axis(ed_map == LV)
        off_axis = np.abs((xs - centre[0]) * axis[1] - (ys - centre[1]) * axis[0])
        order = np.lexsort((-off_axis, switch))
        self.switch_pixels, self.switch_at = (ys[order], xs[order]), switch[order]
        self.max_amount = float(len(order))

    def __call__(self, amount: float) -> np.ndarray:
        n = int(round(amount))
        a = 1.0 if n >= len(self.switch_at) else (float(self.switch_at[n - 1]) if n else 0.0)
        inside = {name: ((1 - a) * ed + a * es) < 0 for name, (ed, es) in self.fields.items()}
        lv = self.ed_map == LV
        lv[self.switch_pixels[0][:n], self.switch_pixels[1][:n]] ^= True
        out = np.where(self.sector, TISSUE, 0)
        out[inside["la"] & self.sector] = LA
        out[inside["epi"] & self.sector] = MYO
        out[lv] = LV
        return out


def solve_contraction(family, ed_map: np.ndarray, fraction: float) -> float:
    """The contraction amount of `family` whose map has V / V_ED nearest `fraction` (bisection: the volume falls,
    by and large, as the amount grows)."""
    lo, hi = 0.0, family.max_amount
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if volume_fraction(ed_map, family(mid)) > fraction else (lo, mid)
    # The maps change in whole pixels: of the two sides of the last step, the one whose volume is nearer.
    return min((lo, hi), key=lambda amount: abs(volume_fraction(ed_map, family(amount)) - fraction))


def cycle_fractions(frames: int, es_frame: float, ef: float) -> np.ndarray:
    """V_k / V_ED of K frames from ED with ES at `es_frame` (fractional frames allowed): the phantom's volume
    curve over a cycle of es_frame / ES_PHASE frames."""
    if not 0 < es_frame <= frames - 1:
        raise ValueError(f"es_frame {es_frame:g}: end systole must fall after ED (frame 0) and within the clip's "
                         f"{frames} frames (at most {frames - 1})")
    phase = np.arange(frames) / (es_frame / ES_PHASE)
    return volume_curve(phase, ef, ES_PHASE)


def beating_maps(ed_map, frames: int, es_frame: float, ef: float | None = None, es_map=None) -> np.ndarray:
    """(K, S, S) 5-label maps of a cardiac cycle from an ED map: frame 0 is the ED map, the cavity is smallest
    at `es_frame`, and the area-length volume follows `cycle_fractions` with the target `ef`; or, given an ES map
    instead, the structures move towards its shapes and the EF is its own."""
    ed_map = check_labels(ed_map)
    if (ef is None) == (es_map is None):
        raise ValueError("give a target EF or an ES map (which sets the EF), one of the two")
    if es_map is not None:
        family = Interpolation(ed_map, check_labels(es_map))
        ef = 1 - volume_fraction(ed_map, family(family.max_amount))
    else:
        family = Erosion(ed_map)
    if not EF_RANGE[0] <= ef <= EF_RANGE[1]:
        source = "the ES map's EF" if es_map is not None else "the target EF"
        raise ValueError(f"{source} must lie in [{EF_RANGE[0]}, {EF_RANGE[1]}], got {ef:.3g}")
    maps = [ed_map]
    for fraction in cycle_fractions(frames, es_frame, ef)[1:]:
        maps.append(family(solve_contraction(family, ed_map, fraction)) if fraction < 1 else ed_map)
    return np.stack(maps)


def es_frame_of_clips(clips) -> float:
    """The median, over prepared clips (`data.clips.Clip`), of the index of the last annotated frame after ED:
    the number of clip frames from ED to ES in the data (CAMUS and EchoNet annotate ED and ES). Clips whose ES
    lies beyond their K frames do not count; none left raises."""
    positions = []
    for clip in clips:
        labelled = [k for k in range(1, len(clip.frame_labels)) if (clip.frame_labels[k] != UNLABELLED).any()]
        if labelled:
            positions.append(labelled[-1])
    if not positions:
        raise ValueError("no clip has an annotated frame after ED within its frames: the ED-to-ES timing is unknown")
    return float(np.median(positions))


def beating_pseudo_video(maps: np.ndarray, target) -> torch.Tensor:
    """The pseudo video of a label sequence, (1, 1, K, S, S) in [-1, 1]: every frame's labels take the grey
    levels that eq. (3) gives the ED map (frame 0; `pseudo.match_intensities`, Sinkhorn, barycentric), so that
    the shapes move and the grey levels stay."""
    maps = np.asarray(maps)
    image, _ = match_intensities(maps[0], target, "sinkhorn", "barycentric")
    lookup = np.full(max(FIVE_LABELS) + 1, np.nan)
    for label in np.unique(maps[0]):
        lookup[label] = image[maps[0] == label][0]
    video = lookup[maps]
    if np.isnan(video).any():
        missing = sorted(set(np.unique(maps[np.isnan(video)]).tolist()))
        raise ValueError(f"labels {missing} appear in later frames but not at ED: their grey level is unknown")
    return (2 * torch.as_tensor(video, dtype=torch.float32) - 1)[None, None]
