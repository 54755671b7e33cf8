"""A short run just works: `trainer.max_steps` below `trainer.val_check_interval` validates at the last
step (one info line says so) instead of being refused, in the app, a sweep on any launcher, the study
and DDP: attnlab.run.schedule, applied once where the trainer is built (attnlab.run.train.run).

This replaces the bad-input row `trainer=cpu trainer.max_steps=100` ("the run would never validate"),
which encoded the old refusal (issue 30, item 1)."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import compose_run, run_cli

from attnlab.run.schedule import short_run_interval
from attnlab.run.train import run

SMALL_DATA = ["task.data.limit.train=64", "task.data.limit.validation=32", "task.data.limit.test=32"]
NOTE = "validating at the last step"


def test_the_interval_is_moved_only_when_the_run_would_never_validate(tmp_path):
    def trainer(*overrides):
        return compose_run(tmp_path, ["trainer=cpu", *overrides]).trainer

    assert short_run_interval(trainer("trainer.max_steps=5")) == 5  # default interval 250
    assert short_run_interval(trainer("trainer.max_steps=250")) is None  # validates at step 250
    assert short_run_interval(trainer("trainer.max_steps=5", "trainer.val_check_interval=2")) is None
    assert short_run_interval(trainer("trainer.max_steps=5", "trainer.val_check_interval=0.5")) is None
    assert short_run_interval(trainer("trainer.max_steps=5", "trainer.check_val_every_n_epoch=1")) is None
    assert short_run_interval(trainer("trainer=debug")) is None  # fast_dev_run validates by itself


def test_a_run_shorter_than_its_validation_interval_validates_at_its_last_step(tmp_path, caplog):
    cfg = compose_run(tmp_path, ["logger=none", "trainer.max_steps=5", *SMALL_DATA])
    interval = cfg.trainer.val_check_interval
    assert interval > 5
    with caplog.at_level(logging.INFO, logger="attnlab.run.schedule"):
        results = run(cfg)
    notes = [r.getMessage() for r in caplog.records if NOTE in r.getMessage()]
    assert notes == [
        f"trainer.max_steps=5 is below trainer.val_check_interval={interval}: "
        "validating at the last step (step 5)"
    ]
    assert {"val/acc", "test/acc"} <= set(results["metrics"])
    assert results["best_checkpoint"].endswith("best.ckpt")
    assert results["config"]["trainer"]["val_check_interval"] == 5  # what the run did, recorded


def _ok(result) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    return output


@pytest.mark.slow
def test_cli_five_steps_exits_0_with_test_metrics(tmp_path):
    """The first command a user types: `python -m attnlab trainer.max_steps=5`, nothing else."""
    output = _ok(run_cli(["trainer.max_steps=5", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path))
    assert output.count(NOTE) == 1
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "test/acc" in results["metrics"] and "val/acc" in results["metrics"]


@pytest.mark.slow
def test_readme_ddp_command_with_three_steps(tmp_path):
    """docs: `python -m attnlab trainer=ddp trainer.accelerator=cpu trainer.devices=2` (conf/trainer/ddp.yaml)."""
    args = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=3"]
    output = _ok(run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=600))
    log = (tmp_path / "run" / "run.log").read_text()
    assert log.count(NOTE) == 1  # rank zero says it once
    assert "rank 1 of 2" in output
    assert "test/acc" in json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]


@pytest.mark.slow
def test_readme_joblib_sweep_with_three_steps(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    args = ["-m", "hydra/launcher=parallel", "attention=full,linear,performer,local", "trainer.max_steps=3"]
    _ok(run_cli([*args, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, timeout=900))
    found = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert [json.loads(p.read_text())["attention"]["name"] for p in found] == [
        "full",
        "linear",
        "performer",
        "local",
    ]
    assert all("test/acc" in json.loads(p.read_text())["metrics"] for p in found)


@pytest.mark.slow
def test_readme_study_with_three_steps(tmp_path):
    args = ["task=mqar", "variants=[multihead,linear]", "lengths=[64,256]", "trainer.max_steps=3"]
    output = _ok(
        run_cli([*args, f"out={tmp_path / 'study'}"], cwd=tmp_path, module="attnlab.study", timeout=900)
    )
    # task=mqar's study tunes the lr over 3 values with 2 seeds and adds its capacity point (48 pairs)
    # at N >= 256: 2 variants x (2 lengths + 1 capacity point) x 6 runs
    assert "study: 36/36 cells finished, 0 failed or missing" in output
