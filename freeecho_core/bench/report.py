"""Benchmark records: collected while a run goes (`SuiteRun`, rewritten to JSON after each), one summary
line per record, and read back: the rows of the book's benchmark page and the H100 targets at the paper size
beside what was measured.
"""
from __future__ import annotations

import json
from pathlib import Path


def summary_line(r: dict) -> str:
    """One printed line per record."""
    if r["benchmark"] == "suite":
        return f"suite {r['suite']}: {r['device']}, torch {r['torch']}, commit {r['code_version']['commit'][:10]}"
    if "error" in r:
        return f"{r['benchmark']} {r.get('shape')}: {r['error']}"
    if r["benchmark"] == "activation_memory":
        return (f"activation memory (estimate) {r['shape']}: {r['without_checkpointing_gb']:.1f} GB, "
                f"{r['with_checkpointing_gb']:.1f} GB with checkpointing")
    if r["benchmark"] == "profile":
        top = ", ".join(f"{o['name']} {o['share']:.0%}" for o in r["top_ops"][:4])
        return f"profile {r['what']} {r['shape']}: {r['total_seconds']:.3f} s; {top}"
    extra = " (extrapolated)" if r.get("extrapolated") else ""
    return (f"{r['benchmark']} [{describe(r)}] {r['shape']} {r['dtype']}: {r['seconds_median']:.4g} s median, "
            f"{r['throughput']:.4g} {r['throughput_unit']}{extra}")


def describe(r: dict) -> str:
    """What a record measured, in words."""
    parts = [r.get("preset"), r.get("mode"), r.get("setting"), r.get("op"), r.get("variant"), r.get("method"),
             r.get("what")]
    if r.get("bins"):
        parts.append(f"{r['bins']} bins")
    if r.get("nfe"):
        parts.append(f"{r['nfe']} NFE")
    if r.get("channels_last"):
        parts.append("channels-last")
    if r.get("compiled"):
        parts.append("compiled")
    if r.get("checkpointing"):
        parts.append("checkpointing")
    if r.get("benchmark") == "training" and r.get("threads"):
        parts.append(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}")
    return ", ".join(p for p in parts if p)


def stored_suites(folder) -> dict[str, list[dict]]:
    """The stored benchmark runs of a folder (results/bench): {file stem: records} of each JSON file that holds a
    list of records; other JSON there (the quality study, nfe-quality.json) is not a timing run."""
    suites = {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}
    return {name: records for name, records in suites.items() if isinstance(records, list)}


def results_table(paths) -> list[dict]:
    """The rows of the benchmark page from stored suite JSON files: one row per timed record, with the device,
    dtype, batch, shape, seconds, throughput, whether it is extrapolated, the speedup over the reference mode
    and the ratio to the bandwidth floor where they apply, and the commit."""
    rows = []
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            if r["benchmark"] in ("suite", "profile", "activation_memory") or "error" in r:
                continue
            rows.append({
                "file": Path(path).name, "benchmark": r["benchmark"], "mode": r.get("mode"), "what": describe(r),
                "device": r["device"],
                "dtype": r["dtype"], "batch": r["batch"], "shape": "x".join(map(str, r["shape"])),
                "seconds": r["seconds_median"], "per_video_s": r.get("seconds_per_video"),
                "throughput": f"{r['throughput']:.3g} {r['throughput_unit']}",
                "extrapolated": bool(r.get("extrapolated")),
                "speedup_vs_reference": r.get("speedup_vs_reference"), "ratio_to_floor": r.get("ratio_to_floor"),
                "speedup": r.get("speedup_vs_float32", r.get("speedup")), "max_abs_diff": r.get("max_abs_diff"),
                "commit": r["code_version"]["commit"][:10] + ("+" if r["code_version"].get("dirty") else ""),
            })
    return rows


# The targets for one H100 at the paper size (24 x 128 x 128, t_i = 15): (what, "at most"/"at least", value).
H100_TARGETS = (
    ("sampling, ours, batch 8: seconds per video", "at most", 0.6),
    ("sampling, batch 8: speedup over the reference mode", "at least", 5.0),
    ("training, batch 16: optimizer steps per second", "at least", 2.0),
    ("training, batch 16: peak memory (GB)", "at most", 70.0),
)


def measured_at_paper_size(r: dict, benchmark: str, batch: int) -> bool:
    """A measured (not extrapolated, not failed) record of the paper net at 24 x 128 x 128 and this batch."""
    return (r["benchmark"] == benchmark and r.get("preset") == "paper" and r["batch"] == batch
            and r["shape"][2:] == [24, 128, 128] and not r.get("extrapolated") and "error" not in r)


def target_rows(records: list[dict]) -> list[dict]:
    """The H100 targets against one stored suite: per target the best measured value (None where the
    suite measured nothing that qualifies, e.g. a CPU suite that extrapolates), and whether it is met."""
    ours = [r for r in records if measured_at_paper_size(r, "sampling", 8) and r["mode"] == "ours"
            and r["start_step"] == 15]
    train = [r for r in records if measured_at_paper_size(r, "training", 16)]
    fastest = max(train, key=lambda r: r["throughput"], default=None)
    reached = [
        min((r["seconds_per_video"] for r in ours), default=None),
        max((r["speedup_vs_reference"] for r in ours if r.get("speedup_vs_reference")), default=None),
        fastest["throughput"] if fastest else None,
        fastest["peak_memory_gb"] if fastest else None,
    ]
    rows = []
    for (what, bound, target), value in zip(H100_TARGETS, reached):
        met = None if value is None else (value <= target if bound == "at most" else value >= target)
        rows.append({"target": what, "bound": f"{bound} {target:g}", "reached": value, "met": met})
    return rows


class SuiteRun:
    """Collects a suite's records (`sizes`: its `suites.SuiteSizes`, None outside a suite), printing one line per
    record and rewriting `out` after each (a run that is cut short keeps what it measured)."""

    def __init__(self, name: str, sizes, out: Path | None, log):
        self.name, self.sizes, self.out, self.log, self.records = name, sizes, out, log, []

    def add(self, record: dict) -> dict:
        record = {"suite": self.name} | record
        self.records.append(record)
        self.log(summary_line(record))
        self.save()
        return record

    def save(self) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.records, indent=2) + "\n")
