"""Figures shared by the notebooks: label overlays, galleries and clip animations."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import animation
from matplotlib.colors import ListedColormap

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
    """Side-by-side animation of (T, H, W) clips (uint8 or [-1, 1]); show with `.to_jshtml()`."""
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
