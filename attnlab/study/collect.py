"""The study's cells read back through attnlab.results, into study.csv and study.md.

study.csv: one row per cell (run). study.md: an LRA-style table — one row per variant, one column
per length holding the primary metric's mean ± standard deviation over the seeds that finished —
then the cost at the longest length, and the cost at every length; failed cells are marked and listed.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnlab.report import _fmt, _number
from attnlab.results import read_failure, read_results
from attnlab.study.plan import Cell, Study

# results["cost"] keys in the table and csv (decode_state_bytes is absent on older runs: left empty)
COST_KEYS = ("train_tokens_per_s", "peak_memory_mb", "attention_flops_per_token", "decode_state_bytes")
COST_LABELS = {
    "train_tokens_per_s": "train tokens/s",
    "peak_memory_mb": "peak memory MB",
    "attention_flops_per_token": "attention FLOPs/token",
    "decode_state_bytes": "decode state bytes",
}
COST_FORMAT = {
    "train_tokens_per_s": "int",
    "peak_memory_mb": "g",
    "attention_flops_per_token": "sci",
    "decode_state_bytes": "int",
}


@dataclass(frozen=True)
class Metric:
    name: str  # e.g. test/acc
    higher_is_better: bool


@dataclass
class CellResult:
    cell: Cell
    status: str  # ok | failed | missing (never ran, e.g. the sweep was interrupted)
    run_dir: Path
    quality: float | None = None
    cost: dict[str, float | None] = field(default_factory=dict)
    message: str = ""
    metric: Metric | None = None  # the primary metric the run recorded


def collect(study: Study) -> list[CellResult]:
    out = []
    for cell in study.cells:
        run_dir = study.run_dir(cell)
        results = read_results(run_dir)
        if results is not None and results.get("status") == "ok":
            metrics, cost = results.get("metrics") or {}, results.get("cost") or {}
            out.append(
                CellResult(
                    cell,
                    "ok",
                    run_dir,
                    quality=_number(metrics.get(results.get("primary_metric"))),
                    cost={k: _number(cost.get(k)) for k in COST_KEYS},
                    metric=Metric(str(results.get("primary_metric")), results.get("primary_mode") != "min"),
                )
            )
        elif (record := read_failure(run_dir)) is not None:
            message = str(record.get("message", "")).splitlines()[0][:300] if record.get("message") else ""
            out.append(CellResult(cell, "failed", run_dir, message=message))
        else:
            out.append(CellResult(cell, "missing", run_dir, message="no results.json or failed.json"))
    return out


def metric_of(cells: Sequence[CellResult], default: Metric) -> Metric:
    """The primary metric as the finished runs recorded it (else the task config's)."""
    return next((c.metric for c in cells if c.metric is not None), default)


# ---- study.csv -----------------------------------------------------------------------------------
def csv_columns(metric: Metric) -> list[str]:
    return ["variant", "length", "seed", "status", metric.name, *COST_KEYS, "run_dir", "error"]


def write_csv(path: Path, cells: Sequence[CellResult], metric: Metric) -> Path:
    columns = csv_columns(metric)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in csv_rows(cells):
            writer.writerow(row)
    return path


def csv_rows(cells: Sequence[CellResult]) -> list[list[Any]]:
    def blank(value: float | None) -> Any:
        return "" if value is None else value

    return [
        [
            c.cell.variant,
            c.cell.length,
            c.cell.seed,
            c.status,
            blank(c.quality),
            *(blank(c.cost.get(k)) for k in COST_KEYS),
            str(c.run_dir),
            c.message,
        ]
        for c in cells
    ]


# ---- aggregation over seeds ----------------------------------------------------------------------
@dataclass
class Point:
    """One (variant, length): the seeds' mean and standard deviation, and how many seeds failed or did not run."""

    quality: list[float]
    cost: dict[str, list[float]]
    failed: int
    missing: int
    seeds: int

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.quality) if self.quality else None

    @property
    def spread(self) -> float | None:
        return statistics.stdev(self.quality) if len(self.quality) > 1 else None

    def cost_mean(self, key: str) -> float | None:
        values = self.cost.get(key) or []
        return statistics.fmean(values) if values else None


