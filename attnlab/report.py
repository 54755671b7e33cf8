"""`python -m attnlab.report PATH...` — compare finished runs: quality against cost, per task.

Reads every results.json under the given paths (a run directory, a Hydra multirun sweep directory,
or results.json files), prints one table per task, marks the Pareto front of quality vs cost, and
writes report.md and report.png into --out (default: the first PATH's directory).

    python -m attnlab.report multirun/classify/2026-01-01_12-00-00
    python -m attnlab.report outputs/ --cost tokens_per_s --out reports/ --wandb

A run is on the front when no other successful run of the same task is at least as good in quality
AND at least as cheap, and strictly better in one of the two. Runs whose status is not "ok" are
listed as failures. Partial runs (cut short by trainer.max_time, an interruption or a NaN before
their planned steps: attnlab.run.results.is_partial) are shown with ⚠ in the steps column and left off
the front, unless --allow-partial.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from attnlab.errors import AttnlabError, OneLineArgumentParser
from attnlab.run.results import RESULTS_FILE, is_partial


@dataclass(frozen=True)
class CostAxis:
    key: str  # field of results.json's "cost"
    label: str
    higher_is_better: bool


COSTS = {
    "flops": CostAxis("attention_flops_per_token", "attention FLOPs/token", False),
    "tokens_per_s": CostAxis("train_tokens_per_s", "train tokens/s", True),
    "decode_tokens_per_s": CostAxis("decode_tokens_per_s", "decode tokens/s", True),  # translate, summarise
    "peak_memory": CostAxis("peak_memory_mb", "peak memory MB", False),
}


@dataclass
class Run:
    path: Path  # the results.json
    data: dict[str, Any]
    on_front: bool = False

    @property
    def ok(self) -> bool:
        return self.data.get("status") == "ok"

    @property
    def partial(self) -> bool:
        """Cut short before its planned steps (budget.stopped_by: max_time, interrupted, non_finite)."""
        return is_partial(self.data)

    @property
    def task(self) -> str:
        return str(self.data.get("task", "?"))

    @property
    def variant(self) -> str:
        return str((self.data.get("attention") or {}).get("name", "?"))

    @property
    def label(self) -> str:
        params = (self.data.get("attention") or {}).get("params") or {}
        inside = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
        return f"{self.variant}({inside})" if inside else self.variant

    @cached_property
    def config(self) -> dict[str, str]:
        """The resolved config, flat and without bookkeeping (flat_config); read by several columns."""
        return flat_config(self.data.get("config") or {})

    @property
    def metric(self) -> str:
        return str(self.data.get("primary_metric", ""))

    @property
    def higher_quality_is_better(self) -> bool:
        return self.data.get("primary_mode", "max") != "min"

    def quality(self) -> float | None:
        return _number((self.data.get("metrics") or {}).get(self.metric))

    def cost(self, axis: CostAxis) -> float | None:
        return _number((self.data.get("cost") or {}).get(axis.key))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


# ---- finding and reading runs -------------------------------------------------------------------
def find_results(paths: Sequence[str | Path]) -> list[Path]:
    """Every results.json under `paths`; an error for a path that holds none."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == RESULTS_FILE:
            hits = [path]
        elif path.is_dir():
            hits = sorted(path.rglob(RESULTS_FILE))
        elif path.exists():
            raise AttnlabError(f"{path} is not a run directory or a {RESULTS_FILE} file")
        else:
            raise AttnlabError(
                f"{path} does not exist; give run directories, sweep directories or {RESULTS_FILE} files"
            )
        if not hits:
            raise AttnlabError(
                f"no {RESULTS_FILE} under {path}: give a run directory (outputs/...) or a sweep directory (multirun/...)"
            )
        found += [h for h in hits if h not in found]
    return found


