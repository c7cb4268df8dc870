"""Pseudo image and OT intensity matching (paper eq. (3)): marginals, the exact 1-D solution, monotonicity."""
import numpy as np
import pytest
import torch

from freeecho_core.data.histogram import intensity_histogram
from freeecho_core.edm import karras_sigmas
from freeecho_core.pseudo import (AUTHORS_INTENSITIES, barycentric_map, exact_plan, match_intensities, pseudo_image,
                                  pseudo_video, resize_labels, sdedit_colour_image, sinkhorn_plan, source_atoms,
                                  stochastic_map)
from freeecho_core.sampler import noise_to_step, sdedit_sample, seeded_generators

SINKHORN_TOL = 1e-9  # sinkhorn_plan's default marginal tolerance
MAP_TOL = 0.005  # Sinkhorn (reg 1e-3) vs exact barycentric grey levels (measured 3e-4)


def unit_grid(size):
    """Pixel-centre coordinates (y, x) in [0, 1]^2, so shapes drawn at any size agree."""
    y, x = (np.mgrid[:size, :size] + 0.5) / size
    return y, x


def fan(size):
    """An apical scan sector: probe at the top centre, depth 0.95, +-40 degrees."""
    y, x = unit_grid(size)
    return (np.hypot(y, x - 0.5) < 0.95) & (np.abs(np.arctan2(x - 0.5, y)) < np.deg2rad(40))


def heart_labels(size=64):
    """A hand-made 5-label map: fan sector, ring myocardium around an elliptic LV, LA ellipse below."""
    y, x = unit_grid(size)

    def ellipse(cy, cx, ry, rx):
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1

    labels = fan(size).astype(np.int64)
    labels[ellipse(0.45, 0.5, 0.31, 0.18)] = 3
    labels[ellipse(0.45, 0.5, 0.25, 0.12)] = 2
    labels[ellipse(0.83, 0.5, 0.10, 0.13)] = 4
    return labels


def echo_like_frames(n=8, size=64, seed=0):
    """Speckle-like uint8 frames: Rayleigh amplitudes, 40% dark (blood), 60% bright (tissue), in a fan."""
    rng = np.random.default_rng(seed)
    scale = np.where(rng.random((n, size, size)) < 0.4, 0.05, 0.3)
    amplitude = np.clip(rng.rayleigh(scale), 0, 1)
    sector = fan(size)
    return np.where(sector, np.round(255 * amplitude), 0).astype(np.uint8), sector


@pytest.fixture(scope="module")
def labels():
    return heart_labels()


@pytest.fixture(scope="module")
def target():
    return intensity_histogram(*echo_like_frames())


def per_label_level(image, labels):
    return {k: np.unique(image[labels == k]) for k in range(5)}


@pytest.mark.parametrize("solver", [sinkhorn_plan, exact_plan])
def test_plans_meet_their_marginals(solver, labels, target):
    x_a, a, _ = source_atoms(labels)
    x_b, b = target
    plan, info = solver(a, x_a, b, x_b)
    assert plan.shape == (a.size, b.size) and plan.dtype == np.float64 and np.all(plan >= 0)
    assert np.abs(plan.sum(1) - a).max() == pytest.approx(info["marginal_error_a"], abs=1e-15)
    assert np.abs(plan.sum(0) - b).max() == pytest.approx(info["marginal_error_b"], abs=1e-15)
    assert max(info["marginal_error_a"], info["marginal_error_b"]) <= SINKHORN_TOL


def test_sinkhorn_barycentric_map_is_close_to_the_exact_one(labels, target):
    x_a, a, _ = source_atoms(labels)
    x_b, b = target
    T_sinkhorn = barycentric_map(sinkhorn_plan(a, x_a, b, x_b)[0], x_b)
    T_exact = barycentric_map(exact_plan(a, x_a, b, x_b)[0], x_b)
    assert np.abs(T_sinkhorn - T_exact).max() < MAP_TOL


def test_sinkhorn_raises_when_it_does_not_converge(labels, target):
    x_a, a, _ = source_atoms(labels)
    with pytest.raises(RuntimeError, match="did not converge"):
        sinkhorn_plan(a, x_a, target[1], target[0], numItermax=1)


