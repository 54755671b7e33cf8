"""One run per run directory (attnlab.run.lock): a second run given a directory another live run holds
refuses with one line and writes nothing there; the lock goes with its run however it ends, and a
lock left by a killed process is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, compose_run, run_cli

from attnlab.errors import DataError
from attnlab.run.lock import LOCK_FILE, RunDirectoryInUse, acquire, holding, release
from attnlab.run.train import run

HOLD = "import sys, time; from attnlab.run.lock import acquire; acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)"


def hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow  # ~30 s on the 2-core machine: a holder process and a CLI run
def test_a_second_run_in_a_held_directory_refuses_and_a_killed_holder_is_taken_over(tmp_path):
    run_dir = tmp_path / "shared"
    holder = hold_in_another_process(run_dir)
    try:
        second = run_cli(["trainer=debug", "logger=none", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        assert second.returncode == 2, second.stderr[-3000:]
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"error: run directory {run_dir} is in use by another run (pid {holder.pid} ")
        assert "hydra.run.dir=<another>" in line
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # no run.log, .hydra, failed.json
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without cleaning up: its lock stays behind
        holder.wait()
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == holder.pid
    with holding(run_dir):  # a dead pid on this host: a stale lock, taken over
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (run_dir / LOCK_FILE).exists()


def test_the_lock_is_reentrant_and_released_when_the_run_fails(tmp_path):
    acquire(tmp_path)
    acquire(tmp_path)  # python -m attnlab takes it, then attnlab.run.train.run again
    release(tmp_path)
    assert (tmp_path / LOCK_FILE).exists()
    release(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()

    cfg = compose_run(tmp_path, ["logger=none", "trainer=debug", "task.data.source=files"])
    with pytest.raises(DataError):  # no data files given: fails inside the locked run
        run(cfg)
    assert not (Path(cfg.paths.run_dir) / LOCK_FILE).exists()


def test_an_in_process_run_refuses_a_directory_another_process_holds(tmp_path):
    cfg = compose_run(tmp_path, ["logger=none", "trainer=debug"])
    holder = hold_in_another_process(Path(cfg.paths.run_dir))
    try:
        with pytest.raises(RunDirectoryInUse, match=f"in use by another run \\(pid {holder.pid} "):
            run(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert not (Path(cfg.paths.run_dir) / "results.json").exists()


@pytest.mark.slow
def test_a_training_run_holds_its_directory_until_sigterm_ends_it(tmp_path):
    """Two real runs: the first trains (long budget) and holds the lock; the second starts and refuses;
    SIGTERM stops the first (checkpoint saved, exit 143) and its lock goes with it."""
    run_dir = tmp_path / "run"
    args = ["logger=none", "model.d_model=32", "trainer.max_steps=100000", "trainer.val_check_interval=5"]
    args += ["callbacks.early_stopping=null"]  # it trains until stopped
    args.append(f"hydra.run.dir={run_dir}")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-m", "attnlab", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoints").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(1)  # the first run has started training (checkpoints/ appears at the first validation)
        assert first.poll() is None and (run_dir / LOCK_FILE).exists()
        second = run_cli(["trainer=debug", "logger=none", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        assert second.returncode == 2 and f"pid {first.pid} " in second.stderr, second.stderr[-2000:]
        assert not (run_dir / "failed.json").exists()
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, output[-3000:]
    assert "checkpoint saved" in output and (run_dir / "checkpoints" / "last.ckpt").exists()
    assert not (run_dir / LOCK_FILE).exists()
