"""Figures shared by the notebooks: label overlays, galleries, clip animations, OT plans and noised inputs."""
from __future__ import annotations

import html

import re

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation, colormaps
from matplotlib.colors import ListedColormap, LogNorm

from freeecho_core.edm import precond_coefficients
from freeecho_core.data.histogram import intensity_histogram
from freeecho_core.pseudo import barycentric_map

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
    fig, axes = plt.subplots(1, len(videos), figsize=(2.6 * len(videos), 2.8), squeeze=False)
    images = []
    for ax, video, title in zip(axes[0], videos, titles):
        images.append(ax.imshow(to_grey(video[0]), cmap="gray", vmin=0, vmax=1))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    n = min(len(v) for v in videos)

    def update(k):
        for image, video in zip(images, videos):
            image.set_data(to_grey(video[k]))
        return images

    anim = animation.FuncAnimation(fig, update, frames=n, interval=1000 / fps, blit=True)
    plt.close(fig)
    return anim


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
    c_in = precond_coefficients(torch.tensor(float(sigma), dtype=torch.float64))[2].item()
    ax.imshow(c_in * np.asarray(x), cmap="gray", vmin=-limit, vmax=limit)
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


def animation_html(anim: animation.FuncAnimation) -> str:
    """The self-contained HTML player of an animation (frames embedded as base64), with no CDN link."""
    return FONT_AWESOME_CDN.sub("", anim.to_jshtml())


def rows_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of `columns` of `rows`: floats to 4 significant digits, None as a dash."""
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def html_table(rows: list[dict], columns: list[str]) -> str:
    """An HTML table of `columns` of `rows` (rendered as a table by the notebook and by the book alike)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '-')))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
