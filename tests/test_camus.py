"""CAMUS format round trip (write an EchoCase, read it back) and the errors a user meets with bad files."""
import re

import nibabel as nib
import numpy as np
import pytest

from freeecho_core.data.camus import (camus_path, list_camus_patients, read_camus_frame, read_camus_info,
                                      read_camus_sequence, write_camus_case)
from freeecho_core.data.case import EchoCase

SPACING_MM = 0.31


def make_case(view="2CH", es_index=4, T=6, H=48, W=64, seed=0, case_id="patient0001") -> EchoCase:
    """Fan-shaped sector of noise; labels: a beating elliptical LV, a myocardial ring, an LA below the base."""
    yy, xx = np.mgrid[:H, :W].astype(float)
    sector = (np.hypot(xx - W / 2, yy) < H - 2) & (np.abs(np.arctan2(xx - W / 2, yy)) < np.deg2rad(40))
    labels = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        s = 1 - 0.2 * np.sin(np.pi * t / (2 * es_index)) ** 2  # LV scale, smallest (0.8) at ES
        r_lv = ((xx - W / 2) / (7 * s)) ** 2 + ((yy - 21) / (14 * s)) ** 2
        r_epi = ((xx - W / 2) / (7 * s + 3)) ** 2 + ((yy - 21) / (14 * s + 3)) ** 2
        above_base = yy <= 30
        labels[t][(r_epi <= 1) & above_base] = 2
        labels[t][(r_lv <= 1) & above_base] = 1
        labels[t][((xx - W / 2) / 8) ** 2 + ((yy - 37) / 5) ** 2 <= 1] = 3
    frames = np.random.default_rng(seed).integers(1, 256, (T, H, W)).astype(np.uint8) * sector
    return EchoCase(case_id, view, frames, labels, sector, es_index, ef=0.543, fps=47.5,
                    pixel_spacing_mm=SPACING_MM, sex="M", age=71, image_quality="Medium")


@pytest.fixture
def written(tmp_path):
    """A patient folder holding both views; returns (root, {view: case})."""
    cases = {"2CH": make_case("2CH", es_index=4), "4CH": make_case("4CH", es_index=3, seed=1)}
    for case in cases.values():
        write_camus_case(tmp_path, case)
    return tmp_path, cases


def patient_dir(root):
    return root / "database_nifti" / "patient0001"


@pytest.mark.parametrize("view", ["2CH", "4CH"])
def test_sequence_round_trip(written, view):
    root, cases = written
    case, record = cases[view], read_camus_sequence(list_camus_patients(root)[0], view)
    n = case.es_index + 1
    assert record.frames.dtype == np.uint8 and record.labels.dtype == np.uint8
    np.testing.assert_array_equal(record.frames, case.frames[:n])
    np.testing.assert_array_equal(record.labels, case.labels[:n])
    assert (record.patient, record.view, record.ed_index, record.es_index) == ("patient0001", view, 0, n - 1)
    np.testing.assert_allclose(record.spacing_mm, (SPACING_MM, SPACING_MM), rtol=1e-6)
    assert record.info == {"ED": 1, "ES": n, "NbFrame": n, "Sex": "M", "Age": 71, "ImageQuality": "Medium",
                           "EF": 54.0, "FrameRate": 47.5}


@pytest.mark.parametrize("instant", ["ED", "ES"])
def test_single_frame_round_trip(written, instant):
    root, cases = written
    case = cases["4CH"]
    t = 0 if instant == "ED" else case.es_index
    image, labels, spacing = read_camus_frame(patient_dir(root), "4CH", instant)
    np.testing.assert_array_equal(image, case.frames[t])
    np.testing.assert_array_equal(labels, case.labels[t])
    np.testing.assert_allclose(spacing, (SPACING_MM, SPACING_MM), rtol=1e-6)


def test_files_are_laid_out_as_the_release(written):
    root, cases = written
    names = {f"patient0001_{v}_{p}{gt}.nii.gz" for v in ("2CH", "4CH") for p in ("half_sequence", "ED", "ES")
             for gt in ("", "_gt")}
    assert {p.name for p in patient_dir(root).iterdir()} == names | {"Info_2CH.cfg", "Info_4CH.cfg"}
    assert (patient_dir(root) / "Info_2CH.cfg").read_text().splitlines() == [
        "ED: 1", "ES: 5", "NbFrame: 5", "Sex: M", "Age: 71", "ImageQuality: Medium", "EF: 54", "FrameRate: 47.5"]


