"""A run's budget: steps done, steps planned and what stopped it, in results.json, failed.json, the
wandb summary and the console's last line (attnlab/run/budget.py)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
from helpers import compose_run, run_cli
from lightning.pytorch.utilities.exceptions import SIGTERMException

from attnlab.run.budget import basis_text, budget_line, planned_steps, stop_reason
from attnlab.run.callbacks import NumericalError
from attnlab.run.results import RESULTS_KEYS, is_partial, read_failure, write_failure
from attnlab.run.train import log_summary, run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "logger=none",
    "task.data.batch_size=8",
    "task.data.limit.train=64",
    "task.data.limit.validation=16",
    "task.data.limit.test=16",
]


class SleepEachStep(L.Callback):
    """Makes each training step take `seconds` longer: a run slow enough for a one-second max_time."""

    def __init__(self, seconds: float = 0.4):
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)


class TermAtStep(L.Callback):
    """Raises Lightning's SIGTERM flag after step `step`, as the signal handler would (no real signal)."""

    def __init__(self, step: int = 3):
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.global_step == self.step:
            trainer._signal_connector.received_sigterm = True


def budget_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("budget: ")]


# ---- the arithmetic ---------------------------------------------------------------------------------
def test_planned_steps_is_the_first_limit_the_trainer_reaches():
    assert planned_steps(1500, -1, 8.0) == (1500, "max_steps")  # step-based (the default trainer)
    assert planned_steps(-1, 3, 8.0) == (24, "max_epochs")
    assert planned_steps(-1, 3, 9.0, accumulate=2) == (15, "max_epochs")  # ceil(9 / 2) optimiser steps
    assert planned_steps(100, 3, 8.0) == (24, "max_epochs")  # 3 epochs of 8 come first
    assert planned_steps(20, 3, 8.0) == (20, "max_steps")
    assert planned_steps(24, 3, 8.0) == (24, "max_steps")  # a tie: the step limit
    assert planned_steps(-1, -1, 8.0) == (None, "max_epochs")  # endless: only a guard or a signal ends it
    assert planned_steps(50, 2, float("inf")) == (50, "max_steps")  # an iterable dataset: epochs unknown


def fake_trainer(*callbacks, sigterm: bool = False) -> SimpleNamespace:
    """What stop_reason reads of a trainer after its fit."""
    return SimpleNamespace(
        received_sigterm=sigterm, callbacks=list(callbacks), current_epoch=0, max_epochs=-1
    )


def test_stop_reason_reads_the_callbacks_and_a_reached_budget_wins():
    from lightning.pytorch.callbacks import EarlyStopping, Timer
    from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

    timer = Timer(duration="00:00:00:01")
    timer._offset = 5.0  # 5 s of training restored from a checkpoint: past the 1 s limit
    early = EarlyStopping(monitor="val/acc")
    assert stop_reason(fake_trainer(timer), 460, 2300, "max_steps", None) == "max_time"
    assert stop_reason(fake_trainer(timer), 2300, 2300, "max_steps", None) == "max_steps"  # it got them all
    assert (
        stop_reason(fake_trainer(Timer(duration="01:00:00:00")), 2300, 2300, "max_steps", None) == "max_steps"
    )
    assert stop_reason(fake_trainer(timer, sigterm=True), 460, 2300, "max_steps", None) == "interrupted"
    assert stop_reason(fake_trainer(sigterm=True), 2300, 2300, "max_steps", None) == "max_steps"
    early.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert stop_reason(fake_trainer(early), 400, 2300, "max_steps", None) == "early_stopping"
    early.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC  # val metric NaN: the model diverged
    assert stop_reason(fake_trainer(early), 400, 2300, "max_steps", None) == "non_finite"
    assert stop_reason(fake_trainer(), 10, 24, "max_epochs", NumericalError("nan")) == "non_finite"
    assert stop_reason(fake_trainer(), 10, None, "max_epochs", SIGTERMException()) == "interrupted"


def test_the_console_line_says_partial_with_what_to_do_and_nothing_for_a_complete_run(tmp_path):
    assert budget_line({"steps_done": 2300, "steps_planned": 2300, "stopped_by": "max_steps"}) is None
    cut = {"steps_done": 460, "steps_planned": 2300, "stopped_by": "max_time"}
    line = budget_line(cut, tmp_path)
    assert line.startswith(
        "budget: stopped by trainer.max_time at step 460 of 2300 (20%): this result is partial"
    )
    assert "rerun with trainer.max_time=null" in line and "\n" not in line
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").touch()  # with a checkpoint: continue from it in a new run
    assert f"trainer.max_time=null ckpt_path={tmp_path}/checkpoints/last.ckpt" in budget_line(cut, tmp_path)
    interrupted = budget_line({"steps_done": 3, "steps_planned": 10, "stopped_by": "interrupted"})
    assert "partial" in interrupted and "ckpt_path=last" in interrupted
    early = budget_line({"steps_done": 4, "steps_planned": 50, "stopped_by": "early_stopping"})
    assert early.startswith("budget: stopped by early stopping") and "complete" in early
    assert "partial" not in early


