"""Writing a sweep's results: bench.csv, bench.json, the terminal table and the short summary."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from attnlab.bench.analysis import VariantSummary

BASE_COLUMNS = [
    "variant", "N", "mode", "causal", "dtype", "device", "target", "status",
    "time_ms_median", "time_ms_iqr", "time_ms_min", "time_ms_max", "repeats",
    "peak_mem_mb", "memory_method", "peak_rss_mb", "flops",
]  # fmt: skip
TRAILING_COLUMNS = ["batch", "heads", "head_dim", "params", "impl", "note"]


def columns(baselines: list[str] | tuple[str, ...]) -> list[str]:
    ratios = [c for b in baselines for c in (f"speedup_vs_{b}", f"mem_ratio_vs_{b}")]
    return BASE_COLUMNS + ratios + TRAILING_COLUMNS


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value


def write_csv(path: Path, rows: list[dict[str, Any]], cols: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c)) for c in cols})


def busy_warning() -> str:
    """A warning when other processes already load the CPU (timings will be noisy), else ''."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load < 0.75 * cores:
        return ""
    return f"warning: load average {load:.1f} on {cores} cores before the sweep; CPU timings will be noisy"


def environment(allocation: str) -> dict[str, Any]:
    """The conditions of a sweep, taken while it runs; `allocation` from host/allocator.py."""
    return {
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_allocation": allocation,
    }


def write_json(
    path: Path,
    rows: list[dict[str, Any]],
    summaries: list[VariantSummary],
    config: dict[str, Any],
    environment: dict[str, Any],
) -> None:
    payload = {
        "config": config,
        "environment": environment,
        "rows": rows,
        "summary": [s.as_dict() for s in summaries],
    }
    path.write_text(json.dumps(payload, indent=2, default=str))


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _setting_title(mode: str, causal: bool) -> str:
    return f"{mode}{', causal' if causal else ''}"


def results_table(rows: list[dict[str, Any]], baselines: tuple[str, ...], title: str) -> Table:
    table = Table(title=title)
    heads = ["variant", "N", "status", "time ms", "IQR ms", "peak MB", "GFLOP"]
    heads += [f"x faster vs {b}" for b in baselines] + [f"mem / {b}" for b in baselines]
    for head in heads:
        table.add_column(head, justify="left" if head in ("variant", "status") else "right")
    for r in rows:
        flops = r["flops"] / 1e9 if r.get("flops") is not None else None
        cells = [r["variant"], str(r["N"]), r["status"]]
        cells += [
            _fmt(r["time_ms_median"]),
            _fmt(r["time_ms_iqr"], ".2g"),
            _fmt(r["peak_mem_mb"]),
            _fmt(flops),
        ]
        cells += [_fmt(r.get(f"speedup_vs_{b}"), ".3g") for b in baselines]
        cells += [_fmt(r.get(f"mem_ratio_vs_{b}"), ".3g") for b in baselines]
        table.add_row(*cells)
    return table


def summary_table(summaries: list[VariantSummary], title: str) -> Table:
    table = Table(title=title)
    for head in [
        "variant",
        "time exponent",
        "memory exponent",
        "fit points",
        "faster from N",
        "smaller from N",
    ]:
        table.add_column(head, justify="left" if head == "variant" else "right")
    for s in summaries:
        table.add_row(
            s.variant, _fmt(s.time_exponent, ".2f"), _fmt(s.memory_exponent, ".2f"), str(s.fit_points),
            crossover_text(s.crossover_time, s), crossover_text(s.crossover_memory, s),
        )  # fmt: skip
    return table


def crossover_text(n: int | None, s: VariantSummary) -> str:
    if s.crossover_note:
        return f"n/a ({s.crossover_note})"
    return f"{n} (vs {s.crossover_baseline})" if n is not None else "none within range"


def print_report(
    console: Console, rows: list[dict[str, Any]], summaries: list[VariantSummary], baselines: tuple[str, ...]
) -> None:
    for mode, causal in dict.fromkeys((r["mode"], r["causal"]) for r in rows):
        title = _setting_title(mode, causal)
        console.print(
            results_table([r for r in rows if (r["mode"], r["causal"]) == (mode, causal)], baselines, title)
        )
        mine = [s for s in summaries if (s.mode, s.causal) == (mode, causal)]
        console.print(
            summary_table(mine, f"{title}: scaling exponents (log-log slope) and crossover lengths")
        )
    problems = dict.fromkeys(
        (r["variant"], _setting_title(r["mode"], r["causal"]), r["status"], r["note"])
        for r in rows
        if r["status"] != "ok" and r.get("note") and not r["note"].startswith("skipped after")
    )
    for variant, title, status, note in problems:
        console.print(f"[yellow]{variant} ({title}): {status} — {note}[/]")