def test_nibabel_sees_width_height_time(written):
    root, cases = written
    sequence = nib.load(camus_path(patient_dir(root), "2CH", "half_sequence"))
    frame = nib.load(camus_path(patient_dir(root), "2CH", "ED_gt"))
    assert sequence.shape == (64, 48, 5) and frame.shape == (64, 48)
    assert sequence.get_data_dtype() == np.uint8 and frame.get_data_dtype() == np.uint8
    np.testing.assert_allclose(sequence.header.get_zooms(), (SPACING_MM, SPACING_MM, 1.0), rtol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(sequence.dataobj), cases["2CH"].frames[:5].transpose(2, 1, 0))


def test_list_patients_from_root_or_database_folder(tmp_path, written):
    root, _ = written
    write_camus_case(root, make_case(case_id="patient0002"))
    expected = [patient_dir(root), root / "database_nifti" / "patient0002"]
    assert list_camus_patients(root) == expected
    assert list_camus_patients(root / "database_nifti") == expected
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no patient folders"):
        list_camus_patients(tmp_path / "empty")


def test_sequence_stored_es_to_ed_keeps_its_indices(written):
    """Some real half sequences run ES -> ED (ED: NbFrame, ES: 1); the reader reports, never reorders."""
    root, cases = written
    for part in ("half_sequence", "half_sequence_gt"):  # store the sequence ES -> ED, as those files do
        path = camus_path(patient_dir(root), "2CH", part)
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, ::-1], image.affine), path)
    cfg = patient_dir(root) / "Info_2CH.cfg"
    cfg.write_text(cfg.read_text().replace("ED: 1", "ED: 5").replace("ES: 5", "ES: 1"))
    record = read_camus_sequence(patient_dir(root), "2CH")
    assert (record.ed_index, record.es_index) == (4, 0)
    np.testing.assert_array_equal(record.frames, cases["2CH"].frames[:5][::-1])


def test_a_cfg_with_ed_and_es_swapped_is_refused(written):
    """An ED -> ES sequence whose cfg names its last frame ED would be taken in reverse: refused."""
    root, _ = written
    cfg = patient_dir(root) / "Info_2CH.cfg"
    cfg.write_text(cfg.read_text().replace("ED: 1", "ED: 5").replace("ES: 5", "ES: 1"))
    with pytest.raises(ValueError, match="Info_2CH.cfg: ED 5 and ES 1 look swapped: the LV has"):
        read_camus_sequence(patient_dir(root), "2CH")


def test_gunzipped_copy_is_read(written):
    root, cases = written
    for part in ("half_sequence", "half_sequence_gt"):
        path = camus_path(patient_dir(root), "4CH", part)
        nib.save(nib.load(path), path.with_suffix(""))
        path.unlink()
    assert camus_path(patient_dir(root), "4CH", "half_sequence").name == "patient0001_4CH_half_sequence.nii"
    np.testing.assert_array_equal(read_camus_sequence(patient_dir(root), "4CH").labels, cases["4CH"].labels[:4])


def test_float_images_are_rounded_and_clipped(written):
    root, _ = written
    path = camus_path(patient_dir(root), "2CH", "half_sequence")
    data = np.full((64, 48, 5), 10.4, np.float32)
    data[0, 0, 0], data[1, 0, 0] = 300.0, -5.0
    nib.save(nib.Nifti1Image(data, np.diag([SPACING_MM, SPACING_MM, 1, 1])), path)
    frames = read_camus_sequence(patient_dir(root), "2CH").frames
    assert frames.dtype == np.uint8
    assert (frames[0, 0, 0], frames[0, 0, 1], frames[1, 5, 5]) == (255, 0, 10)


def test_info_is_typed_and_extra_keys_kept(tmp_path):
    cfg = tmp_path / "Info_4CH.cfg"
    cfg.write_text("ED: 1\nES: 14\nNbFrame: 14\nSex: F\nAge: 64\nImageQuality: Poor\nEF: 39\nFrameRate: 25.0\n"
                   "Comment: free text\n")
    assert read_camus_info(cfg) == {"ED": 1, "ES": 14, "NbFrame": 14, "Sex": "F", "Age": 64,
                                    "ImageQuality": "Poor", "EF": 39.0, "FrameRate": 25.0, "Comment": "free text"}


