"""SIGTERM and Ctrl-C honoured within seconds in every phase of a run, not only between training steps.

`install()` runs first thing in `python -m attnlab`. From then on:

- during a training step, Lightning's own handler (which calls this one too) only sets its flag, and
  the run stops at the step's end with a checkpoint (attnlab.run.callbacks.GracefulStop): a step is
  never cut in half;
- in every other phase (composing the config, preparing the data, building the model, validation,
  testing, beam search) the signal raises `Interrupted` where the main thread is, and the app prints one
  line naming the phase and exits 143 (SIGTERM) or 130 (Ctrl-C); inside `trainer.fit` (validation)
  it raises Lightning's SIGTERMException instead, so GracefulStop still saves `last.ckpt`;
- a main thread stuck in one long C call (a huge allocation, a kernel) cannot run a Python handler,
  so a watchdog thread, woken by the signal itself (`signal.set_wakeup_fd`), ends the process after
  GRACE_S seconds with the same line and status; it stands down inside a Lightning trainer call
  (whose handler wraps this one) and under GracefulStop's Ctrl-C, where a checkpoint may be written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

EXIT_STATUS = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}  # 143, 130
NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}
GRACE_S = 5.0  # how long the main thread has to act on a signal before the watchdog ends the process


class Interrupted(SystemExit):
    """Raised by the signal handler outside a training step; its code is the exit status."""

    def __init__(self, signum: int, phase: str):
        super().__init__(EXIT_STATUS[signum])
        self.signum, self.phase = signum, phase

    def line(self) -> str:
        return f"error: interrupted ({NAMES[self.signum]}) while {self.phase}; nothing more was written"


class _State:
    phase = "starting"  # what the run is doing, in words (set_phase)
    in_fit = False  # inside trainer.fit: validation stops through Lightning's SIGTERMException
    in_step = False  # inside a training step: the signal is Lightning's to act on at the step's end
    installed = False


def set_phase(phase: str) -> None:
    """What the run does now, for the interruption's message ('preparing the data', ...)."""
    _State.phase = phase


def set_training(*, in_fit: bool | None = None, in_step: bool | None = None) -> None:
    """Called by GracefulStop around trainer.fit and around each training step."""
    if in_fit is not None:
        _State.in_fit = in_fit
    if in_step is not None:
        _State.in_step = in_step


def _handler(signum: int, frame: Any) -> None:
    if _State.in_step:  # Lightning's flag (set by its own handler, which called this one) ends the step
        return
    if _State.in_fit and signum == signal.SIGTERM:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        raise SIGTERMException  # GracefulStop saves last.ckpt; the app says how to resume
    raise Interrupted(signum, _State.phase)


def _watchdog(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        # Only signals this module's handler owns: inside a Lightning trainer call (its handler wraps
        # ours) or GracefulStop's Ctrl-C, the stop is theirs and may be writing a checkpoint.
        signums = [s for s in data if s in EXIT_STATUS and signal.getsignal(s) is _handler]
        if not signums:
            continue
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if _State.in_step or _State.in_fit:  # Lightning and GracefulStop are stopping the run
                break
        else:
            stop = Interrupted(signums[-1], _State.phase)
            os.write(2, f"{stop.line()} (forced after {GRACE_S:g} s in a long call)\n".encode())
            os._exit(stop.code)


def install() -> None:
    """Handle SIGTERM and SIGINT from now on (main thread only; once per process)."""
    if _State.installed or threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    os.register_at_fork(after_in_child=_forget_in_child)  # DataLoader workers: their signals are theirs
    threading.Thread(target=_watchdog, args=(read_fd,), name="attnlab-interrupts", daemon=True).start()
    for signum in EXIT_STATUS:
        signal.signal(signum, _handler)
    _State.installed = True


def _forget_in_child() -> None:
    if _State.installed:
        with contextlib.suppress(ValueError):  # forked from another thread than the main one
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what a child had before install()
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _State.installed = False


def report(stop: Interrupted) -> None:
    """Print the interruption's one line and exit with its status, now: the interpreter's own
    shutdown (collecting a million rows of prepared data) took longer than the stop itself."""
    import logging

    print(stop.line(), file=sys.stderr)
    logging.shutdown()  # run.log complete
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(stop.code)
