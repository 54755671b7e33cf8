"""The study's runs read back through attnlab.run.results, into study.csv and study.md.

study.csv: one row per run (every tuned value, the `selected` column marks the run each cell
reports). study.md: an LRA-style table per grid point — one row per variant, one column per length
holding the primary metric's mean ± standard deviation over the seeds (of each seed's selected run),
then parameters, decoding state and cost at the longest length; the test lengths of `eval_lengths`;
the mean over the `mean_over` axis; the cost at every length; runs cut short († ) and failed runs.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnlab.report import _fmt, _number
from attnlab.run.results import best_key, is_partial, read_failure, read_results
from attnlab.study import axes as ax
from attnlab.study.plan import Cell, Study
from attnlab.study.select import Monitor, select

# results["cost"] keys in the table and csv (decode_state_bytes is absent on older runs: left empty)
COST_KEYS = ("train_tokens_per_s", "peak_memory_mb", "attention_flops_per_token", "decode_state_bytes")
COST_LABELS = {
    "train_tokens_per_s": "train tokens/s",
    "peak_memory_mb": "peak memory MB",
    "attention_flops_per_token": "attention FLOPs/token",
    "decode_state_bytes": "decode state bytes",
    "parameters": "parameters",
}
COST_FORMAT = {
    "train_tokens_per_s": "int",
    "peak_memory_mb": "g",
    "attention_flops_per_token": "sci",
    "decode_state_bytes": "int",
    "parameters": "int",
}
TABLE_COST = (*COST_KEYS, "parameters")
DAGGER = "†"
LR_KEY = "task.module.lr"  # the learning rate a study's basis names (tuned or as set)
PARTIAL_NOTE = (
    f"{DAGGER} a run cut short (results.json budget.stopped_by: max_time, interrupted or non_finite): "
    "left out of means, selections and orderings unless the study says allow_partial=true; a cell with "
    "only such runs shows their value in parentheses."
)


@dataclass(frozen=True)
class Metric:
    name: str  # e.g. test/acc
    higher_is_better: bool


@dataclass
class CellResult:
    """One run of the study (one cell, one combination of tuned values)."""

    cell: Cell
    status: str  # ok | failed | missing (never ran, e.g. the sweep was interrupted)
    run_dir: Path
    quality: float | None = None  # the primary (test) metric
    val: float | None = None  # the validation metric the selection reads (the task's monitor)
    cost: dict[str, float | None] = field(default_factory=dict)  # COST_KEYS and parameters
    evals: dict[int, float | None] = field(default_factory=dict)  # test length -> primary metric there
    partial: bool = False
    stopped_by: str = ""
    steps: tuple[int | None, int | None] = (None, None)  # the budget's (steps_done, steps_planned)
    batch_size: int | None = None  # task.data.batch_size of the run's config
    lr: float | None = None  # task.module.lr of the run's config (as set, or the tuned value it ran with)
    selected: bool = False
    message: str = ""
    metric: Metric | None = None  # the primary metric the run recorded


def eval_key(metric: str, length: int) -> str:
    """The key the task writes for the primary metric at a test length: test/acc@4096."""
    return f"{metric}@{length}"


def state_key(length: int) -> str:
    """The results["cost"] key of the decoding state measured at a test length: decode_state_bytes@4096."""
    return eval_key("decode_state_bytes", length)


def collect(study: Study, monitor: Monitor | None = None) -> list[CellResult]:
    """Every run of the study, read back; with `monitor`, each selection group's run is marked."""
    out = []
    for cell in study.cells:
        run_dir = study.run_dir(cell)
        results = read_results(run_dir)
        if results is not None and results.get("status") == "ok":
            out.append(read_run(cell, run_dir, results, study, monitor))
        elif (record := read_failure(run_dir)) is not None:
            message = str(record.get("message", "")).splitlines()[0][:300] if record.get("message") else ""
            out.append(CellResult(cell, "failed", run_dir, message=message))
        else:
            out.append(CellResult(cell, "missing", run_dir, message="no results.json or failed.json"))
    if monitor is not None:
        select(out, monitor, allow_partial=study.allow_partial, tuned=bool(study.tune))
    return out