def points(study: Study, cells: Sequence[CellResult]) -> dict[tuple[str, int], Point]:
    grid = {
        (v, n): Point(quality=[], cost={k: [] for k in COST_KEYS}, failed=0, missing=0, seeds=0)
        for v in study.variants
        for n in study.lengths
    }
    for c in cells:
        point = grid[(c.cell.variant, c.cell.length)]
        point.seeds += 1
        if c.status != "ok":
            point.failed += c.status == "failed"
            point.missing += c.status == "missing"
            continue
        if c.quality is not None:
            point.quality.append(c.quality)
        for key, value in c.cost.items():
            if value is not None:
                point.cost[key].append(value)
    return grid


# ---- study.md ------------------------------------------------------------------------------------
def quality_text(point: Point) -> str:
    if not point.quality:
        return "failed" if point.failed else ("not run" if point.missing else "-")
    text = f"{point.mean:.3f}" if point.spread is None else f"{point.mean:.3f} ± {point.spread:.3f}"
    if point.failed:
        text += f" ({point.failed}/{point.seeds} failed)"
    if point.missing:
        text += f" ({point.missing}/{point.seeds} not run)"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def tables(study: Study, cells: Sequence[CellResult], metric: Metric) -> list[str]:
    """The LRA-style table (metric per length, cost at the longest length), as markdown lines."""
    grid = points(study, cells)
    longest = max(study.lengths)
    header = ["variant", *(f"L={n}" for n in study.lengths)]
    header += [f"{COST_LABELS[k]} @{longest}" for k in COST_KEYS]
    rows = []
    for variant in study.variants:
        row = [variant, *(quality_text(grid[(variant, n)]) for n in study.lengths)]
        row += [_fmt(grid[(variant, longest)].cost_mean(k), COST_FORMAT[k]) for k in COST_KEYS]
        rows.append(row)
    return _table(header, rows)


def tables_text(study: Study, cells: Sequence[CellResult], metric: Metric) -> str:
    """The LRA-style table for the console."""
    return f"{study.task}: {metric.name} by variant and length\n" + "\n".join(tables(study, cells, metric))


def cost_table(study: Study, cells: Sequence[CellResult]) -> list[str]:
    grid = points(study, cells)
    header = ["variant", "length", *(COST_LABELS[k] for k in COST_KEYS)]
    rows = [
        [v, str(n), *(_fmt(grid[(v, n)].cost_mean(k), COST_FORMAT[k]) for k in COST_KEYS)]
        for v in study.variants
        for n in study.lengths
    ]
    return _table(header, rows)


def failures(cells: Sequence[CellResult]) -> list[CellResult]:
    return [c for c in cells if c.status != "ok"]


def markdown(study: Study, cells: Sequence[CellResult], metric: Metric, plot: Path | None) -> str:
    direction = "higher" if metric.higher_is_better else "lower"
    ok = sum(c.status == "ok" for c in cells)
    seeds = ", ".join(str(s) for s in study.seeds)
    lines = [
        f"# attnlab study: {study.task}, {metric.name} against sequence length",
        "",
        f"{ok} of {len(cells)} runs finished; seeds {seeds}. Each cell: mean ± standard deviation of "
        f"{metric.name} ({direction} is better) over the seeds; cost columns are means over the seeds.",
        f"Overrides of every run: `{' '.join(study.overrides) or '(none)'}`",
        "",
        *tables(study, cells, metric),
        "",
        "## Cost at every length",
        "",
        *cost_table(study, cells),
        "",
    ]
    if plot is not None:
        lines += [f"![{metric.name} and cost against length]({plot.name})", ""]
    failed = failures(cells)
    if failed:
        lines += ["## Failed cells", "", *_table(["cell", "status", "reason", "run dir"], [
            [c.cell.name, c.status, c.message.replace("|", "\\|"), f"`{c.run_dir}`"] for c in failed
        ]), ""]  # fmt: skip
    return "\n".join(lines)
