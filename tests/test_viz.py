"""The notebook figures in `viz` draw what they say: OT plans, grey-level distributions, network inputs."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import LogNorm

from freeecho_core.edm import SIGMA_DATA
from freeecho_core.pseudo import exact_plan
from freeecho_core.viz import (player_html, plot_grey_level_distributions, rows_table, show_network_input, show_plan,
                               still_figure)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_show_plan_marks_the_barycentric_map_on_a_log_scale():
    a, x_a = np.array([0.3, 0.7]), np.array([0.0, 1.0])
    b, x_b = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    plan, _ = exact_plan(a, x_a, b, x_b)  # [[0.3, 0], [0.2, 0.5]]
    fig, ax = plt.subplots()
    image = show_plan(ax, plan, x_a, x_b, "exact")
    assert isinstance(image.norm, LogNorm) and image.get_array().mask[0, 1]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0.25, (0.2 * 0.25 + 0.5 * 0.75) / 0.7])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.00", "1.00"]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() == "exact"


def test_grey_level_distributions_put_images_on_the_target_bins():
    centres = (np.arange(4) + 0.5) / 4
    target = (centres, np.array([0.1, 0.2, 0.3, 0.4]))
    image = np.array([[0.1, 0.6], [0.9, 0.0]])
    sector = np.array([[True, True], [True, False]])
    fig, axes = plt.subplots(1, 2)
    plot_grey_level_distributions(axes, target, {"image": image}, sector)
    hist, cdf = axes[0].patches[1], axes[1].patches[1]
    np.testing.assert_allclose(hist.get_data().values, [1 / 3, 0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(cdf.get_data().values, [1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(axes[1].patches[0].get_data().values[-1], 1.0)
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["target", "image"]


def test_network_input_is_scaled_by_c_in():
    x = np.full((4, 4), 3.0)
    fig, ax = plt.subplots()
    show_network_input(ax, x, 1.5, "t_i = 5: ")
    np.testing.assert_allclose(ax.images[0].get_array(), 3.0 / np.sqrt(1.5**2 + SIGMA_DATA**2))
    assert ax.get_title() == "t_i = 5: $\\sigma$ = 1.5"


def test_animation_html_is_self_contained():
    from freeecho_core.viz import animate_clips, animation_html

    anim = animate_clips([np.zeros((3, 8, 8), np.uint8), np.full((3, 8, 8), 0.5, np.float32)], ["a", "b"])
    html = animation_html(anim)
    assert "maxcdn" in anim.to_jshtml() and "https://" not in html  # the CDN link is gone ...
    assert html.count("data:image/png;base64") == 3 and 'class="animation"' in html  # ... the frames are inside


def test_panels_play_clips_together_and_keep_stills():
    from matplotlib.colors import to_rgb

    from freeecho_core.viz import animate_panels, animation_html, five_label_rgb

    rgb = five_label_rgb(np.array([[0, 1], [2, 4]]))
    np.testing.assert_allclose(rgb[0, 0], to_rgb("black"))
    np.testing.assert_allclose(rgb[1, 1], to_rgb("#d32f2f"))  # left atrium, as show_five_label_map paints it
    clip = np.stack([np.full((4, 4), k, np.uint8) for k in (0, 100, 200)])
    anim = animate_panels([("map", rgb), ("still", np.zeros((4, 4), np.float32)), ("clip", clip),
                           ("longer clip", np.zeros((5, 4, 4), np.uint8))], columns=2)
    html = animation_html(anim)
    assert html.count("data:image/png;base64") == 3  # the shortest clip sets the length; stills do not count


def test_the_free_echo_figure_shows_each_start_above_its_video():
    from freeecho_core.viz import free_echo_panels

    ed_map = np.zeros((8, 8), int)
    ed_map[2:6, 2:6] = 2
    pseudo = np.where(ed_map == 2, 0.0, 0.5)
    videos = {15: np.zeros((3, 8, 8), np.uint8), 55: np.full((3, 8, 8), 255, np.uint8)}
    panels = free_echo_panels(ed_map, pseudo, videos, np.zeros((3, 8, 8), np.uint8))
    titles = [title for title, _ in panels]
    assert titles == ["ED map (5 labels)", "pseudo image (OT)", "start, $t_i$ = 15", "start, $t_i$ = 55", "real clip", "",
                      "generated, $t_i$ = 15", "generated, $t_i$ = 55"]
    late, early = panels[3][1], panels[2][1]
    # From t_i = 55 (sigma 0.027) the start is the pseudo image itself; from t_i = 15 (sigma 19) mostly noise.
    assert np.corrcoef(late.ravel(), pseudo.ravel())[0, 1] > 0.99 > np.corrcoef(early.ravel(), pseudo.ravel())[0, 1]


def test_download_links_carry_their_file():
    import base64
    import re

    from freeecho_core.viz import download_link

    link = download_link("metrics.json", b'{"a": 1}', "application/json")
    assert link.startswith('<a download="metrics.json" href="data:application/json;base64,')
    assert base64.b64decode(re.search(r"base64,([^\"]+)", link).group(1)) == b'{"a": 1}'


def test_a_still_shows_each_clip_at_evenly_spaced_frames_below_the_images_that_do_not_play():
    clip = np.stack([np.full((8, 8), k, np.uint8) * 20 for k in range(9)])  # frame k has grey level 20 k
    panels = [("map", np.zeros((8, 8, 3))), ("real", clip), ("", None), ("generated", 255 - clip)]
    fig = still_figure(panels, frames=3)
    axes = np.array(fig.axes).reshape(3, 3)
    assert axes[0, 0].get_title() == "map" and not axes[0, 1].images  # one image in the first row
    assert [ax.get_title() for ax in axes[1]] == ["frame 0", "frame 4", "frame 8"]
    assert axes[1, 0].get_ylabel() == "real" and axes[2, 0].get_ylabel() == "generated"
    np.testing.assert_allclose([ax.images[0].get_array()[0, 0] for ax in axes[2]], [1.0, 1 - 80 / 255, 1 - 160 / 255])
    per_step = still_figure([(["t = 0", "t = 1", "t = 2"], clip[:3])], frames=4)  # shorter than `frames`
    assert [ax.get_title() for ax in per_step.axes] == ["t = 0", "t = 1", "t = 2"]
    with pytest.raises(ValueError, match="at least one"):
        still_figure([("map", np.zeros((8, 8)))])


def test_a_player_comes_with_its_still_as_an_embedded_image():
    clip = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8))
    page = player_html([("a", clip), ("b", -clip)], columns=2, alt="Frames of two noise clips & their player.")
    still = page.split('<div class="animation">', 1)[0]
    assert 'alt="Frames of two noise clips &amp; their player."' in still and "data:image/png;base64," in still
    assert "player-still" in still and "maxcdn" not in page


def test_tables_may_wrap_only_inside_long_names_and_shapes():
    rows = [{"t_i": 15, "speedup_vs_reference": 1.5, "shape": "1x1x24x128x128", "what": "paper, 3x3 ours"}]
    table = rows_table(rows, ["t_i", "speedup_vs_reference", "shape", "what"])
    assert table.splitlines()[0] == "| tᵢ | speedup_\u200bvs_\u200breference | shape | what |"
    assert table.splitlines()[2] == "| 15 | 1.5 | 1x\u200b1x\u200b24x\u200b128x\u200b128 | paper, 3x3 ours |"
