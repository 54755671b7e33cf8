"""SIGTERM and Ctrl-C end a run within seconds in every phase (attnlab/run/interrupts.py), with one line
naming the phase and exit status 143 / 130; a training step still finishes and saves (test_resume.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from attnlab.run import interrupts
from attnlab.run.interrupts import Interrupted


@pytest.fixture
def state():
    saved = (interrupts._State.phase, interrupts._State.in_fit, interrupts._State.in_step)
    yield interrupts._State
    interrupts._State.phase, interrupts._State.in_fit, interrupts._State.in_step = saved


def test_outside_training_a_signal_stops_where_the_run_is(state):
    interrupts.set_phase("building the model")
    with pytest.raises(Interrupted) as stop:
        interrupts._handler(signal.SIGTERM, None)
    assert stop.value.code == 143
    assert (
        stop.value.line() == "error: interrupted (SIGTERM) while building the model; nothing more was written"
    )
    with pytest.raises(Interrupted) as stop:
        interrupts._handler(signal.SIGINT, None)
    assert stop.value.code == 130 and "(Ctrl-C)" in stop.value.line()


def test_a_training_step_is_never_cut_and_validation_stops_through_lightning(state):
    interrupts.set_training(in_fit=True, in_step=True)
    assert interrupts._handler(signal.SIGTERM, None) is None  # Lightning's flag ends the step
    interrupts.set_training(in_step=False)  # between steps (validation): GracefulStop saves last.ckpt
    with pytest.raises(SIGTERMException):
        interrupts._handler(signal.SIGTERM, None)


def _start(args: list[str], cwd: Path, run: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "attnlab", f"hydra.run.dir={run}", "logger=none", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _stop(proc: subprocess.Popen, signum: int, *, when: Path, timeout: float = 300) -> tuple[float, str]:
    """Send `signum` once `when` exists (plus a second); (seconds until the process exited, stderr)."""
    start = time.monotonic()
    while not when.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() - start < timeout, f"{when} never appeared"
        time.sleep(0.1)
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return time.monotonic() - sent, stderr


# A million ListOps rows: data preparation takes minutes, all in Python, after the run directory exists.
LONG_DATA = ["task.data.builtin.n_train=1000000"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")]
)
def test_a_signal_during_data_preparation_ends_the_run_in_seconds(tmp_path, signum, status, name):
    run = tmp_path / "run"
    proc = _start(LONG_DATA, tmp_path, run)
    took, stderr = _stop(proc, signum, when=run)
    assert proc.returncode == status, stderr[-3000:]
    assert took < 5, f"exited {took:.1f} s after {name}"
    assert f"error: interrupted ({name}) while preparing the data" in stderr
    assert "Traceback" not in stderr
    assert not list(run.rglob("results.json"))


@pytest.mark.slow
def test_a_main_thread_stuck_in_one_long_call_is_ended_by_the_watchdog(tmp_path):
    """The Python handler cannot run inside one long C call (here a 2^60 matrix power on one
    thread, as a huge model's initialisation would be): the watchdog ends the process."""
    program = (
        "import torch; from attnlab.run import interrupts; torch.set_num_threads(1); interrupts.install(); "
        "interrupts.set_phase('building the model'); open('ready', 'w').close(); "
        # ~60 products of 3000 x 3000 on one thread: minutes on any CPU (1200 x 1200 ended within the
        # grace period on a quiet machine, and the Python handler then stopped it instead)
        "torch.linalg.matrix_power(torch.rand(3000, 3000), 2**60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    took, stderr = _stop(proc, signal.SIGTERM, when=tmp_path / "ready")
    assert proc.returncode == 143, stderr[-3000:]
    assert "error: interrupted (SIGTERM) while building the model" in stderr and "forced after" in stderr
    assert took < interrupts.GRACE_S + 5, f"exited {took:.1f} s after SIGTERM"
