"""Grey-level statistics of echo recordings inside the scan fan: how a phantom compares with a real download.

The statistics (all on grey 0-255, every pixel inside the fan of every frame unless stated):
- mean, median, 5th and 95th percentile, and the 95th / 50th percentile ratio (how peaked the bright tail is);
- near_black: the share of fan pixels darker than 16 (blood pools and dark far field);
- lv_mean, myo_mean: mean grey of the LV cavity and the myocardium at end diastole, and their contrast-to-noise
  ratio cnr = (myo_mean - lv_mean) / sqrt(var_myo + var_lv). EchoNet traces only the LV: there the myocardium is
  the ring that `clips.myocardium_ring` grows around it (the authors' construction);
- opening_deg: the fan's opening angle from straight-line fits of its two edges, and apex_x: where the edges
  meet, as a fraction of the frame width;
- speckle_corr: the Pearson correlation of the speckle of frames 40 ms apart (rounded to whole frames at the
  recording's frame rate, at least one), averaged over the recording. Speckle is a frame minus its Gaussian blur
  (sigma 2 px), on the fan pixels away from its border: what stays is the fine texture, not the anatomy (whose
  dark chambers and bright walls would correlate over any lag).
- speckle_width_px: the lateral (along the rows) width of a speckle grain, in pixels: twice the lag at which the
  autocorrelation of that texture along the rows falls to one half (its full width at half maximum), averaged
  over the frames.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter

from freeecho_core.data.clips import myocardium_ring, sector_from_frames

NEAR_BLACK = 16  # grey level below which a pixel counts as near-black
SPECKLE_LAG_S = 0.040  # frame separation of the speckle correlation
# Figures measured on real public recordings, what the phantom's scanner looks were tuned to (grey 0-255):
# EchoNet-Dynamic, 11 apical 4-chamber videos at 112 px, median [range]; CAMUS, one frame of the NIfTI release.
REAL_FIGURES = {
    "echonet": {"mean": "49 [39-71]", "median": "31 [10-58]", "p5": "1", "p95": "163", "p95_p50": "[2.6-8.8]",
                "near_black": "0.36 [0.18-0.54]", "lv_mean": "19", "myo_mean": "72", "cnr": "1.25 [0.89-1.64]",
                "opening_deg": "87 [58-89]", "apex_x": "[0.33-0.58]", "speckle_corr": "0.78 [0.56-0.87]",
                "speckle_width_px": "[1-3]"},
    "camus": {"mean": "121", "median": "108", "p5": "54", "p95": "234", "near_black": "0.01", "opening_deg": "75"},
}
STATISTICS = ("mean", "median", "p5", "p95", "p95_p50", "near_black", "lv_mean", "myo_mean", "cnr",
              "opening_deg", "apex_x", "speckle_corr", "speckle_width_px")
# What a reader sees for each statistic and each column of `comparison_rows`.
STATISTIC_NAMES = {"mean": "mean grey level", "median": "median grey level", "p5": "5th percentile",
                   "p95": "95th percentile", "p95_p50": "bright tail: 95th / 50th percentile",
                   "near_black": "share of near-black pixels (< 16)", "lv_mean": "LV cavity mean grey (ED)",
                   "myo_mean": "myocardium mean grey (ED)", "cnr": "myocardium-to-LV contrast-to-noise ratio",
                   "opening_deg": "fan opening (degrees)", "apex_x": "fan apex, share of the width",
                   "speckle_corr": "speckle correlation over 40 ms", "speckle_width_px": "lateral speckle width (px)"}
COMPARISON_COLUMNS = {"statistic": "statistic", "real echonet": "real EchoNet-Dynamic (11 videos)",
                      "phantom echonet": "phantom, EchoNet look", "real camus": "real CAMUS (1 frame)",
                      "phantom camus": "phantom, CAMUS look"}


def fan_edges(sector: np.ndarray) -> tuple[float, float]:
    """(opening angle in degrees, apex column as a fraction of the width) of a fan mask (H, W) bool, from
    least-squares lines through its left and right edges, on the rows of the upper 60 % of the fan (above its
    arc) down to the first row where an edge meets the frame."""
    H, W = sector.shape
    rows = np.flatnonzero(sector.any(axis=1))
    if len(rows) == 0:
        raise ValueError("the fan mask is empty")
    left = np.array([np.argmax(sector[r]) for r in rows], float)
    right = np.array([W - np.argmax(sector[r][::-1]) for r in rows], float)  # one past the last fan pixel
    touching = (left == 0) | (right == W)
    end = np.argmax(touching) if touching.any() else len(rows)
    end = min(end, int(0.6 * (rows[-1] - rows[0] + 1)))
    start = max(1, end // 10)  # skip the few rows at the tip, where the mask is a pixel or two wide
    if end - start < 3:
        raise ValueError("the fan's edges are not visible on enough rows to measure its opening")
    (b_l, a_l), (b_r, a_r) = (np.polyfit(rows[start:end] + 0.5, edge[start:end], 1) for edge in (left, right))
    opening = np.degrees(np.arctan(b_r) - np.arctan(b_l))
    apex_row = (a_l - a_r) / (b_r - b_l)
    return float(opening), float((a_l + b_l * apex_row) / W)


def lateral_speckle_width(texture: np.ndarray, inner: np.ndarray, max_lag: int = 12) -> float:
    """FWHM in pixels of the autocorrelation along the rows of `texture` (T, H, W) over the `inner` (H, W)
    pixels whose row neighbour at each lag is inner too (module docstring, speckle_width_px)."""
    correlation = [1.0]
    for lag in range(1, max_lag + 1):
        both = inner[:, :-lag] & inner[:, lag:]
        a, b = texture[:, :, :-lag][:, both], texture[:, :, lag:][:, both]
        correlation.append(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())))
        if correlation[-1] < 0.5:
            before, after = correlation[-2], correlation[-1]
            return 2 * (lag - 1 + (before - 0.5) / (before - after))
    return float(2 * max_lag)


def recording_statistics(frames: np.ndarray, sector: np.ndarray | None = None, lv: np.ndarray | None = None,
                         myo: np.ndarray | None = None, fps: float | None = 50.0) -> dict:
    """The statistics of one recording. frames: (T, H, W) uint8; sector: (H, W) bool (found from the frames when
    None); lv, myo: (H, W) bool masks at the first frame (end diastole), or None for no cavity figures; fps: None
    when unknown (no speckle correlation then: its lag is a time)."""
    sector = sector_from_frames(frames) if sector is None else sector
    fan = frames[:, sector].astype(np.float64)
    p5, p50, p95 = np.percentile(fan, [5, 50, 95])
    stats = {"mean": fan.mean(), "median": p50, "p5": p5, "p95": p95, "p95_p50": p95 / max(p50, 1.0),
             "near_black": (fan < NEAR_BLACK).mean()}
    stats["opening_deg"], stats["apex_x"] = fan_edges(sector)
    lag = max(1, int(round(SPECKLE_LAG_S * (fps or 0))))
    inner = binary_erosion(sector, iterations=3)
    texture = frames.astype(np.float64) - gaussian_filter(frames.astype(np.float64), (0, 2, 2))
    stats["speckle_width_px"] = lateral_speckle_width(texture, inner)
    if fps is not None and len(frames) > lag:
        speckle = texture[:, inner]
        stats["speckle_corr"] = np.mean([np.corrcoef(speckle[t], speckle[t + lag])[0, 1]
                                         for t in range(len(frames) - lag)])
    if lv is not None and myo is not None and lv.any() and myo.any():
        cavity, wall = frames[0][lv].astype(np.float64), frames[0][myo].astype(np.float64)
        stats |= {"lv_mean": cavity.mean(), "myo_mean": wall.mean(),
                  "cnr": (wall.mean() - cavity.mean()) / np.sqrt(wall.var() + cavity.var() + 1e-12)}
    return {k: float(v) for k, v in stats.items()}


def folder_recordings(root: str | Path, limit: int | None = None):
    """Every recording of a CAMUS (either release) or EchoNet-Dynamic folder, read with the project's readers (the
    first `limit` patients or videos when given), as dicts: recording (its name), view, frames ((T, H, W) uint8
    from ED on), sector ((H, W) bool, found from the frames), lv and myo ((H, W) bool ED masks; myo None where only
    the LV is traced), fps (None when unknown) and ef (as a fraction, None when not recorded)."""
    root = Path(root)
    if (root / "FileList.csv").is_file():
        yield from _echonet_recordings(root, limit)
    else:
        yield from _camus_recordings(root, limit)


def _as_fraction(ef) -> float | None:
    return None if ef is None else float(ef) / 100  # EchoNet's FileList and CAMUS's Info files store percent


def _echonet_recordings(root: Path, limit: int | None):
    from freeecho_core.data.echonet import read_echonet_video, read_filelist, read_tracings, traced_videos

    filelist, tracings = read_filelist(root), read_tracings(root)
    usable, _ = traced_videos(filelist, tracings)
    for entry in usable[:limit]:
        record = read_echonet_video(root, entry["FileName"], filelist, tracings)
        yield {"recording": record.filename, "view": "4CH", "frames": record.frames[record.ed_index:],
               "sector": sector_from_frames(record.frames), "lv": record.ed_mask, "myo": None, "fps": record.fps,
               "ef": _as_fraction(record.ef)}


def _camus_recordings(root: Path, limit: int | None):
    from freeecho_core.data.camus import ed_first, list_camus_patients, read_camus_sequence

    for patient in list_camus_patients(root)[:limit]:
        for view in ("2CH", "4CH"):
            if not (patient / f"Info_{view}.cfg").is_file():
                continue
            record = read_camus_sequence(patient, view)
            frames, labels, ed = ed_first(record)
            yield {"recording": f"{record.patient} {view}", "view": view, "frames": frames[ed:],
                   "sector": sector_from_frames(frames[ed:]), "lv": labels[ed] == 1, "myo": labels[ed] == 2,
                   "fps": record.info.get("FrameRate"), "ef": _as_fraction(record.info.get("EF"))}


def folder_statistics(root: str | Path, limit: int | None = None) -> list[dict]:
    """`recording_statistics` of every recording of a CAMUS or EchoNet-Dynamic folder (`folder_recordings`). Each
    row also names its recording. EchoNet traces only the LV: its myocardium is the ring grown around it."""
    rows = []
    for r in folder_recordings(root, limit):
        myo = r["myo"] if r["myo"] is not None else myocardium_ring(r["lv"], r["sector"]) == 2
        rows.append({"recording": r["recording"]}
                    | recording_statistics(r["frames"], r["sector"], r["lv"], myo, r["fps"]))
    return rows


def comparison_rows(phantom: dict[str, list[dict]]) -> list[dict]:
    """One row per statistic (`STATISTIC_NAMES`): the real figures beside the median [range] of each phantom
    format's recordings, in the columns of `COMPARISON_COLUMNS`. phantom: {format: folder_statistics rows}."""
    summaries = {fmt: {r["statistic"]: r for r in summary_rows(rows)} for fmt, rows in phantom.items()}
    out = []
    for name in STATISTICS:
        row = {"statistic": STATISTIC_NAMES[name]}
        for fmt in ("echonet", "camus"):
            row[COMPARISON_COLUMNS[f"real {fmt}"]] = REAL_FIGURES[fmt].get(name, "-")
            r = summaries.get(fmt, {}).get(name)
            row[COMPARISON_COLUMNS[f"phantom {fmt}"]] = f"{r['median']:.3g} [{r['min']:.3g}-{r['max']:.3g}]" if r else "-"
        out.append(row)
    return out


def summary_rows(rows: list[dict]) -> list[dict]:
    """One row per statistic: median and range over the recordings."""
    out = []
    for name in STATISTICS:
        values = np.array([r[name] for r in rows if name in r])
        if len(values):
            out.append({"statistic": name, "median": float(np.median(values)), "min": float(values.min()),
                        "max": float(values.max()), "recordings": len(values)})
    return out
