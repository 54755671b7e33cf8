"""wandb for the bench and the report: offline unless an API key is configured; never prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnlab.run.tracking import ensure_wandb_mode


def init(
    *, project: str, job_type: str, directory: Path, config: dict[str, Any], group: str | None = None, tags=()
):
    """A wandb run; WANDB_MODE=offline is set first when no key is configured and no mode is chosen."""
    ensure_wandb_mode()
    import wandb

    return wandb.init(
        project=project, job_type=job_type, dir=str(directory), config=config, group=group, tags=list(tags),
        settings=wandb.Settings(console="off"),
    )  # fmt: skip


def table(rows: list[dict[str, Any]], columns: list[str]):
    import wandb

    def cell(value: Any) -> Any:
        return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)

    data = [[cell(r.get(c)) for c in columns] for r in rows]
    # wandb.Table types each column by its values and refuses a row that breaks the type (a study axis
    # over [null, 48] holds "null" and 48): a column of mixed kinds is written as text throughout
    for i in range(len(columns)):
        kinds = {_kind(row[i]) for row in data if row[i] is not None}
        if len(kinds) > 1:
            for row in data:
                row[i] = None if row[i] is None else str(row[i])
    return wandb.Table(columns=columns, data=data)


def _kind(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "text"


def image(path: Path):
    import wandb

    return wandb.Image(str(path))