def test_a_figure_is_printed_with_its_seed_budget_tuning_and_weights():
    cut = {"steps_done": 460, "steps_planned": 2300, "stopped_by": "max_time"}
    assert basis_text(cut, seed=3, batch=64, lr=3e-3, checkpoint="val/acc") == (
        "seed 3; 460/2300 steps of batch 64 (max_time: partial); lr 0.003 as set, not tuned; "
        "weights of the best val/acc"
    )
    unplanned = {"steps_done": 16, "steps_planned": None, "stopped_by": "early_stopping"}
    assert basis_text(unplanned, seed=0) == "seed 0; 16 steps (early_stopping); the last weights"


def test_the_wandb_summary_holds_the_budget():
    summary: dict = {}
    logger = SimpleNamespace(experiment=SimpleNamespace(summary=summary))
    budget = {"steps_done": 460, "steps_planned": 2300, "stopped_by": "max_time"}
    log_summary(logger, {"cost": {}, "attention": {}, "metrics": {}, "parameters": 1, "budget": budget})
    assert summary["budget/steps_done"] == 460 and summary["budget/steps_planned"] == 2300
    assert summary["budget/stopped_by"] == "max_time"


# ---- end to end -------------------------------------------------------------------------------------
def test_a_run_that_gets_its_steps_records_max_steps_and_says_nothing(tmp_path, caplog):
    cfg = compose_run(tmp_path, [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2"])
    with caplog.at_level(logging.INFO):
        results = run(cfg)
    saved = json.loads((Path(cfg.paths.run_dir) / "results.json").read_text())
    assert saved["budget"] == {"steps_done": 4, "steps_planned": 4, "stopped_by": "max_steps"}
    assert list(saved)[: len(RESULTS_KEYS)] == list(RESULTS_KEYS) and results["budget"] == saved["budget"]
    assert not is_partial(saved) and not budget_lines(caplog)


def test_the_runs_figure_line_carries_its_seed_budget_and_learning_rate(tmp_path, caplog):
    """The last figure a run prints stands beside what it rests on: batch = examples per optimiser step."""
    overrides = ["trainer.max_steps=4", "trainer.val_check_interval=2", "seed=7"]
    cfg = compose_run(tmp_path, [*TINY, *overrides, "trainer.accumulate_grad_batches=2"])
    with caplog.at_level(logging.INFO):
        run(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "  |  results: " in r.getMessage()]
    assert line.startswith(f"{cfg.task.primary_metric} = ")
    assert (
        f"  |  seed 7; 4/4 steps of batch 16 (max_steps); lr {cfg.task.module.lr:g} as set, not tuned; "
        f"weights of the best {cfg.task.monitor}  |  results: "
    ) in line


def test_an_epoch_based_run_plans_epochs_times_batches(tmp_path):
    cfg = compose_run(
        tmp_path, [*TINY, "trainer.max_steps=-1", "trainer.max_epochs=2", "trainer.val_check_interval=4"]
    )
    results = run(cfg)  # 64 rows in batches of 8: 8 steps an epoch
    assert results["budget"] == {"steps_done": 16, "steps_planned": 16, "stopped_by": "max_epochs"}


def test_max_time_records_a_partial_run_and_warns_on_the_last_line(tmp_path, caplog):
    cfg = compose_run(
        tmp_path,
        [
            *TINY,
            "trainer.max_steps=50",
            "trainer.val_check_interval=25",
            "trainer.max_time=00:00:00:01",
            "+callbacks.slow._target_=test_budget.SleepEachStep",  # 0.4 s a step: the second reaches 1 s
        ],
    )
    with caplog.at_level(logging.INFO):
        results = run(cfg)
    budget = json.loads((Path(cfg.paths.run_dir) / "results.json").read_text())["budget"]
    assert budget["stopped_by"] == "max_time" and budget["steps_planned"] == 50
    assert 1 <= budget["steps_done"] < 50 and is_partial(results)
    assert caplog.records[-1].levelno == logging.WARNING
    line = caplog.records[-1].getMessage()  # the run's last word
    assert line.startswith(f"budget: stopped by trainer.max_time at step {budget['steps_done']} of 50")
    assert "this result is partial" in line and "trainer.max_time=null" in line


def test_early_stopping_is_a_planned_end_that_still_says_so(tmp_path, caplog):
    cfg = compose_run(
        tmp_path,
        [
            *TINY,
            "trainer.max_steps=50",
            "trainer.val_check_interval=2",
            "callbacks.early_stopping.patience=1",
            "+callbacks.early_stopping.min_delta=10",  # no change counts as progress: stops at the 2nd check
        ],
    )
    with caplog.at_level(logging.INFO):
        results = run(cfg)
    assert results["budget"] == {"steps_done": 4, "steps_planned": 50, "stopped_by": "early_stopping"}
    assert not is_partial(results)
    (line,) = budget_lines(caplog)
    assert line.levelno == logging.INFO and "at step 4 of 50" in line.getMessage()
    assert "complete" in line.getMessage()


def test_an_interrupted_run_records_its_budget_in_failed_json_and_resumes_to_the_whole_budget(
    tmp_path, caplog
):
    stop = [*TINY, "trainer.max_steps=6", "trainer.val_check_interval=2"]
    cfg = compose_run(tmp_path, [*stop, "+callbacks.term._target_=test_budget.TermAtStep"])
    with caplog.at_level(logging.INFO), pytest.raises(SIGTERMException) as raised:
        run(cfg)
    assert raised.value.budget == {"steps_done": 3, "steps_planned": 6, "stopped_by": "interrupted"}
    assert "budget: stopped by an interruption (SIGTERM or Ctrl-C) at step 3 of 6" in caplog.text
    run_dir = Path(cfg.paths.run_dir)
    write_failure(run_dir, raised.value, "interrupted")  # what `python -m attnlab` does with it
    assert read_failure(run_dir)["budget"] == raised.value.budget

    resumed = run(
        compose_run(tmp_path, [*stop, "ckpt_path=last"])
    )  # the same directory, GracefulStop's last.ckpt
    assert resumed["budget"] == {
        "steps_done": 6,
        "steps_planned": 6,
        "stopped_by": "max_steps",
    }  # the whole run
    assert read_failure(run_dir) is None  # results.json replaced the attempt's failed.json


def test_a_nan_records_non_finite_in_failed_json(tmp_path):
    cfg = compose_run(
        tmp_path,
        [
            *TINY,
            "trainer.max_steps=8",
            "trainer.val_check_interval=4",
            "callbacks.finite.inject_nan_at_step=3",
        ],
    )
    with pytest.raises(NumericalError) as raised:
        run(cfg)
    assert raised.value.budget == {"steps_done": 2, "steps_planned": 8, "stopped_by": "non_finite"}
    write_failure(Path(cfg.paths.run_dir), raised.value, str(raised.value))
    assert read_failure(cfg.paths.run_dir)["budget"] == raised.value.budget


@pytest.mark.slow
def test_the_command_line_ends_with_the_budget_warning(tmp_path):
    tests = Path(__file__).resolve().parent
    done = run_cli(
        [
            *TINY,
            f"paths.data_cache={tmp_path / 'cache'}",
            "callbacks.progress=null",
            "trainer.enable_progress_bar=false",
            "trainer.max_steps=50",
            "trainer.val_check_interval=25",
            "trainer.max_time=00:00:00:01",
            "+callbacks.slow._target_=test_budget.SleepEachStep",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{tests}:{tests.parent}"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    (results,) = tmp_path.rglob("results.json")
    budget = json.loads(results.read_text())["budget"]
    assert budget["stopped_by"] == "max_time" and budget["steps_done"] < 50
    assert any("budget: stopped by trainer.max_time" in line for line in last[-2:]), last[-5:]


def test_continuing_a_time_cut_run_without_its_timer_raises_no_warning():
    import warnings

    from lightning.pytorch.utilities.rank_zero import rank_zero_warn

    from attnlab.console import quiet_frameworks

    lightning_says = (
        "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided "
        "during `Trainer` instantiation. Please add the following callbacks: {}."
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_frameworks()
        rank_zero_warn(lightning_says.format(["Timer"]))  # the suggested command drops max_time on purpose
        rank_zero_warn(lightning_says.format(["Timer", "MyCallback"]))  # a callback the user forgot: kept
    assert [str(w.message) for w in caught] == [lightning_says.format(["Timer", "MyCallback"])]