def read_run(cell: Cell, run_dir: Path, results: dict, study: Study, monitor: Monitor | None) -> CellResult:
    metrics, cost = results.get("metrics") or {}, results.get("cost") or {}
    primary = str(results.get("primary_metric"))
    budget = results.get("budget") if isinstance(results.get("budget"), dict) else {}
    task = (results.get("config") or {}).get("task") or {}  # the run's resolved task config
    return CellResult(
        cell,
        "ok",
        run_dir,
        quality=_number(metrics.get(primary)),
        val=_number(metrics.get(best_key(monitor.name), metrics.get(monitor.name)))
        if monitor is not None
        else None,
        cost={k: _number(cost.get(k)) for k in COST_KEYS}
        | {"parameters": _number(results.get("parameters"))}
        | {state_key(n): _number(cost.get(state_key(n))) for n in study.eval_lengths},
        evals={n: _number(metrics.get(eval_key(primary, n))) for n in study.eval_lengths},
        partial=is_partial(results),
        stopped_by=str(budget.get("stopped_by") or ""),
        steps=(budget.get("steps_done"), budget.get("steps_planned")),
        batch_size=task.get("data", {}).get("batch_size"),
        lr=_number(task.get("module", {}).get("lr")),
        metric=Metric(primary, results.get("primary_mode") != "min"),
    )


def metric_of(cells: Sequence[CellResult], default: Metric) -> Metric:
    """The primary metric as the finished runs recorded it (else the task config's)."""
    return next((c.metric for c in cells if c.metric is not None), default)


# ---- study.csv -----------------------------------------------------------------------------------
def csv_columns(study: Study, metric: Metric, monitor: Monitor) -> list[str]:
    grid, tune = [k for k, _ in study.grid], [k for k, _ in study.tune]
    evals = [eval_key(metric.name, n) for n in study.eval_lengths]
    return [
        "variant",
        "length",
        *grid,
        "seed",
        *tune,
        "status",
        "partial",
        "stopped_by",
        "selected",
        *([monitor.name] if monitor.name != metric.name else []),
        metric.name,
        *evals,
        *COST_KEYS,
        *(state_key(n) for n in study.eval_lengths),
        "parameters",
        "run_dir",
        "error",
    ]


def write_csv(
    path: Path, study: Study, cells: Sequence[CellResult], metric: Metric, monitor: Monitor
) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_columns(study, metric, monitor))
        for row in csv_rows(study, cells, metric, monitor):
            writer.writerow(row)
    return path


def csv_rows(study: Study, cells: Sequence[CellResult], metric: Metric, monitor: Monitor) -> list[list[Any]]:
    def blank(value: Any) -> Any:
        return "" if value is None else value

    def axis(value: Any) -> Any:
        return value if isinstance(value, int | float | str) else ax.value_text(value)

    return [
        [
            c.cell.variant,
            c.cell.length,
            *(axis(v) for _, v in c.cell.grid),
            c.cell.seed,
            *(axis(v) for _, v in c.cell.tune),
            c.status,
            c.partial,
            c.stopped_by,
            c.selected,
            *([blank(c.val)] if monitor.name != metric.name else []),
            blank(c.quality),
            *(blank(c.evals.get(n)) for n in study.eval_lengths),
            *(blank(c.cost.get(k)) for k in COST_KEYS),
            *(blank(c.cost.get(state_key(n))) for n in study.eval_lengths),
            blank(c.cost.get("parameters")),
            str(c.run_dir),
            c.message,
        ]
        for c in cells
    ]


# ---- aggregation over seeds ----------------------------------------------------------------------
@dataclass
class Point:
    """One (variant, length, grid point): each seed's selected run; its mean and standard deviation,
    how many seeds failed or did not run, and the seeds with only runs cut short (shown, not counted)."""

    quality: list[float] = field(default_factory=list)
    cost: dict[str, list[float]] = field(default_factory=dict)
    evals: dict[int, list[float]] = field(default_factory=dict)
    chosen: list[ax.Point] = field(default_factory=list)  # the tuned values of the selected runs
    partial: list[float] = field(default_factory=list)  # seeds with no eligible run: the partial values
    partial_counted: int = 0  # selected runs that were cut short (allow_partial=true)
    failed: int = 0
    missing: int = 0
    seeds: int = 0

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.quality) if self.quality else None

    @property
    def spread(self) -> float | None:
        return statistics.stdev(self.quality) if len(self.quality) > 1 else None

    def cost_mean(self, key: str) -> float | None:
        values = self.cost.get(key) or []
        return statistics.fmean(values) if values else None

    def eval_mean(self, length: int) -> float | None:
        values = self.evals.get(length) or []
        return statistics.fmean(values) if values else None

    def eval_spread(self, length: int) -> float | None:
        values = self.evals.get(length) or []
        return statistics.stdev(values) if len(values) > 1 else None


