"""The pieces around the network: the optimal-transport solve of the pseudo video (eq. 3) at several
histogram sizes, exact and Sinkhorn, and the rendering of one phantom recording.
"""
from __future__ import annotations

from freeecho_core.bench.timing import environment, time_call, timing
from freeecho_core.data.case import to_five_labels
from freeecho_core.data.histogram import intensity_histogram
from freeecho_core.data.phantom import PhantomConfig, make_case
from freeecho_core.pseudo import exact_plan, sinkhorn_plan, source_atoms


def ot_problem(bins: int, phantom_frames: int = 16, phantom_height: int = 64):
    """The OT problem of eq. (3) for one phantom case: its ED 5-label map's grey-level atoms (source) and a
    `bins`-bin histogram of its frames' sector pixels (target). Returns (a, x_a, b, x_b)."""
    case = make_case(0, 0, "4CH", PhantomConfig(height=phantom_height, frames=phantom_frames))
    x_a, a, _ = source_atoms(to_five_labels(case.labels[0], case.sector))
    x_b, b = intensity_histogram(case.frames, case.sector, bins)
    return a, x_a, b, x_b


def bench_ot(bins: int, method: str, *, repeats: int = 3, problem=None) -> dict:
    """Seconds per OT plan between the pseudo image's grey levels and a `bins`-bin target histogram:
    `sinkhorn` (log-domain, reg 1e-3, float64; the paper's) or `exact` (1-D quantile matching)."""
    a, x_a, b, x_b = problem if problem is not None else ot_problem(bins)
    solve = {"sinkhorn": sinkhorn_plan, "exact": exact_plan}[method]
    _, info = solve(a, x_a, b, x_b)
    times = time_call(lambda: solve(a, x_a, b, x_b), "cpu", repeats, warmup=0)
    return {"benchmark": "ot", "method": method, "bins": bins, "shape": [len(a), len(b)], "batch": 1,
            "dtype": "float64", **timing(times, 1, "solves/s", 1), "extrapolated": False,
            **{k: info[k] for k in ("marginal_error_a", "marginal_error_b", "transport_cost")},
            "n_iter": info.get("n_iter")} | environment("cpu")


def bench_phantom(frames: int, height: int, *, repeats: int = 2) -> dict:
    """Seconds per rendered phantom case (data.phantom.make_case: labels and speckle video; numpy, one core)."""
    config = PhantomConfig(height=height, frames=frames)
    shape = list(make_case(0, 0, "4CH", config).frames.shape)
    times = time_call(lambda: make_case(0, 1, "4CH", config), "cpu", repeats, warmup=0)
    return {"benchmark": "phantom", "shape": shape, "batch": 1, "dtype": "uint8",
            **timing(times, 1, "cases/s", 1), "extrapolated": False} | environment("cpu")
