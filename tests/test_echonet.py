"""EchoNet-Dynamic format: tracings and method of disks against known answers, dataset round trip, errors."""
import re

import cv2
import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from freeecho_core.data.case import EchoCase
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips, ejection_fractions
from freeecho_core.data.echonet import (ed_es_frames, lv_tracings, mask_from_tracings, method_of_disks_volume,
                                        read_echonet_video, read_filelist, read_tracings, read_video,
                                        write_echonet_dataset)

NAMES = ("0X00000000000000A1", "0X00000000000000B2")


def dice(a, b):
    return 2 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def ellipse(shape, a, b, angle_deg=0.0, centre=None):
    """(H, W) bool ellipse, semi-axis a along the long axis (down the image at angle 0), b across."""
    H, W = shape
    cy, cx = centre or (H / 2, W / 2)
    yy, xx = np.mgrid[:H, :W]
    t = np.deg2rad(angle_deg)
    along = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
    across = (xx - cx) * np.cos(t) - (yy - cy) * np.sin(t)
    return (along / a) ** 2 + (across / b) ** 2 <= 1


def make_case(case_id, es_index=4, shrink=0.2, T=6, H=48, W=64, seed=0) -> EchoCase:
    """Fan of noise; labels: a beating bullet LV (ellipse cut by the mitral plane), a myocardial ring, an LA."""
    yy, xx = np.mgrid[:H, :W].astype(float)
    sector = (np.hypot(xx - W / 2, yy) < H - 2) & (np.abs(np.arctan2(xx - W / 2, yy)) < np.deg2rad(40))
    labels = np.zeros((T, H, W), np.uint8)
    base = yy <= 30
    for t in range(T):
        s = 1 - shrink * np.sin(np.pi * t / (2 * es_index)) ** 2  # LV scale, smallest (1 - shrink) at ES
        labels[t][ellipse((H, W), 14 * s + 3, 7 * s + 3, centre=(21, W / 2)) & base] = 2
        labels[t][ellipse((H, W), 14 * s, 7 * s, centre=(21, W / 2)) & base] = 1
        labels[t][ellipse((H, W), 5, 8, centre=(37, W / 2))] = 3
    rng = np.random.default_rng(seed)
    frames = (rng.integers(60, 200, (T, H, W)) * sector).astype(np.uint8)
    frames = cv2.GaussianBlur(frames.transpose(1, 2, 0), (0, 0), 1.0).transpose(2, 0, 1)  # speckle-sized grains
    return EchoCase(case_id, "4CH", frames, labels, sector, es_index, ef=0.5, fps=50.0, pixel_spacing_mm=2.5)


def padded_112(images, order=cv2.INTER_AREA):
    """What the writer stores: zero rows below to make (T, 64, 64), then 112 x 112."""
    square = np.pad(images, ((0, 0), (0, 16), (0, 0)))
    return np.stack([cv2.resize(f, (112, 112), interpolation=order) for f in square])


def disk_volume_of_mask(mask, spacing_cm):
    """Method of disks straight on a vertical-axis mask: one disk per image row, diameter = the row's width."""
    widths = mask.sum(axis=1)
    return np.pi / 4 * np.sum(widths.astype(float) ** 2) * spacing_cm**3


@pytest.fixture
def dataset(tmp_path):
    cases = [make_case(NAMES[0]), make_case(NAMES[1], es_index=3, shrink=0.3, seed=1)]
    return write_echonet_dataset(tmp_path / "echonet", cases, ["TRAIN", "VAL"]), cases


@pytest.mark.parametrize("angle", [0.0, 25.0, -40.0])
def test_tracings_reproduce_the_mask(angle):
    mask = ellipse((160, 160), 60, 24, angle) & (np.mgrid[:160, :160][0] < 125)  # cut by a mitral plane
    rows = lv_tracings(mask)
    assert rows.shape == (21, 4)
    assert dice(mask_from_tracings(rows, mask.shape), mask) > 0.97


def test_tracings_on_a_small_frame():
    mask = make_case(NAMES[0]).labels[4] == 1
    assert dice(mask_from_tracings(lv_tracings(mask), mask.shape), mask) > 0.9