def test_float32_input_is_upcast_and_solves_like_float64(labels, target):
    x_a, a, _ = source_atoms(labels)
    x_b, b = target
    plan64, _ = sinkhorn_plan(a, x_a, b, x_b)
    plan32, info = sinkhorn_plan(*(v.astype(np.float32) for v in (a, x_a, b, x_b)))
    assert plan32.dtype == np.float64
    assert max(info["marginal_error_a"], info["marginal_error_b"]) <= SINKHORN_TOL
    assert np.abs(barycentric_map(plan32, x_b) - barycentric_map(plan64, x_b)).max() < 1e-6


def test_exact_plan_is_quantile_matching_on_a_known_answer():
    # Source 30% at 0, 70% at 1 (given unsorted); target 50% at 0.2, 50% at 0.6. Quantile matching sends
    # the 30% at 0 to 0.2, then 20% of the 1s to 0.2 and 50% to 0.6.
    a, x_a = np.array([0.7, 0.3]), np.array([1.0, 0.0])
    b, x_b = np.array([0.5, 0.5]), np.array([0.2, 0.6])
    expected = np.array([[0.2, 0.5], [0.3, 0.0]])
    plan, info = exact_plan(a, x_a, b, x_b)
    np.testing.assert_allclose(plan, expected, atol=1e-15)
    np.testing.assert_allclose(barycentric_map(plan, x_b), [(0.2 * 0.2 + 0.5 * 0.6) / 0.7, 0.2])
    assert info["transport_cost"] == pytest.approx(0.2 * 0.8**2 + 0.5 * 0.4**2 + 0.3 * 0.2**2)
    np.testing.assert_allclose(sinkhorn_plan(a, x_a, b, x_b)[0], expected, atol=1e-6)


@pytest.mark.parametrize("method", ["sinkhorn", "exact"])
def test_matching_preserves_the_order_of_label_intensities(method, labels, target):
    image, report = match_intensities(labels, target, method=method)
    level = {k: v.item() for k, v in per_label_level(image, labels).items()}  # one grey level per label
    assert level[0] == 0.0
    assert level[3] > level[1] > level[4] > level[2] >= 0.0  # myocardium brightest, LV darkest
    assert np.all(np.diff(report["mapped_levels"]) > 0)


@pytest.mark.parametrize("method", ["sinkhorn", "exact"])
@pytest.mark.parametrize("mapping", ["barycentric", "stochastic"])
def test_matching_moves_grey_levels_towards_the_target(method, mapping, labels, target):
    image, report = match_intensities(labels, target, method, mapping, rng=np.random.default_rng(0))
    assert image.dtype == np.float64 and image.min() >= 0 and image.max() <= 1
    assert np.all(image[labels == 0] == 0)
    assert report["W1_matched"] < report["W1_source"]


def test_exact_stochastic_matching_reproduces_the_target_distribution(labels, target):
    _, report = match_intensities(labels, target, "exact", "stochastic", rng=np.random.default_rng(0))
    assert report["W1_matched"] < 0.01 and report["W1_matched"] < 0.05 * report["W1_source"]


def test_stochastic_map_is_seeded_and_draws_from_its_row():
    plan = np.array([[0.25, 0.25, 0.0], [0.0, 0.0, 0.5]])
    x_b = np.array([0.1, 0.4, 0.9])
    index = np.array([[0, 1, -1], [0, 0, 1]])
    y = stochastic_map(index, plan, x_b, np.random.default_rng(3))
    np.testing.assert_array_equal(y, stochastic_map(index, plan, x_b, np.random.default_rng(3)))
    assert y[0, 2] == 0.0 and np.all(y[index == 1] == 0.9)
    assert set(y[index == 0]) <= {0.1, 0.4}
    with pytest.raises(ValueError, match="rng"):
        match_intensities(heart_labels(), (x_b, np.ones(3)), mapping="stochastic")


def test_resize_labels_is_nearest_neighbour_and_exact_for_integer_factors(labels):
    big = np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(resize_labels(big, 64), labels)
    np.testing.assert_array_equal(resize_labels(labels, 128), big)
    np.testing.assert_array_equal(pseudo_image(resize_labels(big, 64)), pseudo_image(labels))
    wide = resize_labels(labels, (32, 96))
    assert wide.shape == (32, 96) and wide.dtype == labels.dtype and set(np.unique(wide)) == set(range(5))


