"""How much the hearts of a folder differ: the anatomy statistics of its end-diastolic LV masks.

A generator that follows its map is only testable on hearts that differ: if every heart had the same LV, a video
of the wrong heart would score as well as one of the right heart. Per view, over the recordings of a CAMUS (either
release) or EchoNet-Dynamic folder, real or phantom:
- lv_area_share: the ED LV's share of the frame after padding it to a square and resizing to SIZE px (how the
  clips are made, `clips.pad_to_square`), median, range and coefficient of variation (lv_area_cv);
- pairwise_dice: the Dice between the squared ED LV masks of two different recordings, over all pairs;
- axis_angle_deg: the LV long axis (principal axis of the mask) from vertical, positive when the base lies to the
  image right of the apex;
- ef: the ejection fraction the folder records (CAMUS Info_*.cfg "EF", EchoNet FileList.csv "EF").
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from freeecho_core.data.clips import pad_to_square, resize_labels_nearest
from freeecho_core.data.echonet import principal_axis
from freeecho_core.data.lv import dice
from freeecho_core.data.stats import folder_recordings

SIZE = 64  # px: the square frame the masks are compared on (the cpu clips' size)
# Measured on real data with this module's definitions (book: Data, "How much hearts differ"): 9 real
# EchoNet-Dynamic videos (EchoNet-Dynamic's own LV segmentation) and 6 real CAMUS label maps (the Free-Echo
# authors' repository, samples/ and visualize/).
REAL_ANATOMY = {
    "real EchoNet-Dynamic": {"recordings": "9 videos", "lv_area_share": "0.146 [0.069 to 0.192]",
                             "lv_area_cv": "0.31", "pairwise_dice": "0.68 [0.44 to 0.90]"},
    "real CAMUS": {"recordings": "6 label maps", "lv_area_share": "0.112 [0.061 to 0.164]", "lv_area_cv": "0.30",
                   "pairwise_dice": "0.70 [0.49 to 0.88]"},
}


def square_mask(mask: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(H, W) bool -> (size, size) bool: padded to a square as the clips are, nearest-neighbour resized."""
    return resize_labels_nearest(pad_to_square(np.asarray(mask, np.uint8)), size).astype(bool)


def pairwise_dice(masks: list[np.ndarray]) -> np.ndarray:
    """Dice of every pair of different masks (n (n - 1) / 2 values)."""
    return np.array([dice(a, b, True) for a, b in combinations(masks, 2)])


def long_axis_angle(mask: np.ndarray) -> float:
    """Degrees of the mask's principal axis from vertical; positive when it runs down to the image right."""
    _, u = principal_axis(mask)
    return float(np.degrees(np.arctan2(u[0], u[1])))


def ed_lv_records(root: str | Path, limit: int | None = None) -> list[dict]:
    """One row per recording of a CAMUS or EchoNet folder (`stats.folder_recordings`): recording, view, the ED LV
    mask (H, W) bool and the recorded EF as a fraction (the first `limit` patients or videos when given)."""
    return [{"recording": r["recording"], "view": r["view"], "mask": r["lv"], "ef": r["ef"]}
            for r in folder_recordings(root, limit)]


def _spread(values) -> dict:
    values = np.asarray(values, np.float64)
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max())}


def anatomy_statistics(records: list[dict], size: int = SIZE) -> dict[str, dict]:
    """{view: statistics} of `ed_lv_records` rows (module docstring); pairwise figures need two recordings."""
    out = {}
    for view in sorted({r["view"] for r in records}):
        rows = [r for r in records if r["view"] == view]
        masks = [square_mask(r["mask"], size) for r in rows]
        share = np.array([m.mean() for m in masks])
        stats = {"recordings": len(rows), "lv_area_share": _spread(share),
                 "lv_area_cv": float(share.std(ddof=1) / share.mean()) if len(rows) > 1 else None,
                 "axis_angle_deg": _spread([long_axis_angle(r["mask"]) for r in rows])}
        if len(rows) > 1:
            stats["pairwise_dice"] = _spread(pairwise_dice(masks))
        efs = [r["ef"] for r in rows if r["ef"] is not None]
        if efs:
            stats["ef"] = _spread(efs)
        out[view] = stats
    return out


def anatomy_lines(stats: dict[str, dict]) -> list[str]:
    """`anatomy_statistics` as printable lines: one per view and statistic, median [range]."""
    lines = []
    for view, s in stats.items():
        lines.append(f"{view}: {s['recordings']} recordings")
        for name in ("lv_area_share", "pairwise_dice", "axis_angle_deg", "ef"):
            if name in s:
                r = s[name]
                lines.append(f"  {name:>15}  {r['median']:8.3f}  [{r['min']:.3f}, {r['max']:.3f}]")
        if s["lv_area_cv"] is not None:
            lines.append(f"  {'lv_area_cv':>15}  {s['lv_area_cv']:8.3f}")
    return lines


def _cell(spread: dict | None, digits: int) -> str:
    """median [min to max] with `digits` decimals ("-" for None)."""
    if spread is None:
        return "-"
    return f"{spread['median']:.{digits}f} [{spread['min']:.{digits}f} to {spread['max']:.{digits}f}]"


def comparison_rows(measured: dict[str, dict[str, dict]]) -> list[dict]:
    """Rows for a table: the real figures (`REAL_ANATOMY`) first, then each measured folder's views.
    measured: {source label: `anatomy_statistics` result}."""
    rows = [{"source": source, "view": "4CH, 2CH" if "CAMUS" in source else "4CH", "recordings": real["recordings"],
             "LV area share": real["lv_area_share"], "CV of LV area": real["lv_area_cv"],
             "pairwise LV Dice": real["pairwise_dice"], "long-axis angle (deg)": "-", "EF": "-"}
            for source, real in REAL_ANATOMY.items()]
    for source, by_view in measured.items():
        for view, s in by_view.items():
            rows.append({"source": source, "view": view, "recordings": str(s["recordings"]),
                         "LV area share": _cell(s["lv_area_share"], 3),
                         "CV of LV area": "-" if s["lv_area_cv"] is None else f"{s['lv_area_cv']:.2f}",
                         "pairwise LV Dice": _cell(s.get("pairwise_dice"), 2),
                         "long-axis angle (deg)": _cell(s["axis_angle_deg"], 0), "EF": _cell(s.get("ef"), 2)})
    return rows
