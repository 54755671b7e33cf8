"""Interrupted runs lose nothing: a resumed run ends with the same metrics as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import compose_run, read_wandb_offline_run, run_cli

from attnlab.run.results import read_failure, write_failure
from attnlab.run.train import run

# 48 training rows in batches of 8: 6 batches per epoch; validation (and last.ckpt) every 4 steps, so
# checkpoints land mid-epoch and at epoch ends.
SETUP = [
    "logger=csv",
    "trainer.max_steps=24",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "task.data.batch_size=8",
    "task.data.limit.train=48",
    "task.data.limit.validation=16",
    "task.data.limit.test=16",
    "callbacks.early_stopping=null",
]


class Crash(Exception):
    pass


class CrashAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Crash(f"simulated crash before step {self.step + 1}")


def quality(results: dict) -> dict:
    return {k: v for k, v in results["metrics"].items() if k.startswith(("test/", "val/"))}


# mid-epoch (last.ckpt at step 8) and at an epoch end (step 12)
@pytest.mark.parametrize("crash_step", [10, pytest.param(12, marks=pytest.mark.slow)])
def test_crash_and_resume_matches_the_uninterrupted_run(tmp_path, monkeypatch, crash_step):
    monkeypatch.setenv("WANDB_MODE", "offline")
    setup = [*SETUP, "logger=wandb", "callbacks.cost.warmup_steps=0"]
    reference = run(compose_run(tmp_path / "ref", setup))

    cfg = compose_run(tmp_path / "crash", setup)
    from attnlab.run import train

    original = train.instantiate

    def with_crash(config, *args, **kwargs):  # add the crashing callback to the Trainer
        if "callbacks" in kwargs and config is cfg.trainer:
            kwargs["callbacks"] = [*kwargs["callbacks"], CrashAt(crash_step)]
        return original(config, *args, **kwargs)

    monkeypatch.setattr(train, "instantiate", with_crash)
    with pytest.raises(Crash) as crash:
        run(cfg)
    monkeypatch.setattr(train, "instantiate", original)
    run_dir = Path(cfg.paths.run_dir)
    write_failure(run_dir, crash.value, str(crash.value))  # what `python -m attnlab` records
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == crash_step // 4 * 4
    assert not (run_dir / "results.json").exists()

    resumed = run(compose_run(tmp_path / "crash", [*setup, "ckpt_path=last"]))
    assert quality(resumed) == pytest.approx(quality(reference), abs=1e-6)
    assert quality(resumed).keys() == quality(reference).keys() and "test/acc" in quality(resumed)
    assert not (run_dir / "failed.json").exists(), "a stale failed.json beside results.json"

    # one set of cost figures: FLOPs of the same first batch; every step timed once, over both segments
    cost, ref_cost = resumed["cost"], reference["cost"]
    assert cost["attention_flops_per_token"] == ref_cost["attention_flops_per_token"]
    assert (cost["segments"], ref_cost["segments"]) == (2, 1)
    assert cost["timed_steps"] == ref_cost["timed_steps"] == 24  # warmup_steps=0: every step is timed
    assert timed_tokens(cost) == pytest.approx(timed_tokens(ref_cost), rel=1e-9)  # the same batches
    assert (cost["seq_len_mean"], cost["seq_len_max"]) == (ref_cost["seq_len_mean"], ref_cost["seq_len_max"])
    assert 0.2 < cost["train_tokens_per_s"] / ref_cost["train_tokens_per_s"] < 5  # timing on a shared machine

    # one wandb run: both segments' offline files carry the id stored in the run directory
    logs = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 2, logs
    ids = {read_wandb_offline_run(log)["run_id"] for log in logs}
    assert ids == {(run_dir / "wandb" / "run_id").read_text().strip()}


def timed_tokens(cost: dict) -> float:
    return cost["train_tokens_per_s"] * cost["step_time_s"] * cost["timed_steps"]


def test_a_finished_run_is_neither_rerun_nor_rewritten_by_ckpt_path_last(tmp_path):
    run_dir = tmp_path / "outputs" / "classify" / "multihead" / "2026-01-01_00-00-00"
    setup = [*SETUP, "logger=none", "trainer.max_steps=4", f"paths.run_dir={run_dir}"]
    run(compose_run(tmp_path, setup))
    results = run_dir / "results.json"
    before, mtime = results.read_bytes(), results.stat().st_mtime_ns

    again = run(compose_run(tmp_path, [*setup, "ckpt_path=last"]))  # in process: the results, untouched
    assert again == json.loads(before)
    assert (results.read_bytes(), results.stat().st_mtime_ns) == (before, mtime)

    # the command line: one line saying where the results are, exit 0, no new run directory
    done = run_cli([*CLI_SETUP, "logger=none", "trainer.max_steps=4", "ckpt_path=last"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "already finished" in lines[0], done.stderr
    assert str(results.relative_to(tmp_path)) in lines[0] and "ckpt_path=" in lines[0]
    # the figure with what it rests on, as the run's own last line printed it
    assert f"; {json.loads(before)['basis']}), nothing to resume" in lines[0]
    assert json.loads(before)["basis"].startswith("seed 0; 4/4 steps of batch ")
    assert (results.read_bytes(), results.stat().st_mtime_ns) == (before, mtime)
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]


def test_ckpt_path_last_without_a_checkpoint_is_a_clear_error(tmp_path):
    from attnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path=last but .* does not exist"):
        run(compose_run(tmp_path, [*SETUP, "ckpt_path=last"]))


CLI_SETUP = [
    *SETUP,
    "trainer.max_steps=60",
    "model.d_model=32",
    "model.heads=2",
    "model.encoder_layers=1",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
]


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [sys.executable, "-m", "attnlab", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_then_ckpt_path_last_matches_the_uninterrupted_run(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "kill").mkdir()
    ref = run_cli(CLI_SETUP, cwd=tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    proc = _popen(CLI_SETUP, cwd=tmp_path / "kill")
    try:
        _wait_for_glob(tmp_path / "kill", "outputs/classify/multihead/*/checkpoints/last.ckpt", proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
    (run_dir,) = (tmp_path / "kill").glob("outputs/classify/multihead/*")
    assert not (run_dir / "results.json").exists(), "the run finished before it was killed"
    resumed = run_cli([*CLI_SETUP, "ckpt_path=last"], cwd=tmp_path / "kill")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {Path('outputs/classify/multihead') / run_dir.name}" in resumed.stderr
    (expected,) = (tmp_path / "ref").glob("outputs/*/*/*/results.json")
    got = json.loads((run_dir / "results.json").read_text())
    assert quality(got) == pytest.approx(quality(json.loads(expected.read_text())), abs=1e-6)


def _wait_for_glob(root: Path, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> Path:
    start = time.monotonic()
    while True:
        found = list(root.glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() - start < timeout, "no checkpoint appeared"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_saves_last_ckpt_and_says_how_to_resume(tmp_path):
    proc = _popen([*CLI_SETUP, "trainer.max_steps=100000", "trainer.val_check_interval=1000"], cwd=tmp_path)
    try:
        _wait_for_glob(tmp_path, "outputs/classify/multihead/*/run.log", proc)
        time.sleep(8)  # into training
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]  # 128 + SIGTERM (issue 30: it was 130, Ctrl-C's status)
    assert "ckpt_path=last" in stderr and "Traceback" not in stderr
    (last,) = tmp_path.glob("outputs/classify/multihead/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] > 0
    assert not list(tmp_path.rglob("results.json"))
    budget = read_failure(last.parent.parent)["budget"]  # failed.json says how far the run got
    assert budget["stopped_by"] == "interrupted" and 0 < budget["steps_done"] < budget["steps_planned"]
    assert "budget: stopped by an interruption" in stdout + stderr