def test_maps_drawn_at_different_resolutions_match_after_resize(labels, target):
    resized = resize_labels(heart_labels(128), 64)
    assert np.mean(resized != labels) < 0.03  # only boundary pixels differ
    levels = [match_intensities(m, target, "exact")[1]["mapped_levels"] for m in (labels, resized)]
    np.testing.assert_allclose(levels[0], levels[1], atol=0.01)


def test_pseudo_image_paints_the_authors_intensities(labels):
    image = pseudo_image(labels)
    assert image.dtype == np.float64 and image.shape == labels.shape
    for k, v in AUTHORS_INTENSITIES.items():
        assert np.all(image[labels == k] == v)


def test_intensity_histogram_counts_sector_pixels_only():
    frames, sector = echo_like_frames(n=2, size=16)
    frames[:, ~sector] = 200  # bright outside the sector: must not count
    frames[:, sector] = 128
    centres, weights = intensity_histogram(frames, sector)
    assert centres.shape == weights.shape == (256,) and weights.sum() == pytest.approx(1.0)
    assert weights[128] == 1.0 and centres[128] == pytest.approx(128.5 / 256)
    stacked = intensity_histogram(frames / 255.0, np.broadcast_to(sector, frames.shape))
    np.testing.assert_allclose(stacked[1], weights)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        intensity_histogram(frames * 2.0, sector)


BAD_MAPS = {
    "integers": np.full((8, 8), 2.0),
    "2-D": np.full((2, 8, 8), 2),
    "unknown labels \\[7\\]": np.where(np.eye(8, dtype=bool), 7, 2),
    "no LV cavity": np.ones((8, 8), dtype=np.int64),
}


@pytest.mark.parametrize("function", [pseudo_image, sdedit_colour_image, lambda m: resize_labels(m, 4),
                                      lambda m: match_intensities(m, (np.array([0.5]), np.array([1.0])))])
@pytest.mark.parametrize("message", list(BAD_MAPS))
def test_bad_label_maps_raise_clear_errors(function, message):
    with pytest.raises(ValueError, match=message):
        function(BAD_MAPS[message])


def test_pseudo_video_shape_range_and_repetition(labels):
    image = pseudo_image(labels)
    video = pseudo_video(image, frames=5)
    assert video.shape == (1, 1, 5, 64, 64) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    expected = torch.as_tensor(2 * image - 1, dtype=torch.float32)
    assert all(torch.equal(video[0, 0, k], expected) for k in range(5))
    batch = pseudo_video(np.stack([image, 1 - image]), frames=3)
    assert batch.shape == (2, 1, 3, 64, 64) and torch.equal(batch[1, 0, 2], -expected)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pseudo_video(2 * image, frames=3)


def test_sdedit_colours_are_tab20_luminances(labels):
    tab20 = {1: "#aec7e8", 2: "#ff7f0e", 3: "#ffbb78", 4: "#2ca02c"}  # matplotlib tab20 colours 1-4
    image = sdedit_colour_image(labels)
    assert np.all(image[labels == 0] == 0)
    for k, hex_colour in tab20.items():
        r, g, b = (int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
        np.testing.assert_allclose(image[labels == k], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-12)


@pytest.mark.parametrize("t_i", [15, 35, 55])
def test_noise_to_step_is_the_state_sdedit_sample_starts_from(t_i, labels):
    init = pseudo_video(np.stack([pseudo_image(labels), sdedit_colour_image(labels)]), frames=3)
    sigmas = karras_sigmas()
    received = []

    def recorder(x, sigma):
        received.append((x.clone(), float(sigma)))
        return x  # stops nothing; only the first call matters

    sdedit_sample(recorder, init, sigmas, t_i, generator=seeded_generators([0, 1]))
    x = noise_to_step(init, sigmas, t_i, seeded_generators([0, 1]))
    assert x.dtype == torch.float64 and x.shape == init.shape
    assert received[0][1] == sigmas[t_i].item() and torch.equal(received[0][0], x)
    n = (x - init.double()) / sigmas[t_i]
    assert abs(n.std().item() - 1) < 0.05 and not torch.equal(n[0], n[1])  # one noise per sample
    with pytest.raises(ValueError, match="start_step"):
        noise_to_step(init, sigmas, 64)
