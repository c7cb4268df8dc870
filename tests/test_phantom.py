from dataclasses import replace

import numpy as np
import pytest

from freeecho_core.data.echonet import lv_tracings, method_of_disks_volume
from freeecho_core.data.phantom import LOOKS, PhantomConfig, draw_heart, make_case, volume_curve

SMALL = PhantomConfig(height=48, frames=12)


@pytest.fixture(scope="module")
def case_2ch():
    return make_case(7, 3, "2CH", SMALL)


@pytest.fixture(scope="module")
def beat_64():
    """One beat at a realistic frame rate (32 frames per cycle) for the speckle check."""
    return make_case(0, 1, "2CH", PhantomConfig(height=64, frames=32))


def test_one_seed_gives_one_case_whatever_else_is_generated(case_2ch):
    make_case(7, 2, "2CH", SMALL)  # another case first: must not matter
    again = make_case(7, 3, "2CH", SMALL)
    assert np.array_equal(again.frames, case_2ch.frames) and np.array_equal(again.labels, case_2ch.labels)
    other = make_case(7, 4, "2CH", SMALL)
    assert other.ef != case_2ch.ef


def test_both_views_of_a_patient_show_the_same_heart(case_2ch):
    four = make_case(7, 3, "4CH", SMALL)
    assert four.ef == case_2ch.ef and four.es_index == case_2ch.es_index and four.age == case_2ch.age
    assert not np.array_equal(four.labels[0], case_2ch.labels[0])


def test_labels_and_image_live_in_the_sector(case_2ch):
    c = case_2ch
    assert c.frames.dtype == np.uint8 and c.labels.dtype == np.uint8
    assert set(np.unique(c.labels)) == {0, 1, 2, 3}
    assert not c.labels[:, ~c.sector].any() and not c.frames[:, ~c.sector].any()
    for k in range(len(c.labels)):
        assert {1, 2, 3} <= set(np.unique(c.labels[k])), f"frame {k} lacks a structure"


@pytest.mark.parametrize("look", sorted(LOOKS))
def test_labels_are_aligned_with_the_image(look):
    """Blood is darker than the myocardium exactly where the labels say so, in both scanner looks; EchoNet's
    blood is near-black (CAMUS's higher gain lifts it into grey)."""
    c = make_case(7, 3, "2CH", replace(SMALL, look=look))
    lv, myo = c.labels == 1, c.labels == 2
    assert np.mean(c.frames[myo]) > np.mean(c.frames[lv]) + 30
    if look == "echonet":
        assert np.median(c.frames[lv]) < 40


def test_cavity_shrinks_to_end_systole_and_refills(case_2ch):
    area = (case_2ch.labels == 1).sum(axis=(1, 2))
    es = case_2ch.es_index
    assert np.argmin(area) == es
    assert np.all(np.diff(area[: es + 1]) < 0)
    assert area[-1] > area[es] + 0.7 * (area[0] - area[es])


def test_volume_curve_honours_the_ejection_fraction():
    phase = np.linspace(0, 1, 401)
    v = volume_curve(phase, ef=0.55, es_phase=0.4)
    assert v[0] == pytest.approx(1.0) and v[-1] == pytest.approx(1.0)
    assert v[160] == pytest.approx(0.45) and v.min() == pytest.approx(0.45, abs=1e-9)
    assert np.all(np.diff(v[:161]) <= 0) and np.all(np.diff(v[160:]) >= -1e-12)


def test_speckle_is_coherent_from_frame_to_frame_in_the_myocardium(beat_64):
    """Tissue-attached scatterers keep the myocardium's speckle correlated between neighbouring frames, while
    the out-of-plane decorrelation keeps it from being frozen."""
    c = beat_64
    correlations = []
    for k in range(len(c.frames) - 1):
        both = (c.labels[k] == 2) & (c.labels[k + 1] == 2)
        correlations.append(np.corrcoef(c.frames[k][both].astype(float), c.frames[k + 1][both].astype(float))[0, 1])
    assert 0.5 < np.median(correlations) < 0.97


def test_drawn_parameters_stay_in_the_design_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h = draw_heart(rng, "4CH")
        assert 0.35 <= h.ef <= 0.70 and 14 <= h.depth <= 16 and 7.5 <= h.lv_length <= 9.5
        assert 0.34 <= h.es_phase <= 0.42 and 30 <= h.dynamic_range <= 36
        assert 72 <= np.degrees(2 * h.half_angle) <= 80
    with pytest.raises(ValueError, match="view must be"):
        draw_heart(rng, "PLAX")


@pytest.mark.parametrize("index, view", [(0, "4CH"), (1, "2CH"), (2, "4CH")])
def test_ejection_fraction_measured_from_the_labels_matches_the_drawn_one(index, view):
    """EF by the method of disks on the LV label masks at ED and ES, as a clinician would measure it."""
    c = make_case(11, index, view, PhantomConfig(height=128, frames=8))
    edv, esv = (method_of_disks_volume(lv_tracings(c.labels[k] == 1), c.pixel_spacing_mm / 10) for k in (0, c.es_index))
    assert 1 - esv / edv == pytest.approx(c.ef, abs=0.015)  # pixelisation at 128 rows: ~0.01
    assert 0.35 <= c.ef <= 0.70
