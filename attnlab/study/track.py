"""The study's table and plot to wandb: one extra run in the group its runs share (offline unless a
key is configured; never a prompt)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from attnlab.study.collect import CellResult, Metric, csv_columns, csv_rows
from attnlab.study.plan import Study


def log_study(
    study: Study,
    cells: Sequence[CellResult],
    metric: Metric,
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
        },
        tags=[f"task:{study.task}", "study"],
    )
    columns = csv_columns(metric)
    logged = {"study/runs": wandb_log.table([dict(zip(columns, row)) for row in csv_rows(cells)], columns)}
    if plot is not None:
        logged["study/plot"] = wandb_log.image(plot)
    run.log(logged)
    run.save(str(markdown), base_path=str(study.out), policy="now")
    directory = str(run.dir)
    run.finish()
    return directory
