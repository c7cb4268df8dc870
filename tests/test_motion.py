"""The beating pseudo video's label maps (issue 18): their EF, timing and anatomy, on phantom hearts at 64 x 64."""
import json

import numpy as np
import pytest
import torch

from freeecho_core.data.case import to_five_labels
from freeecho_core.data.clips import UNLABELLED, Clip, ed_map_from_labels
from freeecho_core.data.lv import camus_from_five, dice, ef_area_proxy, lv_area_curve
from freeecho_core.data.phantom import PhantomConfig, make_case
from freeecho_core.motion import (ES_PHASE, Interpolation, beating_maps, beating_pseudo_video, cycle_fractions,
                                  es_frame_of_clips)

TISSUE, LV, MYO, LA = 1, 2, 3, 4


@pytest.fixture(scope="module", params=[(0, "2CH"), (3, "4CH")], ids=["2CH", "4CH"])
def heart(request):
    """A phantom heart at 64 x 64: its ED and ES maps (5 labels), ES frame and drawn EF."""
    index, view = request.param
    case = make_case(0, index, view, PhantomConfig(height=64, frames=32))
    ed, es = (ed_map_from_labels(case.labels[k], case.sector, 64) for k in (0, case.es_index))
    return ed, es, case.es_index, case.ef


@pytest.mark.parametrize("ef", [0.3, 0.45, 0.6, 0.7])
def test_the_label_sequence_has_the_target_ef_and_contracts_until_end_systole(heart, ef):
    ed, _, _, _ = heart
    maps = beating_maps(ed, 16, es_frame=10, ef=ef)
    assert maps.shape == (16, 64, 64) and np.array_equal(maps[0], ed)
    assert ef_area_proxy(camus_from_five(maps)) == pytest.approx(ef, abs=0.01)  # the metric the study reads
    areas = lv_area_curve(camus_from_five(maps))
    assert np.argmin(areas) == 10 and np.all(np.diff(areas[:11]) <= 0)  # ejection to ES, then filling
    assert areas[-1] > areas[10]
    for frame in maps:
        assert np.array_equal(frame == 0, ed == 0)  # the scan sector never moves
        assert set(np.unique(frame)) == {0, TISSUE, LV, MYO, LA}
    # The cavity empties into a thickening wall (its pixels become myocardium) while the atrium fills.
    assert (maps[10] == MYO).sum() - (ed == MYO).sum() == (ed == LV).sum() - (maps[10] == LV).sum()
    assert (maps[10] == LA).sum() > (ed == LA).sum()
    assert not np.any((ed != LV) & (maps[10] == LV))  # the cavity only shrinks


def test_the_eroded_end_systole_resembles_the_phantoms_own(heart):
    ed, es, es_index, ef = heart
    eroded = beating_maps(ed, es_index + 1, es_frame=es_index, ef=ef)[-1]
    assert dice(eroded, es, LV) > 0.8  # a generic prior: the phantom's base also descends


def test_an_es_map_is_reached_at_end_systole_with_its_own_ef(heart):
    ed, es, es_index, _ = heart
    family = Interpolation(ed, es)
    assert np.array_equal(family(family.max_amount), es) and np.array_equal(family(0), ed)
    maps = beating_maps(ed, 16, es_frame=es_index, es_map=es)
    own = ef_area_proxy(camus_from_five(np.stack([ed, es])))
    assert ef_area_proxy(camus_from_five(maps)) == pytest.approx(own, abs=0.01)
    assert dice(maps[es_index], es, LV) > 0.95
    fractions = lv_area_curve(camus_from_five(maps))[: es_index + 1] / (ed == LV).sum()
    assert np.all(np.diff(fractions) <= 0.01)  # pixel by pixel: no jumps back


def test_the_cycle_follows_the_phantoms_volume_curve():
    v = cycle_fractions(40, es_frame=12.0, ef=0.55)
    assert v[0] == pytest.approx(1.0) and v[12] == pytest.approx(0.45) and v.min() == pytest.approx(0.45)
    assert 12 / ES_PHASE == pytest.approx(31.6, abs=0.1)  # frames per beat
    assert np.all(np.diff(v[:13]) < 0) and v[31] > 0.99 and v[39] < v[31]  # then the next beat begins


def clip_with_labels(frames: int, labelled: list[int]) -> Clip:
    labels = np.full((frames, 8, 8), UNLABELLED)
    labels[labelled] = 1
    return Clip("c", "2CH", np.zeros((frames, 8, 8), np.float32), labels, np.ones((8, 8), int), np.ones((8, 8), bool), 25.0)


