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

    return wandb.Table(columns=columns, data=[[cell(r.get(c)) for c in columns] for r in rows])


def image(path: Path):
    import wandb

    return wandb.Image(str(path))