@pytest.mark.parametrize("text, message", [
    ("ED: 1\nES: 5\nNbFrame: 5\n", r"missing key\(s\) \['Sex', 'Age', 'ImageQuality', 'EF', 'FrameRate'\]"),
    ("ED: 1\nES 5\n", "line 2 'ES 5' is not a 'Key: value' line"),
    ("ED: first\n", "ED is 'first', expected a number"),
    ("ED: 1.5\n", "ED is '1.5', expected an integer"),
    ("ED: 1\nES: 9\nNbFrame: 5\nSex: M\nAge: 1\nImageQuality: Good\nEF: 50\nFrameRate: 30\n",
     "must lie in 1..NbFrame"),
])
def test_bad_info_file_is_named(tmp_path, text, message):
    cfg = tmp_path / "Info_2CH.cfg"
    cfg.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(cfg)) + ".*" + message):
        read_camus_info(cfg)


def test_missing_file_is_named(written):
    root, _ = written
    path = camus_path(patient_dir(root), "2CH", "half_sequence_gt")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_camus_sequence(patient_dir(root), "2CH")
    with pytest.raises(FileNotFoundError, match="Info_2CH.cfg"):
        read_camus_sequence(root / "database_nifti" / "patient9999", "2CH")


def test_non_nifti_file_is_named(written):
    root, _ = written
    path = camus_path(patient_dir(root), "4CH", "half_sequence")
    path.write_bytes(b"not a NIfTI file" * 64)
    with pytest.raises(ValueError, match=re.escape(str(path)) + " is not a NIfTI file"):
        read_camus_sequence(patient_dir(root), "4CH")


def _save_labels(path, labels_thw):
    nib.save(nib.Nifti1Image(labels_thw.transpose(2, 1, 0).astype(np.uint8), np.eye(4)), path)


def test_labels_outside_camus_range_are_named(written):
    root, cases = written
    path = camus_path(patient_dir(root), "2CH", "half_sequence_gt")
    labels = cases["2CH"].labels[:5].copy()
    labels[2, 0, 0] = 5
    _save_labels(path, labels)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*label values \[5\]"):
        read_camus_sequence(patient_dir(root), "2CH")


def test_empty_lv_at_ed_is_named(written):
    root, cases = written
    path = camus_path(patient_dir(root), "2CH", "half_sequence_gt")
    labels = cases["2CH"].labels[:5].copy()
    labels[0][labels[0] == 1] = 0
    _save_labels(path, labels)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r" \(ED frame 0\): empty LV"):
        read_camus_sequence(patient_dir(root), "2CH")
    ed_gt = camus_path(patient_dir(root), "2CH", "ED_gt")
    nib.save(nib.Nifti1Image(np.zeros((64, 48), np.uint8), np.eye(4)), ed_gt)
    with pytest.raises(ValueError, match=re.escape(str(ed_gt)) + ": empty LV"):
        read_camus_frame(patient_dir(root), "2CH", "ED")


def test_shape_disagreements_are_named(written):
    root, cases = written
    path = camus_path(patient_dir(root), "2CH", "half_sequence_gt")
    _save_labels(path, cases["2CH"].labels[:4])
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": labels \(4, 48, 64\) and .* \(5, 48, 64\)"):
        read_camus_sequence(patient_dir(root), "2CH")
    cfg = patient_dir(root) / "Info_4CH.cfg"
    cfg.write_text(cfg.read_text().replace("NbFrame: 4", "NbFrame: 3").replace("ES: 4", "ES: 3"))
    with pytest.raises(ValueError, match=r"4 frames but NbFrame 3"):
        read_camus_sequence(patient_dir(root), "4CH")


def test_writer_rejects_what_camus_cannot_hold(tmp_path):
    case = make_case()
    case.labels[0, 0, 0] = 4
    with pytest.raises(ValueError, match=r"label values \[4\]"):
        write_camus_case(tmp_path, case)
    with pytest.raises(ValueError, match="view 'PLAX'"):
        write_camus_case(tmp_path, make_case(view="PLAX"))


@pytest.fixture
def written_2019(tmp_path):
    """The same patient in the original 2019 release's MetaImage layout."""
    cases = {"2CH": make_case("2CH", es_index=4), "4CH": make_case("4CH", es_index=3, seed=1)}
    for case in cases.values():
        write_camus_case(tmp_path, case, release="mhd")
    return tmp_path, cases