def test_tracing_geometry():
    mask = ellipse((160, 160), 60, 24, angle_deg=20.0) & (np.mgrid[:160, :160][0] < 130)
    rows = lv_tracings(mask, n_chords=10)
    ends = np.concatenate([rows[:, :2], rows[:, 2:]])
    at_ends = map_coordinates(mask.astype(float), [ends[:, 1], ends[:, 0]], order=1)
    np.testing.assert_allclose(at_ends, 0.5, atol=0.02)  # every end point on the boundary (pixel edges)
    apex, base = rows[0, :2], rows[0, 2:]
    axis = (base - apex) / np.linalg.norm(base - apex)
    assert apex[1] < base[1]  # apex nearer the probe at the top
    chords = rows[1:, 2:] - rows[1:, :2]
    np.testing.assert_allclose(chords @ axis, 0.0, atol=1e-9)  # perpendicular to the long axis
    centres = (rows[1:, :2] + rows[1:, 2:]) / 2
    np.testing.assert_allclose(np.diff((centres - apex) @ axis), np.linalg.norm(base - apex) / 10, rtol=0.02)
    side_1, side_2 = (axis[0] * (p[:, 1] - apex[1]) - axis[1] * (p[:, 0] - apex[0])
                      for p in (rows[1:, :2], rows[1:, 2:]))
    assert np.all(side_1 > 0) and np.all(side_2 < 0)  # (X1, Y1) always on the same side of the axis
    assert np.all(rows[1:, 0] < rows[1:, 2])  # which is the image-left side for an axis pointing down


def test_method_of_disks_cylinder_by_hand():
    """A cylinder of length 10 and diameter 4 traced with 5 chords: pi * 2^2 * 10 pixel^3 exactly."""
    rows = np.array([[0, 0, 0, 10]] + [[-2, y, 2, y] for y in (1, 3, 5, 7, 9)], float)
    assert method_of_disks_volume(rows, 0.1) == pytest.approx(np.pi * 4 * 10 * 1e-3, rel=1e-12)


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_method_of_disks_ellipsoid(angle):
    """Prolate spheroid of revolution about the long axis: V = 4/3 pi a b^2."""
    a, b, spacing_cm = 60, 24, 0.05
    V = method_of_disks_volume(lv_tracings(ellipse((160, 160), a, b, angle)), spacing_cm)
    assert V == pytest.approx(4 / 3 * np.pi * a * b**2 * spacing_cm**3, rel=0.02)


def test_empty_mask_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        lv_tracings(np.zeros((8, 8), bool))


def test_dataset_layout_and_headers(dataset):
    root, cases = dataset
    assert sorted(p.name for p in root.iterdir()) == ["FileList.csv", "Videos", "VolumeTracings.csv"]
    assert sorted(p.name for p in (root / "Videos").iterdir()) == [f"{n}.avi" for n in NAMES]
    filelist = (root / "FileList.csv").read_text().splitlines()
    assert filelist[0] == "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"
    assert [line.split(",")[0] for line in filelist[1:]] == list(NAMES)
    assert [line.split(",")[4:] for line in filelist[1:]] == [["112", "112", "50", "6", "TRAIN"],
                                                              ["112", "112", "50", "6", "VAL"]]
    tracings = (root / "VolumeTracings.csv").read_text().splitlines()
    assert tracings[0] == "FileName,X1,Y1,X2,Y2,Frame"
    rows = [line.split(",") for line in tracings[1:]]
    assert [(r[0], r[5]) for r in rows[::21]] == [(f"{NAMES[0]}.avi", "4"), (f"{NAMES[0]}.avi", "0"),
                                                  (f"{NAMES[1]}.avi", "3"), (f"{NAMES[1]}.avi", "0")]
    assert len(rows) == 4 * 21


def test_videos_as_opencv_sees_them(dataset):
    root, cases = dataset
    capture = cv2.VideoCapture(str(root / "Videos" / f"{NAMES[0]}.avi"))
    assert capture.get(cv2.CAP_PROP_FPS) == 50.0
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape == (112, 112, 3)
    assert np.abs(frame[..., 0].astype(int) - frame[..., 2]).max() <= 2  # three equal channels, up to JPEG


def test_video_round_trip(dataset):
    root, cases = dataset
    record = read_echonet_video(root, f"{NAMES[1]}.avi")
    assert record.frames.shape == (6, 112, 112) and record.frames.dtype == np.uint8
    assert np.abs(record.frames.astype(float) - padded_112(cases[1].frames)).mean() < 4
    assert (record.filename, record.ed_index, record.es_index) == (NAMES[1], 0, 3)
    assert (record.fps, record.split) == (50.0, "VAL")
    for mask, t in ((record.ed_mask, 0), (record.es_mask, 3)):
        assert dice(mask, padded_112(cases[1].labels[t : t + 1] == 1, cv2.INTER_NEAREST)[0].astype(bool)) > 0.9