PointKey = tuple[str, int, str]  # (variant, length, grid point as text)


def points(study: Study, cells: Sequence[CellResult]) -> dict[PointKey, Point]:
    grid: dict[PointKey, Point] = {
        (v, n, ax.describe(g)): Point()
        for v in study.variants
        for n in study.lengths
        for g in study.grid_points
    }
    groups: dict[tuple, list[CellResult]] = {}
    for c in cells:
        groups.setdefault(c.cell.group, []).append(c)
    for members in groups.values():
        cell = members[0].cell
        point = grid[(cell.variant, cell.length, ax.describe(cell.grid))]
        point.seeds += 1
        chosen = next((c for c in members if c.selected), None)
        if chosen is None:
            partial = [c.quality for c in members if c.status == "ok" and c.partial and c.quality is not None]
            if partial:
                point.partial.append(partial[0] if len(partial) == 1 else max(partial))
            elif any(c.status == "failed" for c in members):
                point.failed += 1
            elif not any(c.status == "ok" for c in members):
                point.missing += 1
            continue
        point.chosen.append(chosen.cell.tune)
        point.partial_counted += chosen.partial
        if chosen.quality is not None:
            point.quality.append(chosen.quality)
        for key, value in chosen.cost.items():
            if value is not None:
                point.cost.setdefault(key, []).append(value)
        for length, value in chosen.evals.items():
            if value is not None:
                point.evals.setdefault(length, []).append(value)
    return grid


# ---- study.md ------------------------------------------------------------------------------------
def quality_text(point: Point, tune_names: dict[str, str]) -> str:
    if not point.quality:
        if point.partial:
            return f"({statistics.fmean(point.partial):.3f}{DAGGER})"
        return "failed" if point.failed else ("not run" if point.missing else "-")
    text = f"{point.mean:.3f}" if point.spread is None else f"{point.mean:.3f} ± {point.spread:.3f}"
    if point.partial_counted:
        text += DAGGER
    if tune_names and point.chosen:
        text += " " + chosen_text(point.chosen, tune_names)
    if point.partial:
        text += f" ({len(point.partial)}/{point.seeds} partial{DAGGER})"
    if point.failed:
        text += f" ({point.failed}/{point.seeds} failed)"
    if point.missing:
        text += f" ({point.missing}/{point.seeds} not run)"
    return text


def chosen_text(chosen: Sequence[ax.Point], names: dict[str, str]) -> str:
    """The tuned values chosen per seed: `[lr 0.003]` when every seed chose it, else `[lr 0.003/0.01]`."""
    parts = []
    for i, key in enumerate(names):
        values = [ax.value_text(point[i][1]) for point in chosen]
        shown = values[0] if len(set(values)) == 1 else "/".join(values)
        parts.append(f"{names[key]} {shown}")
    return "[" + ", ".join(parts) + "]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def tables(study: Study, cells: Sequence[CellResult], metric: Metric) -> list[str]:
    """Per grid point: the LRA-style table (metric per length; parameters, state and cost at the longest)."""
    grid = points(study, cells)
    longest = max(study.lengths)
    tune_names = ax.labels([k for k, _ in study.tune])
    lines: list[str] = []
    planned = {ax.describe(c.grid) for c in study.cells}
    for g in study.grid_points:
        gtext = ax.describe(g)
        if gtext not in planned:  # every cell of this grid point left out by skip=
            continue
        header = ["variant", *(f"L={n}" for n in study.lengths)]
        header += [f"{COST_LABELS[k]} @{longest}" for k in TABLE_COST]
        rows = []
        for variant in study.variants:
            row = [variant, *(quality_text(grid[(variant, n, gtext)], tune_names) for n in study.lengths)]
            row += [_fmt(grid[(variant, longest, gtext)].cost_mean(k), COST_FORMAT[k]) for k in TABLE_COST]
            rows.append(row)
        if g:
            lines += [f"### {gtext}", ""]
        lines += [*_table(header, rows), ""]
    return lines[:-1]