def test_the_es_timing_is_the_median_over_the_clips_that_reach_end_systole():
    clips = [clip_with_labels(16, [0, 9]), clip_with_labels(16, [0, 11]), clip_with_labels(16, [0, 13]),
             clip_with_labels(16, [0])]  # the last clip's ES lies beyond its frames: it does not count
    assert es_frame_of_clips(clips) == 11.0
    with pytest.raises(ValueError, match="timing is unknown"):
        es_frame_of_clips([clip_with_labels(16, [0])])


def test_bad_requests_are_refused_in_one_line(heart):
    ed, es, _, _ = heart
    with pytest.raises(ValueError, match=r"target EF must lie in \[0.05, 0.85\], got 0.95"):
        beating_maps(ed, 8, 4, ef=0.95)
    for both_or_none in ({}, {"ef": 0.5, "es_map": es}):
        with pytest.raises(ValueError, match="give a target EF or an ES map"):
            beating_maps(ed, 8, 4, **both_or_none)
    with pytest.raises(ValueError, match="the ES map has shape"):
        beating_maps(ed, 8, 4, es_map=es[:32])
    with pytest.raises(ValueError, match="ES map's EF must lie in"):
        beating_maps(ed, 8, 4, es_map=ed)  # no contraction
    with pytest.raises(ValueError, match="end systole must fall after ED"):
        beating_maps(ed, 8, 0, ef=0.5)
    with pytest.raises(ValueError, match="no LV cavity"):
        beating_maps(to_five_labels(np.zeros((64, 64), int), np.ones((64, 64), bool)), 8, 4, ef=0.5)


def test_the_beating_pseudo_video_moves_the_shapes_and_keeps_the_grey_levels(heart):
    from freeecho_core.pseudo import match_intensities
    from freeecho_core.synthesis import phantom_target

    ed, _, _, _ = heart
    target = phantom_target(64, 8)
    maps = beating_maps(ed, 8, es_frame=7, ef=0.5)
    video = beating_pseudo_video(maps, target)
    still, _ = match_intensities(ed, target, "sinkhorn", "barycentric")
    assert video.shape == (1, 1, 8, 64, 64)
    assert torch.allclose(video[0, 0, 0], 2 * torch.as_tensor(still, dtype=torch.float32) - 1)
    for label in (LV, MYO, LA):  # one grey level per label in every frame: only the shapes move
        assert len(torch.unique(video[0, 0][torch.as_tensor(maps == label)])) == 1
    changed = torch.as_tensor(maps[7] != ed)
    assert torch.equal(video[0, 0, 7][~changed], video[0, 0, 0][~changed]) and changed.any()
    with pytest.raises(ValueError, match=r"labels \[4\] appear in later frames but not at ED"):
        beating_pseudo_video(np.stack([np.where(ed == LA, TISSUE, ed), ed]), target)


def test_generation_with_a_target_ef_beats_and_is_recorded(trained, tmp_path, capsys):
    from freeecho_core.cli import main
    from freeecho_core.synthesis import EXAMPLE_MAP

    _, unconditional, _ = trained
    args = ["generate", "--map", str(EXAMPLE_MAP), "--checkpoint", str(unconditional), "--samples", "1", "--out",
            str(tmp_path / "out"), "--solver", "euler", "--sampler", "ode", "--sampler-steps", "3", "--device", "cpu"]
    assert main(args + ["--ef", "0.5"]) == 0
    record = json.loads((tmp_path / "out" / "ed_map_2ch.json").read_text())
    assert record["config"]["ef"] == 0.5 and record["config"]["es_frame"] == 3  # 4 frames: ES at the last
    assert main(args + ["--ef", "0.5", "--es-frame", "2", "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "ed_map_2ch.json").read_text())["config"]["es_frame"] == 2
    for extra, expected in (([ "--ef", "0.95"], "target EF must lie in [0.05, 0.85], got 0.95"),
                            (["--es-map", str(tmp_path / "no.png")], "no.png: no such ES map file"),
                            (["--ef", "0.5", "--mapping", "stochastic"], "takes the barycentric mapping"),
                            (["--ef", "0.5", "--es-map", str(EXAMPLE_MAP)], "give a target EF or an ES map")):
        assert main(args + extra + ["--out", str(tmp_path / "bad")]) == 2
        assert expected in capsys.readouterr().err
