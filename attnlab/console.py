"""What a user sees while a run trains: each log line once, no framework noise, and a progress bar
and model summary that make sense for a run counted in steps.

- `quiet_frameworks()`: Lightning's loggers go through Hydra's handlers only (console + run.log),
  not a second console handler of their own; its advertising tip and known deprecation warnings of
  one framework about another are dropped.
- `ProgressBar`: Lightning's rich bar, but epochs counted from 1 (as wandb's final `epoch`), a
  step-based run (`max_epochs: -1`) shows `Epoch 3`, not `Epoch 2/-2`, a speed it could not sample shows the average, not `0.00it/s`, and its metrics stay
  on one line in a log file (no `v_num`).
- `ModelSummary`: Lightning's rich summary without the FLOPs column and `Total FLOPs: 0` (Lightning
  counts FLOPs only with an example input; the cost meter measures attention FLOPs per token).
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import ProcessingSpeedColumn
from lightning.pytorch.utilities.model_summary import get_human_readable_count

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
# Messages of the frameworks that tell a user of attnlab nothing they can act on.
NOISE_LOGS = (
    "💡 Tip:",  # Lightning advertising its cloud logger
    "Trainer already configured with model summary callbacks",  # ours: attnlab.console.ModelSummary
)
NOISE_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning calling a deprecated torch API
    r"Checkpoint directory .* exists and is not empty",  # a resumed run writes into its own directory
    # continuing a time-cut run with trainer.max_time=null drops its Timer on purpose (docs/runs.md, budgets)
    r"Be aware that when using `ckpt_path`, .* Please add the following callbacks: \['Timer'\]\.?$",
    # Lightning counts log_every_n_steps over the whole run (global steps), so a short epoch still logs;
    # the warning assumes epoch-based runs and tells a step-based one nothing
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE_LOGS)


def quiet_frameworks() -> None:
    """One handler per log line (Hydra's), and no framework noise. Call once Hydra has set up logging."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()  # Lightning adds its own console handler at import time
        logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropNoise) for f in rank_zero.filters):
        rank_zero.addFilter(_DropNoise())
    drop_framework_warnings()


def drop_framework_warnings() -> None:
    """Ignore NOISE_WARNINGS (also for `attnlab.run.train.run` called in-process: tests, notebooks)."""
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


class _SpeedColumn(ProcessingSpeedColumn):
    """Batches per second; the average over the task when rich has too few samples for a rate."""

    def render(self, task: Any) -> Any:
        from rich.text import Text

        speed = task.finished_speed or task.speed
        if speed is None and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(f"{speed:>.2f}it/s" if speed is not None else "", style=self.style)


# Where the console is a file or a pipe (a log, a CI job), rich cannot ask its width and assumes 80
# columns: the bar leaves ~18 for the metrics, which wrap mid-metric. A file has no width: one line.
PIPE_WIDTH = 250


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar for step-based runs (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("console_kwargs") is None and not sys.stdout.isatty():
            kwargs["console_kwargs"] = {"width": PIPE_WIDTH}
        super().__init__(*args, **kwargs)

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's run id: not a metric (results.json and wandb name the run)
        return metrics

    def configure_columns(self, trainer: Any) -> list:
        columns = super().configure_columns(trainer)
        return [
            _SpeedColumn(style=self.theme.processing_speed) if isinstance(c, ProcessingSpeedColumn) else c
            for c in columns
        ]

    def _get_train_description(self, current_epoch: int) -> str:
        # Counted from 1, as wandb's `epoch` ends: after the 4th epoch (index 3) both say 4.
        max_epochs = self.trainer.max_epochs
        description = f"Epoch {current_epoch + 1}" + (
            f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
        )
        return f"{description:{len(self.validation_description)}}"  # as wide as "Validation": no flicker


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary, without the FLOPs it does not count (see the module docstring)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name not in ("FLOPs", "Mode")]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, justify="right" if name.startswith("Params") else "left")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"[bold]Parameters[/]: {get_human_readable_count(int(trainable_parameters)).strip()} trainable, "
            f"{get_human_readable_count(int(frozen)).strip()} frozen, {model_size:,.2f} MB"
        )
