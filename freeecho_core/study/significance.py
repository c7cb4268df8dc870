"""Paired comparisons over test maps: is method A above method B on a metric, beyond what the choice of maps
explains? The maps are the unit of replication (their samples share the map's anatomy), so a claim is judged
on the per-map differences A_m - B_m with a percentile bootstrap over maps (Efron & Tibshirani 1993, ch. 13),
seeded so that a stored study reads the same every time it is rendered.
"""
from __future__ import annotations

import numpy as np

MIN_TEST_MAPS = 4  # fewer maps give a bootstrap with too few distinct resamples to judge by


def paired_bootstrap(a, b, resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean of the paired differences a - b with its percentile bootstrap interval over the pairs:
    {mean, low, high, n}. The pairs are resampled with replacement, `resamples` times."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if d.ndim != 1 or len(d) == 0 or not np.isfinite(d).all():
        raise ValueError(f"paired_bootstrap needs equally long finite sequences, got differences {d!r}")
    picks = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[picks].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": float(d.mean()), "low": float(low), "high": float(high), "n": len(d)}


def verdict(test: dict) -> str:
    """"holds" when the whole interval is above zero, "fails" when it is below, else "not significant";
    "too few maps" under MIN_TEST_MAPS pairs."""
    if test["n"] < MIN_TEST_MAPS:
        return "too few maps"
    return "holds" if test["low"] > 0 else "fails" if test["high"] < 0 else "not significant"


def verdict_cell(test: dict, digits: int = 3) -> str:
    """A verdict with its evidence: `holds: +0.031 [+0.012, +0.050] (n = 8)` (mean difference and 95 % interval);
    a test that carries its own "verdict" (a chain of tests) shows that one."""
    return (f"{test.get('verdict') or verdict(test)}: {test['mean']:+.{digits}f} [{test['low']:+.{digits}f}, {test['high']:+.{digits}f}]"
            f" (n = {test['n']})")
