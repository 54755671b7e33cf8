"""The study's table and plot to wandb: one extra run in the group its runs share (offline unless a
key is configured; never a prompt)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from attnlab.study.collect import CellResult, Metric, csv_columns, csv_rows
from attnlab.study.plan import Study
from attnlab.study.select import Monitor


def log_study(
    study: Study,
    cells: Sequence[CellResult],
    metric: Metric,
    monitor: Monitor,
    *,
    project: str,
    plot: Path | None,
    markdown: Path,
) -> str:
    """Log study.csv as a wandb Table and study.png as an image; returns the run's directory."""
    from attnlab.bench import wandb_log

    run = wandb_log.init(
        project=project,
        job_type="study",
        directory=study.out,
        group=study.group,
        config={
            "task": study.task,
            "variants": list(study.variants),
            "lengths": list(study.lengths),
            "seeds": list(study.seeds),
            "overrides": list(study.overrides),
            "grid": {key: list(values) for key, values in study.grid},
            "tune": {key: list(values) for key, values in study.tune},
            "eval_lengths": list(study.eval_lengths),
            "allow_partial": study.allow_partial,
        },
        tags=[f"task:{study.task}", "study"],
    )
    columns = csv_columns(study, metric, monitor)
    rows = [dict(zip(columns, row, strict=True)) for row in csv_rows(study, cells, metric, monitor)]
    logged = {"study/runs": wandb_log.table(rows, columns)}
    if plot is not None:
        logged["study/plot"] = wandb_log.image(plot)
    run.log(logged)
    run.save(str(markdown), base_path=str(study.out), policy="now")
    directory = str(run.dir)
    run.finish()
    return directory
