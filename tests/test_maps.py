"""Users' map files (`data.maps`): PNG and NIfTI in the three label conventions, any size and aspect, checked
before resizing, and made into the model's input by the same function as the training clips' ED maps."""
import cv2
import nibabel as nib
import numpy as np
import pytest

from freeecho_core.data.case import to_five_labels
from freeecho_core.data.clips import ClipConfig, crop_to_aspect, ed_map_from_labels, myocardium_ring, prepare_clip
from freeecho_core.data.maps import (MAX_MAP_SIDE, camus_labels_and_sector, fan_sector, infer_convention, prepare_map,
                                     read_map)
from freeecho_core.data.phantom import PhantomConfig, make_case


@pytest.fixture(scope="module")
def camus_map():
    """A phantom's ED labels in the CAMUS convention (0-3), 64 x 77: a heart whose grown myocardium ring stays
    inside the fan (hearts framed close to the fan's edge have their ring cut there)."""
    return make_case(0, 5, "4CH", PhantomConfig(height=64, frames=4)).labels[0].astype(np.uint8)


def five_label_map(labels, convention="auto", where="the map"):
    """The map at its own resolution in the 5-label convention."""
    camus, sector, _ = camus_labels_and_sector(np.asarray(labels).astype(np.int64), convention, where)
    return to_five_labels(camus, sector)


def test_png_and_nifti_maps_read_the_same_labels(camus_map, tmp_path):
    cv2.imwrite(str(tmp_path / "m8.png"), camus_map)
    cv2.imwrite(str(tmp_path / "m16.png"), camus_map.astype(np.uint16))
    nib.save(nib.Nifti1Image(camus_map.T.copy(), np.eye(4)), tmp_path / "m.nii.gz")  # CAMUS stores (W, H)
    nib.save(nib.Nifti1Image(camus_map.T[..., None].copy(), np.eye(4)), tmp_path / "m1.nii")  # (W, H, 1)
    for name in ("m8.png", "m16.png", "m.nii.gz", "m1.nii"):
        labels = read_map(tmp_path / name)
        assert labels.dtype == np.int64 and np.array_equal(labels, camus_map), name


def test_palette_pngs_are_read_as_their_indices_not_their_colours(camus_map, tmp_path):
    """A palette PNG written by Pillow (as image tools save label maps), its colours unlike the labels."""
    from PIL import Image

    image = Image.fromarray(camus_map, mode="L").convert("P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [128] * 3 * 252)
    image.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    labels = read_map(tmp_path / "palette.png")
    assert labels.dtype == np.int64 and np.array_equal(labels, camus_map)
    assert prepare_map(tmp_path / "palette.png", 32).convention == "camus"


def test_bad_map_files_get_clear_errors(camus_map, tmp_path):
    with pytest.raises(FileNotFoundError, match="map file not found"):
        read_map(tmp_path / "none.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.stack([camus_map] * 3, axis=-1))
    with pytest.raises(ValueError, match="colour PNG"):
        read_map(tmp_path / "rgb.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png is not a PNG"):
        read_map(tmp_path / "junk.png")
    (tmp_path / "junk.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(ValueError, match="not a NIfTI file"):
        read_map(tmp_path / "junk.nii.gz")
    (tmp_path / "m.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a .png, .nii or .nii.gz"):
        read_map(tmp_path / "m.jpg")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.uint8), np.eye(4)), tmp_path / "seq.nii")
    with pytest.raises(ValueError, match="one 2-D frame"):
        read_map(tmp_path / "seq.nii")


