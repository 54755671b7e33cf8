"""The validation schedule a run gets: a run shorter than its validation interval validates at its
last step instead (the best checkpoint, early stopping and the test metrics all need one validation).

Applied once, in `attnlab.run.train.run`, where the trainer is built: the single run, every member of a
sweep (any launcher), every study cell and every DDP rank go through it.
"""

from __future__ import annotations

import logging

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def short_run_interval(trainer: DictConfig) -> int | None:
    """The interval (trainer.max_steps) a step-counted run needs when it ends before its first
    validation (`0 < max_steps < val_check_interval`); None when the configured schedule validates."""
    interval, steps = trainer.get("val_check_interval"), trainer.get("max_steps")
    counted_in_steps = isinstance(interval, int) and not isinstance(interval, bool)
    if (
        counted_in_steps
        and isinstance(steps, int)
        and 0 < steps < interval
        and trainer.get("check_val_every_n_epoch") is None  # else Lightning counts within an epoch
        and not trainer.get("fast_dev_run")
    ):
        return steps
    return None


def validate_within_budget(cfg: DictConfig) -> None:
    """Set `trainer.val_check_interval` to `trainer.max_steps` when the run would otherwise never
    validate, and say so in one line (rank zero only: DDP ranks each apply it)."""
    steps = short_run_interval(cfg.trainer)
    if steps is None:
        return
    interval = cfg.trainer.val_check_interval
    cfg.trainer.val_check_interval = steps
    _say(
        f"trainer.max_steps={steps} is below trainer.val_check_interval={interval}: "
        f"validating at the last step (step {steps})"
    )


@rank_zero_only
def _say(message: str) -> None:
    log.info(message)