def test_filelist_volumes_follow_the_tracings(dataset):
    root, cases = dataset
    spacing_cm = 2.5 / 10 * 64 / 112
    tracings = read_tracings(root)
    for entry, case in zip(read_filelist(root), cases):
        traced = tracings[entry["FileName"]]
        assert sorted(traced) == [0, case.es_index] and all(r.shape == (21, 4) for r in traced.values())
        edv, esv = (method_of_disks_volume(traced[f], spacing_cm) for f in (0, case.es_index))
        assert (entry["EDV"], entry["ESV"]) == (pytest.approx(edv, rel=1e-6), pytest.approx(esv, rel=1e-6))
        assert entry["EF"] == pytest.approx(100 * (edv - esv) / edv, rel=1e-6)


def test_ef_agrees_with_label_volumes(dataset):
    """EF from the 112-pixel tracings vs EF of disks taken row by row on the full-resolution label maps."""
    root, cases = dataset
    for entry, case in zip(read_filelist(root), cases):
        ed, es = (disk_volume_of_mask(case.labels[t] == 1, 0.25) for t in (0, case.es_index))
        assert entry["EF"] == pytest.approx(100 * (ed - es) / ed, abs=2.0)
        assert entry["EDV"] == pytest.approx(ed, rel=0.03)


def test_ed_is_the_larger_traced_area_in_any_order():
    big, small = lv_tracings(ellipse((64, 64), 20, 10)), lv_tracings(ellipse((64, 64), 16, 8))
    assert ed_es_frames({7: small, 30: big}) == (30, 7)
    assert ed_es_frames({30: big, 7: small}) == (30, 7)
    with pytest.raises(ValueError, match="two traced frames"):
        ed_es_frames({30: big})


def test_existing_root_is_refused_and_failures_leave_nothing(tmp_path, dataset):
    root, cases = dataset
    with pytest.raises(FileExistsError, match=re.escape(str(root))):
        write_echonet_dataset(root, cases, ["TRAIN", "TEST"])
    bad = make_case("0X00000000000000C3")
    bad.labels[4][bad.labels[4] == 1] = 0
    with pytest.raises(ValueError, match="0X00000000000000C3: empty LV"):
        write_echonet_dataset(tmp_path / "other", [cases[0], bad], ["TRAIN", "TEST"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["echonet"]
    with pytest.raises(ValueError, match="splits"):
        write_echonet_dataset(tmp_path / "other", cases, ["TRAIN", "train"])


@pytest.mark.parametrize("csv_name, column", [("FileList.csv", "EDV"), ("VolumeTracings.csv", "Frame")])
def test_missing_csv_column_is_named(dataset, csv_name, column):
    root, _ = dataset
    path = root / csv_name
    lines = [line.split(",") for line in path.read_text().splitlines()]
    i = lines[0].index(column)
    path.write_text("\n".join(",".join(line[:i] + line[i + 1 :]) for line in lines) + "\n")
    reader = read_filelist if csv_name == "FileList.csv" else read_tracings
    with pytest.raises(ValueError, match=re.escape(str(path)) + rf": missing column\(s\) \['{column}'\]"):
        reader(root)


def test_missing_files_are_named(dataset):
    root, _ = dataset
    (root / "Videos" / f"{NAMES[0]}.avi").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "Videos" / f"{NAMES[0]}.avi"))):
        read_echonet_video(root, NAMES[0])
    (root / "FileList.csv").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "FileList.csv"))):
        read_filelist(root)


def test_bad_cell_is_named(dataset):
    root, _ = dataset
    path = root / "VolumeTracings.csv"
    lines = path.read_text().splitlines()
    lines[2] = ",".join(["x.avi", "left", "1", "2", "3", "0"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": line 3, X1 is 'left', expected a float"):
        read_tracings(root)


def test_undecodable_video_is_named(dataset):
    root, _ = dataset
    path = root / "Videos" / f"{NAMES[0]}.avi"
    path.write_bytes(b"RIFF garbage, not an AVI" * 100)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_video(path)


def test_video_shorter_than_asked_is_named(dataset):
    root, _ = dataset
    path = root / "Videos" / f"{NAMES[0]}.avi"
    assert read_video(path, n_frames=4).shape == (4, 112, 112)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": has 6 frames, 10 were asked for"):
        read_video(path, n_frames=10)


