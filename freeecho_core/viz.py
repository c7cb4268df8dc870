"""Figures shared by the notebooks: label overlays, galleries, clip animations, OT plans and noised inputs."""
from __future__ import annotations

import base64
import html
import io
import re

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation, colormaps
from matplotlib.colors import ListedColormap, LogNorm

from freeecho_core.data.histogram import intensity_histogram
from freeecho_core.edm import karras_sigmas, precond_coefficients
from freeecho_core.pseudo import barycentric_map
from freeecho_core.sampler import noise_to_step, seeded_generators

# Overlay colours: CAMUS labels 1 LV (cyan), 2 myocardium (yellow), 3 LA (red).
CAMUS_COLOURS = ListedColormap(["none", "#00bcd4", "#ffd600", "#d32f2f"])
# The 5-label convention: 0 outside, 1 sector tissue, 2 LV, 3 myocardium, 4 LA.
FIVE_LABEL_COLOURS = ListedColormap(["black", "#607d8b", "#00bcd4", "#ffd600", "#d32f2f"])


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 or [-1, 1] float image -> [0, 1] for display."""
    return image / 255.0 if image.dtype == np.uint8 else (np.asarray(image, float) + 1) / 2


def show_frame(ax, image: np.ndarray, labels: np.ndarray | None = None, title: str = "", alpha: float = 0.35):
    """A grey frame, optionally with CAMUS labels (0-3) overlaid; axes off."""
    ax.imshow(to_grey(image), cmap="gray", vmin=0, vmax=1)
    if labels is not None:
        masked = np.ma.masked_where(labels <= 0, labels)
        ax.imshow(masked, cmap=CAMUS_COLOURS, vmin=0, vmax=3, alpha=alpha, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def show_five_label_map(ax, ed_map: np.ndarray, title: str = "ED map (5 labels)"):
    ax.imshow(ed_map, cmap=FIVE_LABEL_COLOURS, vmin=0, vmax=4, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def animate_clips(videos: list[np.ndarray], titles: list[str], fps: float = 8.0) -> animation.FuncAnimation:
    """Side-by-side animation of (T, H, W) clips (uint8 or [-1, 1]); show with `animation_html`."""
    return animate_panels(list(zip(titles, videos)), columns=len(videos), fps=fps)


def animate_panels(panels: list[tuple[str, np.ndarray]], columns: int, fps: float = 8.0,
                   size: float = 2.6) -> animation.FuncAnimation:
    """Titled panels played together on a grid of `columns`: a (T, H, W) clip (uint8 or [-1, 1]) plays, an
    (H, W) grey image (likewise) or an (H, W, 3) RGB image in [0, 1] stays as it is, None leaves the cell empty.
    A title may be a list with one title per frame. The player runs over the shortest clip."""
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, (size + 0.25) * rows), squeeze=False)
    playing, titled = [], []
    for ax, (title, panel) in zip(axes.flat, panels):
        if panel is None:  # an empty cell of the grid
            continue
        panel = np.asarray(panel)
        if panel.ndim == 3 and panel.shape[-1] == 3:
            ax.imshow(panel, interpolation="nearest")
        else:
            image = ax.imshow(to_grey(panel if panel.ndim == 2 else panel[0]), cmap="gray", vmin=0, vmax=1)
            if panel.ndim == 3:
                playing.append((image, panel))
        ax.set_title(title if isinstance(title, str) else title[0], fontsize=max(9, 2.4 * columns))
        if not isinstance(title, str):
            titled.append((ax.title, title))
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    n = min((len(clip) for _, clip in playing), default=1)

    def update(k):
        for image, clip in playing:
            image.set_data(to_grey(clip[k]))
        for text, titles in titled:
            text.set_text(titles[k])
        return [image for image, _ in playing] + [text for text, _ in titled]

    anim = animation.FuncAnimation(fig, update, frames=n, interval=1000 / fps, blit=True)
    plt.close(fig)
    return anim


def still_figure(panels: list[tuple[str, np.ndarray | None]], frames: int = 4, size: float = 1.7):
    """The still of a player (`animate_panels` input) for print and for readers without JavaScript: a frame
    grid with one row per clip at `frames` evenly spaced frames (0 = ED, the last frame), after a first row with
    the panels that do not play (maps, images). A clip whose title is a list of per-frame titles is labelled
    by those instead of frame numbers. Returns the figure (`player_html` embeds it)."""
    clips = [(t, np.asarray(p)) for t, p in panels if p is not None and np.ndim(p) == 3 and np.shape(p)[-1] != 3]
    statics = [(t if isinstance(t, str) else t[0], np.asarray(p)) for t, p in panels
               if p is not None and not (np.ndim(p) == 3 and np.shape(p)[-1] != 3)]
    if not clips:
        raise ValueError("still_figure needs at least one (T, H, W) clip among the panels")
    length = min(len(clip) for _, clip in clips)
    picks = np.unique(np.linspace(0, length - 1, min(frames, length)).round().astype(int))
    columns = max(len(picks), len(statics))
    rows = len(clips) + bool(statics)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, (size + 0.3) * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for ax, (title, image) in zip(axes[0], statics):
        ax.imshow(image if image.ndim == 3 else to_grey(image), cmap=None if image.ndim == 3 else "gray",
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    for row, (title, clip) in zip(axes[bool(statics):], clips):
        row[0].set_ylabel(title if isinstance(title, str) else "", fontsize=8)
        for ax, k in zip(row, picks):
            ax.imshow(to_grey(clip[k]), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"frame {k}" if isinstance(title, str) else title[k], fontsize=8)
    fig.tight_layout()
    return fig


def player_html(panels: list[tuple[str, np.ndarray | None]], columns: int, alt: str, fps: float = 8.0,
                size: float = 2.6, frames: int = 4) -> str:
    """One HTML block: the player's still (`still_figure` as an embedded PNG with alt text `alt`, for print and
    for readers without JavaScript) above the player itself (`animate_panels`). Displayed as one output, it
    sits in one captioned, numbered figure when its cell has a figure caption."""
    still = still_figure(panels, frames)
    buffer = io.BytesIO()
    still.savefig(buffer, format="png", dpi=100)
    plt.close(still)
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<div class="player-still"><img alt="{html.escape(alt)}" src="data:image/png;base64,{image}"></div>'
            + animation_html(animate_panels(panels, columns, fps, size)))


def network_input(x: np.ndarray, sigma: float) -> np.ndarray:
    """c_in(sigma) x: what the network F receives of a state x at noise level sigma (paper eq. (4))."""
    return precond_coefficients(torch.tensor(float(sigma), dtype=torch.float64))[2].item() * np.asarray(x, float)


def free_echo_panels(ed_map: np.ndarray, pseudo_image: np.ndarray, generated: dict[int, np.ndarray],
                     real: np.ndarray, seed: int = 0) -> list[tuple[str, np.ndarray | None]]:
    """The paper's Fig. 1 for one map, as `animate_panels` input on 2 + len(generated) columns. Top row: the ED
    map, the pseudo image (in [0, 1]) and, per start step t_i, the noised start x = pseudo + sigma(t_i) n as
    the network receives it (`sampler.noise_to_step`, first frame); bottom row: the real clip, an empty cell and
    the video generated from each start (generated: {t_i: (K, S, S) video})."""
    sigmas = karras_sigmas()
    still = 2 * torch.as_tensor(pseudo_image, dtype=torch.float64)[None, None, None] - 1
    starts = [(f"start, $t_i$ = {t}", np.clip(network_input(
        noise_to_step(still, sigmas, t, seeded_generators([seed]))[0, 0, 0].numpy(), sigmas[t].item()) / 2.5, -1, 1))
        for t in generated]  # on show_network_input's grey scale, [-2.5, 2.5]
    return ([("ED map (5 labels)", five_label_rgb(ed_map)), ("pseudo image (OT)", 2 * np.asarray(pseudo_image) - 1),
             *starts, ("real clip", real), ("", None), *((f"generated, $t_i$ = {t}", v) for t, v in generated.items())])


def five_label_rgb(ed_map: np.ndarray) -> np.ndarray:
    """(H, W) 5-label map -> (H, W, 3) RGB in [0, 1] with the colours of `show_five_label_map`."""
    return FIVE_LABEL_COLOURS(np.asarray(ed_map, int))[..., :3]


def show_plan(ax, plan: np.ndarray, x_a: np.ndarray, x_b: np.ndarray, title: str = "", vmin: float = 1e-10,
              vmax: float = 1.0):
    """An OT plan P (n source grey levels x_a by m target grey levels x_b) on a log colour scale [vmin, vmax];
    zeros and entries below vmin are white. Each row's barycentric image E[y | x] is marked. Returns the
    image (for a colour bar)."""
    step = x_b[1] - x_b[0]
    cmap = colormaps["magma_r"].with_extremes(bad="white", under="white")
    image = ax.imshow(np.ma.masked_less_equal(plan, 0), aspect="auto", cmap=cmap, interpolation="nearest",
                      norm=LogNorm(vmin, vmax), extent=(x_b[0] - step / 2, x_b[-1] + step / 2, len(x_a) - 0.5, -0.5))
    ax.plot(barycentric_map(plan, x_b), np.arange(len(x_a)), "|", color="#00bcd4", ms=14, mew=2,
            label="barycentric map E[y | x]")
    ax.set_yticks(np.arange(len(x_a)), [f"{x:.2f}" for x in x_a])
    ax.set(xlabel="target grey level y", ylabel="source grey level x", title=title)
    return image


def plot_grey_level_distributions(axes, target, images: dict[str, np.ndarray], sector: np.ndarray):
    """Left: the fraction of sector pixels per bin (log scale) of the target histogram and of each named
    (H, W) image in [0, 1] on the target's bins; right: their cumulative distributions (W1 is the area
    between two of them; the legend is on the right). target: (centres, weights) from
    `data.histogram.intensity_histogram`."""
    centres, weights = target
    edges = np.append(centres - (centres[1] - centres[0]) / 2, 1.0)
    axes[0].stairs(weights, edges, fill=True, color="0.75", label="target")
    axes[1].stairs(np.cumsum(weights), edges, color="0.6", lw=4, label="target")
    for name, image in images.items():
        w = intensity_histogram(image[None], sector, bins=len(centres))[1]
        axes[0].stairs(w, edges, lw=1.2, label=name)
        axes[1].stairs(np.cumsum(w), edges, lw=1.2, label=name)
    axes[0].set(yscale="log", ylim=(0.3 * weights[weights > 0].min(), 1.0), xlabel="grey level (0 black .. 1 white)",
                ylabel="fraction of sector pixels per bin", title="histograms (colours as on the right)")
    axes[1].set(ylim=(0, 1.02), xlabel="grey level (0 black .. 1 white)", ylabel="fraction of sector pixels below",
                title="cumulative distributions")
    axes[1].legend(loc="lower right", fontsize=8)


def show_network_input(ax, x: np.ndarray, sigma: float, title: str = "", limit: float = 2.5):
    """A noised frame x at noise level sigma as the network F receives it, c_in(sigma) x (paper eq. (4)),
    on the fixed grey scale [-limit, limit]; the title gives sigma."""
    ax.imshow(network_input(x, sigma), cmap="gray", vmin=-limit, vmax=limit)
    ax.set_title(f"{title}$\\sigma$ = {sigma:.4g}", fontsize=9)
    ax.axis("off")


def sigma_axis(ax, steps, sigmas) -> None:
    """A top axis labelling the start steps t_i of the bottom axis with their noise levels sigma[t_i]."""
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    top.set_xticks(list(steps))
    top.set_xticklabels([f"{float(sigmas[t]):.2g}" for t in steps], fontsize=8)
    top.set_xlabel("noise level $\\sigma$ at $t_i$")


# matplotlib's player links Font Awesome 4 from a CDN for its button icons; the book's theme (and JupyterLab)
# serve Font Awesome themselves, so the link is dropped to keep pages free of internet requests.
FONT_AWESOME_CDN = re.compile(r'<link rel="stylesheet"\s+href="https://maxcdn\.bootstrapcdn\.com/font-awesome/[^"]*">\s*')


SOLVER_COLOURS = {"heun": "#1976d2", "euler": "#e65100", "dpmpp2m": "#2e7d32"}


def plot_quality_against_nfe(axes, study: dict, methods: list[str], metrics=("Dice LV", "SSIM", "FD-seg")):
    """One row of `axes` per method and one column per metric: the score against the network evaluations per
    video, one line per solver (error bars: one standard error), and the reference's mean ± one standard
    error as a grey band (`study.nfe.REFERENCE`)."""
    reference = tuple(study["reference"].values())
    for row_axes, method in zip(np.atleast_2d(axes), methods):
        rows = [r for r in study["rows"] if r["method"] == method]
        for ax, metric in zip(row_axes, metrics):
            ref = next(r for r in rows if (r["solver"], r["nfe"]) == reference)[metric]
            if isinstance(ref, dict):
                ax.axhspan(ref["mean"] - ref["se"], ref["mean"] + ref["se"], color="0.85", zorder=0)
            for solver in dict.fromkeys(r["solver"] for r in rows):
                mine = sorted((r for r in rows if r["solver"] == solver), key=lambda r: r["nfe"])
                values = [r[metric] for r in mine]
                means = [v["mean"] if isinstance(v, dict) else v for v in values]
                errors = [v["se"] if isinstance(v, dict) else 0 for v in values]
                ax.errorbar([r["nfe"] for r in mine], means, yerr=errors, marker="o", ms=4, capsize=2,
                            color=SOLVER_COLOURS.get(solver), label=solver)
            ax.set_xscale("log")
            nfes = sorted({r["nfe"] for r in rows})
            ax.set_xticks(nfes, [str(n) for n in nfes])
            ax.minorticks_off()
            ax.set(xlabel="network evaluations per video", title=f"{method}: {metric}")
    np.atleast_2d(axes)[0, 0].legend(title="solver", fontsize=8)


def animation_html(anim: animation.FuncAnimation) -> str:
    """The self-contained HTML player of an animation (frames embedded as base64), with no CDN link."""
    return FONT_AWESOME_CDN.sub("", anim.to_jshtml())


# Where a long token of a table may wrap: after an underscore, or at the x of a shape such as 16x1x24x128x128.
WRAP_POINTS = re.compile(r"(_)(?=\w)|(?<=\d)(x)(?=\d)")


def wrappable(text: str) -> str:
    """`text` with a zero-width space at each `WRAP_POINTS` of a token longer than 8 characters, where a browser
    may break it instead of widening its table column."""
    return " ".join(WRAP_POINTS.sub(lambda m: (m.group(1) or m.group(2)) + "\u200b", word) if len(word) > 8 else word
                    for word in text.split(" "))


def column_title(column: str) -> str:
    """A row key as a table header: the start step's key "t_i" (kept in the stored JSON) reads tᵢ."""
    return "tᵢ" if column == "t_i" else column


def rows_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of `columns` of `rows`: floats to 4 significant digits, None as a dash; long names and
    shapes may wrap (`wrappable`)."""
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return f"{v:.4g}" if isinstance(v, float) else wrappable(str(v))

    lines = ["| " + " | ".join(wrappable(column_title(c)) for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def html_table(rows: list[dict], columns: list[str]) -> str:
    """An HTML table of `columns` of `rows` (rendered as a table by the notebook and by the book alike)."""
    head = "".join(f"<th>{html.escape(column_title(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '-')))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def download_link(filename: str, data: bytes, mime: str = "application/octet-stream") -> str:
    """An HTML link that downloads `data` as `filename` with no server behind it (a data: URI inside the page)."""
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<a download="{html.escape(filename)}" href="data:{mime};base64,{encoded}">'
            f"{html.escape(filename)}</a>")
