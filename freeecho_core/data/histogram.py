"""The target grey-level distribution mu of paper eq. (3): a histogram of the grey levels inside the scan sector
of real frames. Its home is the data package because datasets compute it (`dataset.EchoClips.intensity_histogram`,
cached per split) and the pseudo-video step consumes it (`pseudo.match_intensities`).
"""
from __future__ import annotations

import numpy as np


def intensity_histogram(frames, sectors, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The target distribution mu of eq. (3): grey levels inside the scan sector of many real frames.

    frames: (N, H, W) uint8 (read as k / 255) or float in [0, 1]. sectors: (N, H, W) or (H, W) bool.
    Returns (centres, weights): the `bins` bin centres on [0, 1] and the pixel fractions (sum 1), float64.
    A pure function of its inputs; caching it per dataset is the caller's business.
    """
    frames, sectors = np.asarray(frames), np.asarray(sectors, dtype=bool)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (N, H, W), got shape {frames.shape}")
    if frames.dtype == np.uint8:
        frames = frames / 255.0
    elif not np.issubdtype(frames.dtype, np.floating) or frames.min() < 0 or frames.max() > 1:
        raise ValueError(f"frames must be uint8 or float in [0, 1], got {frames.dtype} in "
                         f"[{frames.min()}, {frames.max()}]")
    try:
        sectors = np.broadcast_to(sectors, frames.shape)
    except ValueError:
        msg = f"sectors {sectors.shape} must be (N, H, W) or (H, W) for frames {frames.shape}"
        raise ValueError(msg) from None
    if not sectors.any():
        raise ValueError("the sector masks select no pixel")
    counts, edges = np.histogram(frames[sectors], bins=bins, range=(0.0, 1.0))
    return (edges[:-1] + edges[1:]) / 2, counts / counts.sum()