def test_video_without_two_tracings_is_named(dataset):
    root, _ = dataset
    path = root / "VolumeTracings.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[22:]) + "\n")  # drop the ES tracing of the first video
    with pytest.raises(ValueError, match=re.escape(str(path)) + f": {NAMES[0]}.avi: ED and ES need two traced"):
        read_echonet_video(root, NAMES[0])
    with pytest.raises(ValueError, match="no row for FileName 0XMISSING"):
        read_echonet_video(root, "0XMISSING")
    path.write_text("\n".join(lines[:1] + lines[22:66]) + "\n")  # second video: an ED tracing of 2 rows
    with pytest.raises(ValueError, match=re.escape(str(path)) + f": {NAMES[1]}.avi: tracing rows must be"):
        read_echonet_video(root, NAMES[1])


def test_a_video_without_tracings_is_skipped_counted_and_reported_once(dataset):
    """The real release has videos with fewer than two traced frames: the dataset leaves them out, with one
    warning naming how many and why, and trains on the rest."""
    root, _ = dataset
    path = root / "VolumeTracings.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[22:]) + "\n")  # the first video keeps only one traced frame
    with pytest.warns(UserWarning, match=r"skipped 1 of 1 TRAIN videos without usable ED/ES tracings") as caught:
        train = EchoClips(root, "TRAIN", ClipConfig(frames=4, size=32))
    assert len(caught) == 1 and len(train) == 0 and train.skipped == [NAMES[0]]
    assert len(EchoClips(root, "VAL", ClipConfig(frames=4, size=32))) == 1
    with pytest.warns(UserWarning, match="skipped 1 of 2 videos"):
        assert [r["case"] for r in ejection_fractions(root)] == [NAMES[1]]


def test_a_full_size_filelist_with_missing_tracings_loads_with_one_summary(tmp_path):
    """EchoNet-Dynamic's FileList.csv: 10,030 rows (TRAIN 7,465 / VAL 1,288 / TEST 1,277), CRLF line ends,
    names of varying length; tracings missing for 7 videos and a single traced frame for 5."""
    root = tmp_path / "echonet"
    root.mkdir()
    splits = ["TRAIN"] * 7465 + ["VAL"] * 1288 + ["TEST"] * 1277
    names = [f"0X{i:X}" for i in range(len(splits))]  # some much shorter than the usual 18 characters
    header = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"
    rows = [f"{n},55.0,30.0,70.0,112,112,{50 if i % 5 else 37},120,{s}" for i, (n, s) in enumerate(zip(names, splits))]
    (root / "FileList.csv").write_bytes(("\r\n".join([header] + rows) + "\r\n").encode())
    tracing_rows = ["FileName,X1,Y1,X2,Y2,Frame"]
    for i, name in enumerate(names):
        if i % 1000 == 3:  # no tracings (7 videos, all TRAIN or VAL)
            continue
        frames = (10,) if i % 2000 == 501 else (10, 40)  # 5 videos with one traced frame
        for frame in frames:
            tracing_rows += [f"{name}.avi,50,20,52,90,{frame}", f"{name}.avi,40,40,60,40,{frame}",
                             f"{name}.avi,41,60,59,60,{frame}"]
    (root / "VolumeTracings.csv").write_text("\n".join(tracing_rows) + "\n")
    with pytest.warns(UserWarning) as caught:
        train = EchoClips(root, "TRAIN", ClipConfig(frames=16, size=64))
    assert len(caught) == 1
    skipped = len(train.skipped)
    assert skipped == sum(1 for i in range(7465) if i % 1000 == 3 or i % 2000 == 501) and len(train) == 7465 - skipped
    assert f"skipped {skipped} of 7465 TRAIN videos" in str(caught[0].message)


def test_a_traced_frame_outside_the_clip_is_still_an_annotated_frame(dataset):
    """A clip holds the K frames from ED; the ES tracing beyond them (often before ED, or later, on real
    EchoNet-Dynamic) is kept by `annotated_frames`, which the sim-to-real report scores."""
    root, cases = dataset
    data = EchoClips(root, "TRAIN", ClipConfig(frames=2, size=16))  # NAMES[0]: ES at frame 4, outside the clip
    clip = data.clip(0)
    assert [(f >= 0).all() for f in clip.frame_labels] == [True, False]
    frames, labels = data.annotated_frames(0)
    assert frames.shape == labels.shape == (2, 16, 16) and frames.dtype == np.float32 and labels.dtype == np.int64
    assert np.array_equal(frames[0], clip.video[0]) and np.array_equal(labels[0], clip.frame_labels[0])
    assert labels[1].sum() < labels[0].sum()  # the ES cavity, smaller than the ED one