def test_camus_maps_get_a_fan_and_five_label_maps_pass_through(camus_map):
    five = five_label_map(camus_map.astype(np.int64))
    assert set(np.unique(five)) == {0, 1, 2, 3, 4}
    assert np.array_equal(five == 2, camus_map == 1) and np.array_equal(five == 4, camus_map == 3)
    sector = fan_sector(camus_map.shape, camus_map)
    assert sector[camus_map > 0].all() and not sector[0, 0] and sector[-1, camus_map.shape[1] // 2]
    native = to_five_labels(camus_map, sector)
    assert np.array_equal(five_label_map(native), native)  # holds label 4: taken as 5-label
    with pytest.raises(ValueError, match=r"labels \[7\] are not in the camus convention"):
        five_label_map(np.where(camus_map == 3, 7, camus_map))
    with pytest.raises(ValueError, match="no LV cavity"):
        five_label_map(np.where(camus_map == 1, 2, camus_map), where="my.png")
    with pytest.raises(ValueError, match="convention must be"):
        five_label_map(camus_map, "nifti")


def test_maps_of_any_size_give_the_same_model_input(camus_map, tmp_path):
    cv2.imwrite(str(tmp_path / "small.png"), camus_map)
    cv2.imwrite(str(tmp_path / "large.png"), np.kron(camus_map, np.ones((3, 3), np.uint8)))  # 3x, exact
    small, large = prepare_map(tmp_path / "small.png", 32), prepare_map(tmp_path / "large.png", 32)
    assert small.convention == large.convention == "camus"
    anatomy = small.ed_map >= 2  # the labels themselves are identical; the fan, drawn at each file's resolution,
    assert np.array_equal(np.where(anatomy, small.ed_map, 0), np.where(large.ed_map >= 2, large.ed_map, 0))
    assert ((small.ed_map > 0) == (large.ed_map > 0)).mean() > 0.99  # differs only along its edge


def test_the_convention_is_inferred_from_the_values_and_recorded(camus_map):
    assert infer_convention({0, 1, 2, 3}) == "camus" and infer_convention({0, 1, 2, 3, 4}) == "five"
    assert infer_convention({0, 1}) == infer_convention({0, 255}) == "lv" and infer_convention({0, 1, 3}) == "camus"
    assert prepare_map(camus_map.astype(np.int64), 32).convention == "camus"
    assert prepare_map((camus_map == 1).astype(np.int64) * 255, 32).convention == "lv"


def test_a_five_label_map_without_an_atrium_is_read_as_five_labels(camus_map):
    """Labels {0, 1, 2, 3} are CAMUS labels, or the 5-label convention of a view without the atrium: there label 1
    is the sector's tissue, far larger than the LV and myocardium it surrounds."""
    camus, sector, _ = camus_labels_and_sector(camus_map.astype(np.int64), "camus")
    five = to_five_labels(np.where(camus == 3, 0, camus), sector)
    assert set(np.unique(five)) == {0, 1, 2, 3}
    prepared = prepare_map(five, 32)
    assert prepared.convention == "five" and np.array_equal(prepared.ed_map, prepare_map(five, 32, "five").ed_map)
    assert (prepared.ed_map == 2).mean() < 0.2  # the LV is the cavity, not the whole sector
    assert prepare_map(camus_map.astype(np.int64), 32).convention == "camus"
    assert prepare_map(np.where(camus_map == 3, 0, camus_map).astype(np.int64), 32).convention == "camus"


def test_lv_only_maps_grow_the_myocardium_ring_of_the_training_clips(camus_map):
    """An EchoNet-style map (LV mask only) gets its myocardium back, by the functions EchoClips uses."""
    lv = camus_map == 1
    prepared = prepare_map(lv.astype(np.int64) * 255, 32)
    assert prepared.convention == "lv" and set(np.unique(prepared.ed_map)) == {0, 1, 2, 3}
    sector = fan_sector(lv.shape, lv)
    assert np.array_equal(prepared.ed_map, ed_map_from_labels(myocardium_ring(lv, sector), sector, 32))
    ring = prepared.ed_map == 3  # the ring surrounds the cavity: every LV pixel's 4-neighbours are LV or ring
    cavity = prepared.ed_map == 2
    inner = cavity[1:-1, 1:-1]
    neighbours = [np.roll(cavity | ring, shift, axis)[1:-1, 1:-1] for shift in (1, -1) for axis in (0, 1)]
    assert all(n[inner].all() for n in neighbours)


def test_training_clips_and_user_maps_share_one_ed_map_function(camus_map):
    case = make_case(0, 1, "2CH", PhantomConfig(height=64, frames=6))
    frames, labels = case.frames[:, :, 6:58], case.labels[:, :, 6:58]  # a tall recording (64 x 52)
    clip = prepare_clip("p", "2CH", frames, {0: labels[0]}, 0, ClipConfig(frames=4, size=32), case.fps,
                        sector=case.sector[:, 6:58])
    assert np.array_equal(clip.ed_map, ed_map_from_labels(labels[0], case.sector[:, 6:58], 32))


@pytest.mark.parametrize("rows, cols", [(slice(None), slice(12, 52)), (slice(0, 52), slice(None))])
def test_non_square_maps_are_padded_not_stretched(camus_map, rows, cols):
    """Maps of aspect 0.62 (64 x 40) and 1.23 (52 x 64), like the authors' CAMUS maps (0.61 and 1.21): the model
    input is the map padded to a square, so cropping it back gives the map itself, resized by an exact factor 2."""
    square = camus_map[:, 7:71]  # the phantom's 64 x 78 map, cut to 64 x 64 around its centre
    labels = square[rows, cols].astype(np.int64)
    prepared = prepare_map(labels, 32)
    assert prepared.ed_map.shape == (32, 32) and prepared.shape == labels.shape
    back = crop_to_aspect(prepared.ed_map, labels.shape)
    assert back.shape == (labels.shape[0] // 2, labels.shape[1] // 2)
    assert np.array_equal(back, five_label_map(labels)[1::2, 1::2])
    outside = np.ones((32, 32), bool)
    h, w = back.shape
    outside[:h, (32 - w) // 2 : (32 - w) // 2 + w] = False
    assert (prepared.ed_map[outside] == 0).all()  # the padding is outside the scan sector


def test_labels_are_checked_before_resizing_and_huge_maps_refused(camus_map, tmp_path):
    for stray in (7, -1):
        labels = camus_map.astype(np.int64)
        labels[0, 0] = stray  # a pixel that resizing to 16 x 16 never samples
        with pytest.raises(ValueError, match=rf"labels \[{stray}\] are not in the camus convention"):
            prepare_map(labels, 16)
    with pytest.raises(ValueError, match=f"larger than {MAX_MAP_SIDE} pixels a side"):
        prepare_map(np.zeros((MAX_MAP_SIDE + 1, 8), np.int64), 16)
    cv2.imwrite(str(tmp_path / "tall.png"), np.zeros((MAX_MAP_SIDE + 1, 8), np.uint8))
    with pytest.raises(ValueError, match="tall.png: a 4097 x 8 map is larger than 4096"):
        read_map(tmp_path / "tall.png")
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (20000).to_bytes(4, "big") * 2 + b"\x08\x00\x00\x00\x00"
    (tmp_path / "huge.png").write_bytes(header)  # 20000 x 20000 claimed: refused from the header, never decoded
    with pytest.raises(ValueError, match="a 20000 x 20000 map is larger"):
        read_map(tmp_path / "huge.png")
    nib.save(nib.Nifti1Image(np.zeros((8, MAX_MAP_SIDE + 1), np.uint8), np.eye(4)), tmp_path / "tall.nii")
    with pytest.raises(ValueError, match="tall.nii: a 4097 x 8 map is larger"):
        read_map(tmp_path / "tall.nii")