def test_the_2019_release_is_laid_out_and_read_through_simpleitk(written_2019):
    root, cases = written_2019
    folder = root / "training" / "patient0001"
    names = {f"patient0001_{v}_{p}.{ext}" for v in ("2CH", "4CH") for p in ("sequence", "ED", "ES", "ED_gt", "ES_gt")
             for ext in ("mhd", "raw")}
    assert {p.name for p in folder.iterdir()} == names | {"Info_2CH.cfg", "Info_4CH.cfg"}
    header = (folder / "patient0001_2CH_ED.mhd").read_text()
    assert "DimSize = 64 48 1" in header and "ElementDataFile = patient0001_2CH_ED.raw" in header
    info = read_camus_info(folder / "Info_2CH.cfg")
    assert "FrameRate" not in info and info["EF"] == info["LVef"] == pytest.approx(54.3)
    assert info["LVedv"] > info["LVesv"] > 0
    assert list_camus_patients(root) == [folder]
    for view, case in cases.items():
        record = read_camus_sequence(folder, view)
        n = case.es_index + 1
        np.testing.assert_array_equal(record.frames, case.frames[:n])
        assert record.labelled == (0, n - 1)  # only ED and ES are annotated in that release
        np.testing.assert_array_equal(record.labels[[0, n - 1]], case.labels[[0, n - 1]])
        np.testing.assert_allclose(record.spacing_mm, (SPACING_MM, SPACING_MM), rtol=1e-6)
        image, labels, _ = read_camus_frame(folder, view, "ES")
        np.testing.assert_array_equal(image, case.frames[n - 1])
        np.testing.assert_array_equal(labels, case.labels[n - 1])


def test_2019_clips_carry_ed_and_es_labels_and_an_unknown_frame_rate(written_2019):
    from freeecho_core.data.clips import UNLABELLED, ClipConfig
    from freeecho_core.data.dataset import EchoClips

    root, _ = written_2019
    clips = EchoClips(root, "TRAIN", ClipConfig(frames=5, size=16))
    clip = clips.clip(0)
    labelled = [k for k in range(5) if (clip.frame_labels[k] != UNLABELLED).all()]
    assert labelled == [0, 4] and clip.fps is None and clips.frame_rate() is None
    assert set(np.unique(clip.ed_map)) == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="has no frame rate, so it cannot be resampled to 50 fps"):
        EchoClips(root, "TRAIN", ClipConfig(frames=5, size=16, fps=50)).clip(0)


def test_a_missing_simpleitk_names_the_extra(written_2019, monkeypatch):
    root, _ = written_2019
    monkeypatch.setitem(__import__("sys").modules, "SimpleITK", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"patient0001_2CH_sequence.mhd: .*needs SimpleITK: pip install -e '.\[mhd\]'"):
        read_camus_sequence(root / "training" / "patient0001", "2CH")


def test_a_broken_mhd_file_is_named(written_2019):
    root, _ = written_2019
    folder = root / "training" / "patient0001"
    (folder / "patient0001_2CH_sequence.raw").write_bytes(b"short")
    with pytest.raises(ValueError, match="patient0001_2CH_sequence.mhd is not a MetaImage file SimpleITK can read"):
        read_camus_sequence(folder, "2CH")


def test_the_phantom_writes_the_2019_release(tmp_path):
    from freeecho_core.cli import main

    assert main(["phantom", "--format", "camus-2019", "--out", str(tmp_path / "c"), "--count", "1", "--height",
                 "32", "--frames", "8", "--workers", "1"]) == 0
    folder = tmp_path / "c" / "training" / "patient0001"
    assert (folder / "patient0001_4CH_sequence.mhd").is_file() and "LVef" in read_camus_info(folder / "Info_4CH.cfg")
    assert read_camus_sequence(folder, "4CH").labelled[0] == 0


def test_every_annotated_frame_of_a_camus_recording_is_read_also_beyond_the_clip(trained):
    from freeecho_core.data.clips import ClipConfig
    from freeecho_core.data.dataset import EchoClips

    data = EchoClips(trained[0], "TRAIN", ClipConfig(frames=2, size=16))  # a clip shorter than the half sequence
    clip = data.clip(0)
    frames, labels = data.annotated_frames(0)
    assert len(frames) > len(clip.video) and frames.shape[1:] == labels.shape[1:] == (16, 16)  # the whole sequence
    assert np.array_equal(frames[:2], clip.video) and np.array_equal(labels[:2], clip.frame_labels)
