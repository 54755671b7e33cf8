"""A run's budget: the optimiser steps it was promised, the steps it got, and what stopped it.

    budget = {"steps_done": 460, "steps_planned": 2300, "stopped_by": "max_time"}

`stopped_by` is one of `attnlab.run.results.STOP_REASONS`; `attnlab.run.results.is_partial` tells a run that
got less than it was promised (a time guard, an interruption, a NaN) from one that ended as planned
(its step or epoch limit, or early stopping, which the run asked for). The run records it in
results.json (and in failed.json when it stops with an error), says so on its last console line, and
the report and the study leave partial runs out of orderings, selections and fronts.

Steps are the trainer's optimiser steps (`trainer.global_step`); a resumed run restores that count
from its checkpoint, so both figures cover the whole run, every segment together.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.utilities.exceptions import SIGTERMException

from attnlab.run.callbacks import NumericalError
from attnlab.run.results import PARTIAL_STOPS, STOP_REASONS


def planned_steps(
    max_steps: int | None, max_epochs: int | None, batches_per_epoch: float, accumulate: int = 1
) -> tuple[int | None, str]:
    """The steps a fit is promised and the limit that sets them ("max_steps" or "max_epochs").

    Lightning stops at whichever limit comes first; -1 (or None) means no limit of that kind. With
    neither (an endless fit that only a time guard or a signal ends) the count is None.
    """
    by_steps = max_steps if max_steps is not None and max_steps >= 0 else None
    by_epochs = None
    if max_epochs is not None and max_epochs >= 0 and math.isfinite(batches_per_epoch):
        by_epochs = math.ceil(batches_per_epoch / max(1, accumulate)) * max_epochs
    if by_steps is not None and (by_epochs is None or by_steps <= by_epochs):
        return by_steps, "max_steps"
    return by_epochs, "max_epochs"


def stop_reason(
    trainer: L.Trainer, steps_done: int, planned: int | None, limit: str, error: BaseException | None
) -> str:
    """What ended the fit, one of STOP_REASONS; the checks go from the most to the least specific.

    A fit that reached its planned steps is complete whatever else fired at the same step. A callback
    other than EarlyStopping that sets `trainer.should_stop` is counted as early stopping: the run
    asked to stop.
    """
    if isinstance(error, NumericalError):
        return "non_finite"
    stopped = isinstance(error, SIGTERMException) or trainer.received_sigterm
    if stopped and (planned is None or steps_done < planned):
        return "interrupted"
    if planned is not None and steps_done >= planned:
        return limit
    early = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    if early is not None and early.stopping_reason == EarlyStoppingReason.NON_FINITE_METRIC:
        return "non_finite"  # the monitored validation metric became NaN/Inf: the model diverged
    if early is not None and early.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
        return "early_stopping"
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None and remaining <= 0:
        return "max_time"
    if limit == "max_epochs" and trainer.current_epoch >= (trainer.max_epochs or 0):
        return "max_epochs"  # every epoch ran, with fewer batches than counted (e.g. a shrinking loader)
    return "early_stopping"


def run_budget(trainer: L.Trainer, error: BaseException | None = None) -> dict[str, Any]:
    """{steps_done, steps_planned, stopped_by} of a fit that has returned (or raised `error`)."""
    steps_done = int(trainer.global_step)
    planned, limit = planned_steps(
        trainer.max_steps,
        trainer.max_epochs,
        float(trainer.num_training_batches),
        int(trainer.accumulate_grad_batches),
    )
    reason = stop_reason(trainer, steps_done, planned, limit, error)
    assert reason in STOP_REASONS, reason
    return {"steps_done": steps_done, "steps_planned": planned, "stopped_by": reason}


WHAT_STOPPED = {
    "max_time": "trainer.max_time",
    "interrupted": "an interruption (SIGTERM or Ctrl-C)",
    "non_finite": "a non-finite loss, gradient or validation metric",
    "early_stopping": "early stopping (callbacks.early_stopping)",
}


def what_to_do(reason: str, run_dir: str | Path | None) -> str:
    """How to get the missing steps. A time-cut run wrote results.json, so `ckpt_path=last` would leave
    it alone (finished runs are never rewritten): its last checkpoint starts a new run that continues."""
    if reason == "interrupted":
        return "resume it with the same command plus ckpt_path=last"
    if reason == "non_finite":
        return "lower task.module.lr, keep trainer.gradient_clip_val, or use trainer.precision=32-true"
    last = Path(run_dir) / "checkpoints" / "last.ckpt" if run_dir is not None else None
    if last is not None and last.exists():
        return f"to train the missing steps: the same command plus trainer.max_time=null ckpt_path={last}"
    return "rerun with trainer.max_time=null (or a longer one)"


def budget_line(budget: dict[str, Any], run_dir: str | Path | None = None) -> str | None:
    """The console's last word on a run that stopped before its planned steps, else None.

    A partial run gets a warning with what to do; early stopping, a planned end, says so in one line.
    """
    done, planned, reason = budget["steps_done"], budget["steps_planned"], budget["stopped_by"]
    if planned is not None and done >= planned:
        return None
    of = f"at step {done} of {planned} ({done / planned:.0%})" if planned else f"at step {done}"
    what = WHAT_STOPPED.get(reason, reason)
    if reason in PARTIAL_STOPS:
        return (
            f"budget: stopped by {what} {of}: this result is partial (budget.stopped_by={reason}); "
            f"report and study leave it out of rankings; {what_to_do(reason, run_dir)}"
        )
    return f"budget: stopped by {what} {of}, as configured: the result is complete"


def basis_text(
    budget: dict[str, Any],
    *,
    seed: Any,
    batch: int | None = None,
    lr: float | None = None,
    checkpoint: str | None = None,
) -> str:
    """What a run's test figure stands on, printed beside it on its last line: a figure about accuracy is
    read with its seed, its budget and its tuning, e.g. `seed 0; 400/400 steps of batch 64 (max_steps);
    lr 0.003 as set, not tuned; weights of the best val/acc`. `batch`: examples per optimiser step;
    `checkpoint`: the monitored metric whose best checkpoint was tested (None: the last weights)."""
    done, planned, reason = budget["steps_done"], budget["steps_planned"], budget["stopped_by"]
    steps = f"{done}/{planned} steps" if planned else f"{done} steps"
    if batch:
        steps += f" of batch {batch}"
    steps += f" ({reason}{': partial' if reason in PARTIAL_STOPS else ''})"
    parts = [f"seed {seed}", steps]
    if lr is not None:
        parts.append(f"lr {lr:g} as set, not tuned")  # a study's or sweep's selection is theirs to print
    parts.append(f"weights of the best {checkpoint}" if checkpoint else "the last weights")
    return "; ".join(parts)