def load_runs(files: Sequence[Path]) -> list[Run]:
    runs = []
    for file in files:
        try:
            data = json.loads(file.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            for section in ("metrics", "cost", "attention", "config", "budget"):
                if not isinstance(data.get(section, {}), dict):
                    raise ValueError(f"'{section}' is not a JSON object")
        except (OSError, ValueError) as exc:
            data = {"status": "unreadable", "error": f"{type(exc).__name__}: {exc}"}
        runs.append(Run(file, data))
    return runs


# ---- the Pareto front ---------------------------------------------------------------------------
def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(quality, cost) pairs oriented so that higher quality and LOWER cost are better."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def mark_pareto_front(runs: Sequence[Run], axis: CostAxis, *, allow_partial: bool = False) -> None:
    """Set run.on_front per task; runs that failed or lack quality or cost are never on it, nor are
    partial runs unless `allow_partial` (a run cut short would be compared on a budget it never got)."""
    points: dict[int, tuple[float, float]] = {}
    for i, run in enumerate(runs):
        run.on_front = False
        quality, cost = run.quality(), run.cost(axis)
        ranked = run.ok and (allow_partial or not run.partial)
        if ranked and quality is not None and cost is not None:
            points[i] = (
                quality if run.higher_quality_is_better else -quality,
                -cost if axis.higher_is_better else cost,
            )
    for i, point in points.items():
        rivals = (points[j] for j in points if j != i and runs[j].task == runs[i].task)
        runs[i].on_front = not any(dominates(other, point) for other in rivals)


# ---- output -------------------------------------------------------------------------------------
def _fmt(value: float | None, kind: str = "g") -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "sci":
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return f"{value:.4g}"


COLUMNS = [
    "front",
    "variant",
    "QUALITY",
    "train tokens/s",
    "DECODE",
    "peak memory MB",
    "attention FLOPs/token",
    "tokens/example (mean/max)",
    "steps",
    "seed",
    "DIFFERS",
]
DIFFERS_COLUMN = "config that differs"  # where the task's runs differ beyond variant and seed

# Config keys that say where a run wrote or what it was called, or that repeat a column (attention.* is
# the variant, seed the seed, task.datamodule.* the data and model keys it is wired from): never listed
# as what differs between runs.
BOOKKEEPING_PREFIXES = ("attention.", "hydra.", "logger.", "paths.", "task.datamodule.")
BOOKKEEPING_KEYS = ("run_name", "tags", "ckpt_path", "seed")
BOOKKEEPING_NAMES = ("dirpath", "save_dir", "attention", "seed")  # a callback's output folder or copies
BASIS_KEYS = ("task.module.lr", "task.data.batch_size")  # printed once per task when every run shares them
DECODE_COLUMN = "decode tokens/s (beam)"  # test-time generation speed: tasks that generate only


def decodes(runs: Sequence[Run]) -> bool:
    """Whether any run of a task recorded test-time decoding speed (translate, summarise)."""
    return any(_number((r.data.get("cost") or {}).get("decode_tokens_per_s")) is not None for r in runs)


def task_columns(runs: Sequence[Run]) -> list[str]:
    """COLUMNS for one task's runs: its metric's name, the decoding column only where it decodes, the
    differing config only where the runs differ beyond variant and seed."""
    names = {
        "QUALITY": runs[0].metric,
        "DECODE": DECODE_COLUMN if decodes(runs) else None,
        "DIFFERS": DIFFERS_COLUMN if differing_keys(runs) else None,
    }
    return [names.get(c, c) for c in COLUMNS if names.get(c, c) is not None]


def flat_config(config: dict[str, Any]) -> dict[str, str]:
    """A run's resolved config as {dotted key: value as an override writes it}, bookkeeping left out."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and (node or not prefix):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
            return
        key = prefix[:-1]
        last = key.rsplit(".", 1)[-1]
        if (
            key.startswith(BOOKKEEPING_PREFIXES)
            or key in BOOKKEEPING_KEYS
            or last.endswith("_dir")
            or (key.startswith("callbacks.") and last in BOOKKEEPING_NAMES)
        ):
            return
        out[key] = node if isinstance(node, str) else json.dumps(node)

    walk(config, "")
    return out


def recorded_configs(runs: Sequence[Run]) -> list[dict[str, str]]:
    """The flat configs of the runs that recorded one (results.json files before it have none)."""
    return [run.config for run in runs if run.config]


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """The config keys every recorded config has, whose values are not the same in all of them."""
    configs = recorded_configs(runs)
    keys = sorted(set.intersection(*map(set, configs))) if configs else []
    return [k for k in keys if len({c[k] for c in configs}) > 1]


def partly_recorded_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys only some runs have (results written by other attnlab versions): not compared."""
    configs = recorded_configs(runs)
    if not configs:
        return []
    return sorted(set.union(*map(set, configs)) - set.intersection(*map(set, configs)))


def partly_recorded_note(runs: Sequence[Run]) -> str | None:
    keys = partly_recorded_keys(runs)
    if not keys:
        return None
    shown = ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")
    return (
        f"{len(keys)} config key(s) recorded by only some runs (other attnlab versions) are not compared: "
        f"{shown}"
    )


def differs(run: Run, keys: Sequence[str]) -> str:
    """`model.token_shift=false, task.module.lr=0.001`: the run's values of the differing keys."""
    return ", ".join(f"{k}={run.config.get(k, '-')}" for k in keys)


def shared_basis(runs: Sequence[Run]) -> str | None:
    """`task.module.lr=0.003, task.data.batch_size=64`: the learning rate and batch every run shares, the
    basis of the figures beside their steps and seeds (a value that differs is in the differs column)."""
    configs = recorded_configs(runs)
    if not configs:
        return None
    shared = [
        f"{k}={configs[0][k]}"
        for k in BASIS_KEYS
        if k in configs[0] and all(c.get(k) == configs[0][k] for c in configs)
    ]
    return ", ".join(shared) or None


def decode_speed(run: Run) -> str:
    """`1,234 (4)`: output tokens/s of the test-time decoding and the beam it used; `-` where not recorded."""
    cost = run.data.get("cost") or {}
    speed, beam = _number(cost.get("decode_tokens_per_s")), cost.get("decode_beam")
    return "-" if speed is None else f"{_fmt(speed, 'int')} ({beam})"


def sequence_length(run: Run) -> str:
    """The data's real tokens per example (mean/max over the training batches), as the run measured
    them; runs recorded before that show the model's limit, `≤max_len`."""
    cost = run.data.get("cost") or {}
    mean, longest = _number(cost.get("seq_len_mean")), _number(cost.get("seq_len_max"))
    if mean is not None and longest is not None:
        return f"{mean:.0f}/{longest:.0f}"
    return f"≤{run.data['max_len']}" if run.data.get("max_len") is not None else "-"


def steps(run: Run) -> str:
    """`2,300` for a run that got its planned steps; `1,200/2,300 early_stopping` for one that stopped
    earlier as configured; `⚠ 460/2,300 max_time` for a partial run; `-` where no budget was recorded."""
    budget = run.data.get("budget") or {}
    done, planned = _number(budget.get("steps_done")), _number(budget.get("steps_planned"))
    if done is None:
        return "-"
    if planned is not None and done >= planned:
        return _fmt(done, "int")
    count = _fmt(done, "int") + (f"/{_fmt(planned, 'int')}" if planned is not None else "")
    return f"{'⚠ ' if run.partial else ''}{count} {budget.get('stopped_by', '?')}"


def task_rows(runs: Sequence[Run]) -> list[list[str]]:
    """One row per run, in the order of task_columns(runs): the front, the rest, then partial runs off it."""
    rows = []
    decode = [decode_speed] if decodes(runs) else []
    keys = differing_keys(runs)
    differing = [lambda run: differs(run, keys)] if keys else []

    def order(r: Run) -> tuple:  # the front first, partial runs last; a grid point's seeds together
        return (not r.on_front, r.partial, r.label, differs(r, keys), str(r.data.get("seed")))

    for run in sorted(runs, key=order):
        cost = run.data.get("cost") or {}
        rows.append(
            [
                "★" if run.on_front else "",
                run.label,
                _fmt(run.quality()),
                _fmt(_number(cost.get("train_tokens_per_s")), "int"),
                *(column(run) for column in decode),
                _fmt(_number(cost.get("peak_memory_mb"))),
                _fmt(_number(cost.get("attention_flops_per_token")), "sci"),
                sequence_length(run),
                steps(run),
                str(run.data.get("seed", "-")),
                *(column(run) for column in differing),
            ]
        )
    return rows


def by_task(runs: Sequence[Run]) -> dict[str, list[Run]]:
    tasks: dict[str, list[Run]] = {}
    for run in runs:
        if run.ok:
            tasks.setdefault(run.task, []).append(run)
    return tasks


def failure_reason(run: Run) -> str:
    reason = run.data.get("error") or run.data.get("reason") or run.data.get("message") or ""
    return str(reason).splitlines()[0][:200] if reason else ""


def _quality_heading(runs: Sequence[Run]) -> str:
    direction = "higher" if runs[0].higher_quality_is_better else "lower"
    return f"{runs[0].metric} ({direction} is better)"


def partial_note(runs: Sequence[Run], allow_partial: bool) -> str | None:
    """What the report did with partial runs, or None when there are none."""
    partial = [r for r in runs if r.ok and r.partial]
    if not partial:
        return None
    if allow_partial:
        return f"⚠ {len(partial)} partial run(s) (cut short before their planned steps) ranked with the rest: --allow-partial."
    return (
        f"⚠ {len(partial)} partial run(s) (cut short before their planned steps: see the steps column) are "
        "listed last and left off the Pareto front; --allow-partial ranks them with the rest."
    )


def write_markdown(
    path: Path,
    runs: Sequence[Run],
    axis: CostAxis,
    plot: Path | None,
    sources: Sequence[str],
    allow_partial: bool = False,
) -> None:
    ok = [r for r in runs if r.ok]
    failed = [r for r in runs if not r.ok]
    better = "higher" if axis.higher_is_better else "lower"
    note = partial_note(runs, allow_partial)
    lines = [
        "# attnlab report",
        "",
        f"{len(ok)} successful run(s), {len(failed)} failed, from {', '.join(f'`{s}`' for s in sources)}.",
        f"Cost axis: {axis.label} ({better} is better). ★ = on the Pareto front of quality vs cost within its task.",
        *([note] if note else []),
        "",
    ]
    for task, task_runs in by_task(runs).items():
        cols = task_columns(task_runs)
        lines += [f"## {task}: {_quality_heading(task_runs)}", ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in task_rows(task_runs)
        ]
        lines.append("")
        if (basis := shared_basis(task_runs)) is not None:
            lines += [f"Every run of {task}: `{basis}`.", ""]
        if (note := partly_recorded_note(task_runs)) is not None:
            lines += [f"{note}.", ""]
    if plot is not None:
        lines += [f"![quality vs cost]({plot.name})", ""]
    if failed:
        lines += ["## Failures", "", "| run | task | variant | status | reason |", "|---|---|---|---|---|"]
        for run in failed:
            reason = failure_reason(run).replace("|", "\\|")
            lines.append(
                f"| `{run.path.parent}` | {run.task} | {run.label} | {run.data.get('status')} | {reason} |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def write_plot(path: Path, runs: Sequence[Run], axis: CostAxis) -> Path | None:
    tasks = {
        task: [r for r in rs if r.quality() is not None and r.cost(axis) is not None]
        for task, rs in by_task(runs).items()
    }
    tasks = {task: rs for task, rs in tasks.items() if rs}
    if not tasks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, (task, task_runs) in zip(axes[0], tasks.items()):
        for run in task_runs:
            x, y = run.cost(axis), run.quality()
            style = (
                {"color": "tab:red", "s": 60, "zorder": 3} if run.on_front else {"color": "tab:gray", "s": 30}
            )
            if run.partial:  # cut short: a cross, whatever its rank
                style |= {"marker": "x"}
            ax.scatter([x], [y], **style)
        front = sorted((r.cost(axis), r.quality()) for r in task_runs if r.on_front)
        if len(front) > 1:
            ax.plot(*zip(*front), color="tab:red", alpha=0.5, label="Pareto front")
            ax.legend(fontsize=8)
        costs = [r.cost(axis) for r in task_runs]
        if min(costs) > 0 and max(costs) / min(costs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"{axis.label} ({'higher' if axis.higher_is_better else 'lower'} is better)")
        ax.set_ylabel(_quality_heading(task_runs))
        ax.set_title(task)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    for ax, task_runs in zip(axes[0], tasks.values()):
        label_points(ax, [(r.label, r.cost(axis), r.quality()) for r in task_runs])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


LABEL_LINE_PT = 12  # a label's step up or down, in points (the 8 pt labels are ~11 pt tall)


def label_points(ax: Any, points: Sequence[tuple[str, float, float]]) -> None:
    """Label each point without two labels overlapping or leaving the panel: a label that would goes
    to the point's left, then up or down a line at a time, joined to its point by a thin line."""
    renderer = ax.figure.canvas.get_renderer()
    panel = ax.get_window_extent(renderer)
    steps = [0] + [s for k in range(1, 16) for s in (k, -k)]
    placed: list[Any] = []  # window extents of the labels so far
    for label, x, y in sorted(points, key=lambda p: (p[2], p[1])):
        first_inside = None
        for step in steps:
            for side in (1, -1):  # right of the point, else left of it
                position = (5 * side, 3 + LABEL_LINE_PT * step)
                text = _annotate(ax, label, (x, y), position, side)
                box = _text_box(text, renderer)
                inside = (
                    panel.x0 <= box.x0 and box.x1 <= panel.x1 and panel.y0 <= box.y0 and box.y1 <= panel.y1
                )
                if inside and not any(box.overlaps(other) for other in placed):
                    break
                first_inside = first_inside or (position, side) if inside else first_inside
                text.remove()
            else:
                continue
            break
        else:  # crowded: the nearest place inside the panel, overlaps or not
            position, side = first_inside or ((5, 3), 1)
            text = _annotate(ax, label, (x, y), position, side)
        placed.append(_text_box(text, renderer))


def _text_box(annotation: Any, renderer: Any) -> Any:
    """The window extent of an annotation's text alone (its own extent includes the arrow)."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)
    return Text.get_window_extent(annotation, renderer)


def _annotate(ax: Any, label: str, point: tuple[float, float], offset: tuple[float, float], side: int) -> Any:
    return ax.annotate(
        label, point, textcoords="offset points", xytext=offset, fontsize=8, ha="left" if side > 0 else "right",
        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if offset[1] != 3 else None,
    )  # fmt: skip


def print_tables(runs: Sequence[Run], axis: CostAxis, allow_partial: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    for task, task_runs in by_task(runs).items():
        table = Table(title=f"{task}: {_quality_heading(task_runs)} vs {axis.label} (★ = Pareto front)")
        for col in task_columns(task_runs):
            wide = col in ("variant", DIFFERS_COLUMN)  # folded onto more lines, never cut short
            table.add_column(
                col, justify="left" if wide else "right", overflow="fold" if wide else "ellipsis"
            )
        for row in task_rows(task_runs):
            table.add_row(*row)
        console.print(table)
        if (basis := shared_basis(task_runs)) is not None:
            console.print(f"every run of {task}: {basis}")
        if (note := partly_recorded_note(task_runs)) is not None:
            console.print(note)
    if (note := partial_note(runs, allow_partial)) is not None:
        console.print(note)
    failed = [r for r in runs if not r.ok]
    if failed:
        table = Table(title="failed runs")
        for col in ("run", "task", "variant", "status", "reason"):
            table.add_column(col)
        for run in failed:
            table.add_row(
                str(run.path.parent), run.task, run.label, str(run.data.get("status")), failure_reason(run)
            )
        console.print(table)


def log_wandb(runs: Sequence[Run], axis: CostAxis, out: Path, plot: Path | None, markdown: Path) -> None:
    from attnlab.bench import wandb_log

    run = wandb_log.init(project="attnlab", job_type="report", directory=out, config={"cost": axis.key})
    logged: dict[str, Any] = {}
    for task, task_runs in by_task(runs).items():
        cols = task_columns(task_runs)
        logged[f"report/{task}"] = wandb_log.table(
            [dict(zip(cols, row)) for row in task_rows(task_runs)], cols
        )
    if plot is not None:
        logged["report/quality_vs_cost"] = wandb_log.image(plot)
    run.log(logged)
    run.save(str(markdown), base_path=str(out), policy="now")
    run.finish()


# ---- command line -------------------------------------------------------------------------------
def report(
    paths: Sequence[str],
    *,
    cost: str = "flops",
    out: str | None = None,
    use_wandb: bool = False,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Build the report; returns {runs, markdown, plot}. Partial runs stay off the front unless `allow_partial`."""
    axis = COSTS[cost]
    runs = load_runs(find_results(paths))
    unreadable = [r for r in runs if r.data.get("status") == "unreadable"]
    if len(unreadable) == len(runs):
        raise AttnlabError(
            f"none of the {len(runs)} {RESULTS_FILE} file(s) could be read ({unreadable[0].path}: "
            f"{unreadable[0].data['error']}); re-run those runs or give other run directories"
        )
    mark_pareto_front(runs, axis, allow_partial=allow_partial)
    first = Path(paths[0])
    out_dir = Path(out) if out else (first if first.is_dir() else first.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = write_plot(out_dir / "report.png", runs, axis)
    markdown = out_dir / "report.md"
    write_markdown(markdown, runs, axis, plot, [str(p) for p in paths], allow_partial)
    print_tables(runs, axis, allow_partial)
    print(f"wrote {markdown}" + (f" and {plot}" if plot else ""))
    if use_wandb:
        log_wandb(runs, axis, out_dir, plot, markdown)
    return {"runs": runs, "markdown": markdown, "plot": plot}


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m attnlab.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run dirs, sweep dirs or results.json files")
    parser.add_argument(
        "--cost", choices=sorted(COSTS), default="flops", help="cost axis of the Pareto front"
    )
    parser.add_argument(
        "--out", default=None, help="where report.md/report.png go (default: the first PATH's dir)"
    )
    parser.add_argument(
        "--wandb", action="store_true", help="log the tables and plot to wandb (offline if no key)"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="put runs cut short before their planned steps (max_time, interrupted, non_finite) on the front",
    )
    args = parser.parse_args(argv)
    study_spelling = next((p for p in args.paths if p.split("=", 1)[0] == "allow_partial"), None)
    if study_spelling is not None and not Path(study_spelling).exists():
        print(
            f"error: {study_spelling} is the study's spelling; the report takes --allow-partial",
            file=sys.stderr,
        )
        return 2
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        print(
            f"error: --out {args.out} is a file; give a directory for report.md and report.png",
            file=sys.stderr,
        )
        return 2
    try:
        report(
            args.paths, cost=args.cost, out=args.out, use_wandb=args.wandb, allow_partial=args.allow_partial
        )
    except OSError as exc:  # the output directory cannot be created or written
        print(
            f"error: cannot write the report: {exc}; choose a writable directory with --out", file=sys.stderr
        )
        return 2
    except AttnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
