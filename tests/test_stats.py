"""Grey-level statistics in the scan fan (the phantom against real downloads), the fan measurements, and the
scan-sector detection on video files with codec noise."""
import json

import numpy as np
import pytest

from freeecho_core.cli import main
from freeecho_core.data.clips import sector_from_frames
from freeecho_core.data.echonet import VIDEO_SIZE, read_video
from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import LOOKS, PhantomConfig, draw_patient, make_case, pixel_grid
from freeecho_core.data.stats import fan_edges, folder_statistics, lateral_speckle_width, summary_rows

# The real figures the looks were tuned to (EchoNet-Dynamic: ranges over 11 A4C videos).
ECHONET_RANGES = {"mean": (39, 71), "median": (10, 58), "near_black": (0.18, 0.54), "p95_p50": (2.6, 8.8),
                  "opening_deg": (58, 89.5), "apex_x": (0.33, 0.58), "speckle_corr": (0.56, 0.87),
                  "speckle_width_px": (1.0, 3.0)}


@pytest.fixture(scope="module")
def echonet_phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("echonet")
    return make_phantom_dataset(root / "data", "echonet", 3, 0, PhantomConfig(height=112, frames=24), workers=2,
                                progress=False)


@pytest.mark.parametrize("look", sorted(LOOKS))
def test_fan_edges_recover_the_drawn_opening_and_probe_position(look):
    for index in range(3):
        heart = draw_patient(0, index, "4CH", LOOKS[look])
        *_, sector = pixel_grid(heart, 112, LOOKS[look].square)
        opening, apex_x = fan_edges(sector)
        assert opening == pytest.approx(np.degrees(2 * heart.half_angle), abs=1.5)
        assert apex_x == pytest.approx(heart.probe_x if LOOKS[look].square else 0.5, abs=0.02)
    with pytest.raises(ValueError, match="empty"):
        fan_edges(np.zeros((8, 8), bool))


def test_the_sector_survives_codec_noise_and_depth_markers(echonet_phantom):
    """MJPG round trip (the phantom's own files), then grey 1-8 in 20 % of the out-of-fan pixels and two
    bright depth markers beside the fan, as on real EchoNet videos: IoU with the known fan >= 0.95."""
    rng = np.random.default_rng(0)
    names = [c["case_id"] for c in json.loads((echonet_phantom / "phantom.json").read_text())["cases"]]
    for index, name in enumerate(names):
        case = make_case(0, index, "4CH", PhantomConfig(height=112, frames=24, look="echonet"))
        path = echonet_phantom / "Videos" / f"{name}.avi"
        assert case.frames.shape[1:] == (VIDEO_SIZE, VIDEO_SIZE)  # square frames: no resize in the writer
        frames = read_video(path)
        outside = ~case.sector
        noise = (rng.uniform(size=frames.shape) < 0.2) * rng.integers(1, 9, size=frames.shape)
        frames = np.where(outside, np.maximum(frames, noise), frames).astype(np.uint8)
        frames[:, 20:22, 2:4] = frames[:, 60:62, 2:4] = 200  # depth markers at the left edge
        found = sector_from_frames(frames)
        assert (found & case.sector).sum() / (found | case.sector).sum() >= 0.95
        naive = (frames > 0).mean(axis=0) >= 0.5  # every non-zero pixel: what real files defeat
        assert (naive & case.sector).sum() / (naive | case.sector).sum() < 0.9


def test_the_echonet_phantom_falls_in_the_real_ranges(echonet_phantom):
    rows = folder_statistics(echonet_phantom)
    assert len(rows) == 3 and all(r["recording"].startswith("0X") for r in rows)
    for row in summary_rows(rows):
        if row["statistic"] in ECHONET_RANGES:
            lo, hi = ECHONET_RANGES[row["statistic"]]
            assert lo <= row["median"] <= hi, row
    assert all(r["lv_mean"] < r["myo_mean"] for r in rows)


def test_the_camus_phantom_is_brighter_as_camus_is(tmp_path, echonet_phantom):
    camus = make_phantom_dataset(tmp_path / "camus", "camus", 1, 0, PhantomConfig(height=96, frames=12), workers=2,
                                 progress=False)
    rows = {r["statistic"]: r for r in summary_rows(folder_statistics(camus))}
    echonet = {r["statistic"]: r for r in summary_rows(folder_statistics(echonet_phantom))}
    assert rows["mean"]["recordings"] == 2  # 2CH and 4CH
    assert rows["mean"]["median"] > echonet["mean"]["median"] + 30 and rows["near_black"]["median"] < 0.1
    assert 70 <= rows["opening_deg"]["median"] <= 81


def test_the_stats_command_prints_the_table(echonet_phantom, capsys):
    assert main(["phantom", "--stats", str(echonet_phantom), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "range over 2 recordings" in out and "near_black" in out and "speckle_corr" in out
    assert "4CH: 2 recordings" in out and "pairwise_dice" in out and "lv_area_cv" in out
    assert main(["phantom", "--count", "2"]) == 2
    assert "give --format and --out" in capsys.readouterr().err


def test_lateral_speckle_width_is_the_half_maximum_width_of_a_known_blur():
    """White noise blurred along the rows by a Gaussian of sigma s has an autocorrelation of sigma s sqrt(2):
    its full width at half maximum is 2 sqrt(2 ln 2) sqrt(2) s = 3.33 s."""
    from scipy.ndimage import gaussian_filter1d

    noise = gaussian_filter1d(np.random.default_rng(0).normal(size=(4, 64, 256)), 1.2, axis=2)
    inner = np.ones((64, 256), bool)
    assert lateral_speckle_width(noise, inner) == pytest.approx(3.33 * 1.2, rel=0.05)


def test_echonet_videos_are_rendered_at_their_own_size_so_the_speckle_keeps_its_width(tmp_path):
    small = make_phantom_dataset(tmp_path / "e", "echonet", 1, 0, PhantomConfig(height=48, frames=4), workers=1,
                                 progress=False)
    assert json.loads((small / "phantom.json").read_text())["config"]["height"] == VIDEO_SIZE