def eval_tables(study: Study, cells: Sequence[CellResult], metric: Metric) -> list[str]:
    """The primary metric of the same weights at each test length (eval_lengths), per training length."""
    if not study.eval_lengths:
        return []
    grid = points(study, cells)
    header = ["variant", "trained at", *(f"@{n}" for n in study.eval_lengths)]
    header += [f"decode state @{n}" for n in study.eval_lengths]
    rows = []
    for g in study.grid_points:
        gtext = ax.describe(g)
        for variant in study.variants:
            for n in study.lengths:
                point = grid[(variant, n, gtext)]
                label = f"{variant} ({gtext})" if g else variant
                evals = [_mean_text(point.evals.get(m) or []) for m in study.eval_lengths]
                states = [_fmt(point.cost_mean(state_key(m)), "int") for m in study.eval_lengths]
                rows.append([label, str(n), *evals, *states])
    return [
        f"## {metric.name} at other test lengths (the same weights)",
        "",
        *_table(header, rows),
        "",
    ]


def _mean_text(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def mean_over_table(study: Study, cells: Sequence[CellResult], metric: Metric) -> list[str]:
    """Per variant (and length, and the other grid axes), the mean of the cell means over the
    values of `mean_over` (MAD's mean over tasks); shown only where every value has a number."""
    if study.mean_over is None:
        return []
    grid = points(study, cells)
    key = study.mean_over
    values = dict(study.grid)[key]
    names = ax.labels([k for k, _ in study.grid])
    header = ["variant", "length", *(ax.value_text(v) for v in values), "mean"]
    rows = []
    others = sorted({ax.describe(tuple(p for p in g if p[0] != key)) for g in study.grid_points})
    for rest in others:
        for variant in study.variants:
            for n in study.lengths:
                means = []
                for g in study.grid_points:
                    if ax.describe(tuple(p for p in g if p[0] != key)) == rest:
                        means.append(grid[(variant, n, ax.describe(g))].mean)
                done = [m for m in means if m is not None]
                mean = (
                    f"**{statistics.fmean(done):.3f}**"
                    if len(done) == len(means)
                    else (f"incomplete ({len(done)}/{len(means)})")
                )
                label = f"{variant} ({rest})" if rest else variant
                rows.append([label, str(n), *(_fmt(m, "g") if m is not None else "-" for m in means), mean])
    return [
        f"## Mean over {key} ({names[key]}: {len(values)} values)",
        "",
        f"Each value's column is the cell mean of {metric.name} over seeds; `mean` averages them per variant.",
        "",
        *_table(header, rows),
        "",
    ]


def tables_text(study: Study, cells: Sequence[CellResult], metric: Metric) -> str:
    """The LRA-style tables for the console."""
    lines = [f"{study.task}: {metric.name} by variant and length", *tables(study, cells, metric)]
    lines += ["", *mean_over_table(study, cells, metric)] if study.mean_over else []
    if any(p.partial or p.partial_counted for p in points(study, cells).values()):
        lines += ["", PARTIAL_NOTE]
    return "\n".join(lines)


def cost_table(study: Study, cells: Sequence[CellResult]) -> list[str]:
    grid = points(study, cells)
    planned = {(c.variant, c.length, ax.describe(c.grid)) for c in study.cells}  # skip= leaves rows out
    header = ["variant", *(k for k, _ in study.grid), "length", *(COST_LABELS[k] for k in TABLE_COST)]
    rows = [
        [
            v,
            *(ax.value_text(value) for _, value in g),
            str(n),
            *(_fmt(grid[(v, n, ax.describe(g))].cost_mean(k), COST_FORMAT[k]) for k in TABLE_COST),
        ]
        for v in study.variants
        for g in study.grid_points
        for n in study.lengths
        if (v, n, ax.describe(g)) in planned
    ]
    return _table(header, rows)


def failures(cells: Sequence[CellResult]) -> list[CellResult]:
    return [c for c in cells if c.status != "ok"]


def partial_runs(cells: Sequence[CellResult]) -> list[CellResult]:
    return [c for c in cells if c.status == "ok" and c.partial]


def budget_text(cells: Sequence[CellResult]) -> str:
    """The training budget behind the figures, in one line: planned steps (and batch), and how many runs
    got fewer (cut short, marked †)."""
    return f"Budget: {budget_phrase(cells)}."


def budget_phrase(cells: Sequence[CellResult]) -> str:
    done = [c for c in cells if c.status == "ok"]
    planned = sorted({c.steps[1] for c in done if c.steps[1] is not None})
    batches = sorted({c.batch_size for c in done if c.batch_size is not None})
    if not planned:
        return "not recorded by these runs"
    steps = " / ".join(f"{n:,}" for n in planned)
    batch = f" of {' / '.join(str(b) for b in batches)} sequences" if batches else ""
    short = sum(
        1 for c in done if c.steps[0] is not None and c.steps[1] is not None and c.steps[0] < c.steps[1]
    )
    cut = sum(1 for c in done if c.partial)  # the rest stopped early as planned (early stopping)
    got = (
        "every run got them" if not short else f"{short} run(s) got fewer ({cut} cut short, marked {DAGGER})"
    )
    return f"{steps} training steps per run{batch}; {got}"


def tuned_values(study: Study) -> str:
    """`task.module.lr in {0.001, 0.003}`: the values each tuned key was chosen among."""
    return "; ".join(f"{k} in {{{', '.join(ax.value_text(v) for v in vs)}}}" for k, vs in study.tune)


def tuning_phrase(study: Study, cells: Sequence[CellResult], monitor: Monitor) -> str:
    """How the runs' learning rate (and any other tuned key) was chosen: on validation among the tuned
    values, or as set and not tuned (the learning rate every run used)."""
    if study.tune:
        tuned = tuned_values(study)
        return f"tuned on validation ({monitor.name}, never test): {tuned}"
    lrs = sorted({c.lr for c in cells if c.status == "ok" and c.lr is not None})
    if not lrs:
        return "not tuned"
    axis = " (a grid axis)" if any(key == LR_KEY for key, _ in study.grid) else ""
    return f"not tuned: {LR_KEY} {' / '.join(f'{lr:g}' for lr in lrs)} as set{axis}"


def basis_caption(study: Study, cells: Sequence[CellResult], monitor: Monitor) -> str:
    """What every accuracy figure of the study stands on, in one line printed under each plot: the
    seeds behind each point, the budget each run got, and how its learning rate was chosen."""
    seeds = ", ".join(str(s) for s in study.seeds)
    spread = f"mean ± sd over seeds {seeds}" if len(study.seeds) > 1 else f"one seed ({seeds})"
    return f"{spread} · {budget_phrase(cells)} · {tuning_phrase(study, cells, monitor)}"


def markdown(
    study: Study, cells: Sequence[CellResult], metric: Metric, monitor: Monitor, plots: dict[str, Path | None]
) -> str:
    direction = "higher" if metric.higher_is_better else "lower"
    ok = sum(c.status == "ok" for c in cells)
    seeds = ", ".join(str(s) for s in study.seeds)
    lines = [
        f"# attnlab study: {study.task}, {metric.name} against sequence length",
        "",
        f"{ok} of {len(cells)} runs finished; seeds {seeds}. Each cell: mean ± standard deviation of "
        f"{metric.name} ({direction} is better) over the seeds; cost columns are means over the seeds.",
    ]
    if study.tune:
        tuned = tuned_values(study)
        mon = "higher" if monitor.higher_is_better else "lower"
        lines.append(
            f"Tuned: {tuned}. Per variant, length, grid point and seed the run with the best "
            f"{monitor.name} ({mon} is better; validation, never test) is selected; the cell reports that "
            f"run's {metric.name} and, in brackets, the value chosen (per seed where they differ)."
        )
    else:  # the learning rate is part of the figure's basis either way
        lines.append(f"{tuning_phrase(study, cells, monitor).capitalize()}.")
    lines += [budget_text(cells), f"Overrides of every run: `{' '.join(study.overrides) or '(none)'}`", ""]
    lines += [*tables(study, cells, metric), ""]
    if any(p.partial or p.partial_counted for p in points(study, cells).values()) or partial_runs(cells):
        lines += [PARTIAL_NOTE, ""]
    labels = {"study": "metric and cost against length", "state": "metric against decoding state",
              "extrapolation": "metric against test length",
              "haystack": "test length x depth of the fact"}  # fmt: skip
    lines += [f"![{metric.name}: {labels[k]}]({p.name})" for k, p in plots.items() if p is not None]
    lines += [""]
    lines += eval_tables(study, cells, metric)
    lines += mean_over_table(study, cells, metric)
    lines += ["## Cost at every length", "", *cost_table(study, cells), ""]
    cut = partial_runs(cells)
    if cut:
        lines += [f"## Runs cut short {DAGGER}", "", *_table(["run", "stopped by", "selected", "run dir"], [
            [c.cell.name, c.stopped_by, "yes" if c.selected else "no", f"`{c.run_dir}`"] for c in cut
        ]), ""]  # fmt: skip
    failed = failures(cells)
    if failed:
        lines += ["## Failed cells", "", *_table(["run", "status", "reason", "run dir"], [
            [c.cell.name, c.status, c.message.replace("|", "\\|"), f"`{c.run_dir}`"] for c in failed
        ]), ""]  # fmt: skip
    return "\n".join(lines)
