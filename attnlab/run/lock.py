"""One run per run directory: a lock file held for the run's life.

Two runs given the same `hydra.run.dir` would otherwise overwrite or interleave each other's
results.json, run.log, checkpoints and wandb run. The first run creates `<run_dir>/run.lock`
(exclusively: O_EXCL) naming its pid and host; a second run refuses with one line, before it writes
anything. The lock is removed when its run ends, however it ends (a return, an exception, sys.exit,
SIGTERM through Lightning's handler); a lock left by a process that died without cleaning up (SIGKILL,
a power cut) names a pid that no longer runs on this host, and the next run takes it over.

Reentrant within a process: `python -m attnlab` takes the lock before Hydra touches the directory,
and `attnlab.run.train.run` finds it already its own. DDP ranks other than zero run in the same directory
under their rank zero's lock and take none.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from attnlab.errors import ConfigError

log = logging.getLogger(__name__)
LOCK_FILE = "run.lock"
_held: dict[Path, int] = {}  # run directory -> how many holders in this process


class RunDirectoryInUse(ConfigError):
    """Another live run holds the run directory (the message names it and the way out)."""


def _is_rank_zero() -> bool:
    """False in a DDP rank other than zero (Lightning sets these in the processes it launches; SLURM too)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value is not None:
            return value == "0"
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # being written right now, or not ours: treated as held


def acquire(run_dir: str | Path) -> None:
    """Take `run_dir`'s lock for this process, or raise RunDirectoryInUse (one line)."""
    run_dir = Path(run_dir).resolve()
    if not _is_rank_zero():
        return
    if run_dir in _held:
        _held[run_dir] += 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read(path)
            if owner.get("host") == record["host"] and isinstance(owner.get("pid"), int):
                if owner["pid"] == os.getpid():
                    _held[run_dir] = 1
                    return
                if not _alive(owner["pid"]):
                    log.info(
                        "run directory %s: its lock names pid %d, which has ended; taking it over",
                        run_dir,
                        owner["pid"],
                    )
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
            who = f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, since {owner.get('started', '?')}"
            raise RunDirectoryInUse(
                f"run directory {run_dir} is in use by another run ({who}); give this run its own directory "
                f"(hydra.run.dir=<another>) or wait for that run to end (remove {path} if it is gone)"
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        _held[run_dir] = 1
        atexit.register(_release_at_exit, run_dir)
        return
    raise RunDirectoryInUse(
        f"run directory {run_dir}: another run took its lock at the same time; start again"
    )


def release(run_dir: str | Path) -> None:
    """Drop one hold on `run_dir`'s lock; the last one removes the file."""
    run_dir = Path(run_dir).resolve()
    if run_dir not in _held:
        return
    _held[run_dir] -= 1
    if _held[run_dir] > 0:
        return
    del _held[run_dir]
    path = run_dir / LOCK_FILE
    if _read(path).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _release_at_exit(run_dir: Path) -> None:
    if run_dir in _held:
        _held[run_dir] = 1
        release(run_dir)


@contextlib.contextmanager
def holding(run_dir: str | Path) -> Iterator[None]:
    """`with holding(run_dir):` the lock for the block (reentrant)."""
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)
