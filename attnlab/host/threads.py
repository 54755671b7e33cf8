"""CPU threads for training: as many as this process may use, and OpenMP threads that do not spin.

On a machine whose cores are shared (a workstation running a sweep, a cluster node, other users),
two things make a CPU run collapse rather than slow down:

- OpenMP busy-waiting. Between parallel regions PyTorch's OpenMP threads spin, waiting for work. When
  another process holds one of the cores, the spinning threads and the descheduled one wait on each
  other at every barrier: on 2 shared cores a training step of the default config took seconds with
  spinning threads and a tenth of that with passive ones (docs/runs.md has the figures). The runtime
  reads its wait policy once, when it starts (when torch is imported), so `prefer_passive_openmp()`
  runs at `import attnlab`, before attnlab imports torch: OMP_WAIT_POLICY=PASSIVE (GNU and LLVM
  OpenMP) and KMP_BLOCKTIME=0 (Intel OpenMP) unless the user has set them.
- More threads than cores. `threads=auto` (the default) takes the fewest cores any of these allots:
  the CPU affinity of the process (taskset, cgroups/cpusets, SLURM's binding), SLURM_CPUS_PER_TASK,
  and OMP_NUM_THREADS (set by the user, or by a launcher: Hydra's joblib launcher gives each of its
  n_jobs workers cores // n_jobs). `threads=N` sets N.

The run logs what it chose and why: `threads: 2 (CPU affinity: 2 cores; OpenMP waits passively)`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PASSIVE_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
_too_late = False  # set when torch (so its OpenMP runtime) was imported before attnlab


def prefer_passive_openmp() -> None:
    """Default OpenMP threads to sleep, not spin, when idle. Effective only before torch is imported."""
    global _too_late
    for name, value in PASSIVE_OPENMP.items():
        if name not in os.environ:
            os.environ[name] = value  # also inherited by the processes this one starts (DDP, workers)
            _too_late = _too_late or "torch" in sys.modules


def openmp_wait_policy() -> str:
    """How PyTorch's OpenMP threads wait, in words (for the log)."""
    if _too_late:
        return "OpenMP wait policy: the runtime's default, torch was imported before attnlab"
    policy = os.environ.get("OMP_WAIT_POLICY", "").upper()
    if policy == "PASSIVE":
        return "OpenMP waits passively"
    return f"OpenMP wait policy {policy or 'default'}; OMP_WAIT_POLICY=PASSIVE suits shared cores"


def available_cores() -> tuple[int, str]:
    """The fewest cores any allotment gives this process, and which allotment that is."""
    try:
        allotted = [(len(os.sched_getaffinity(0)), "CPU affinity")]
    except AttributeError:  # macOS, Windows: no affinity API
        allotted = [(os.cpu_count() or 1, "CPU count")]
    for variable in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            allotted.append((int(value), variable))
    cores, source = min(allotted, key=lambda item: item[0])
    return cores, f"{source}: {cores} core{'s' if cores > 1 else ''}"


def choose_threads(setting: int | str) -> tuple[int, str]:
    """(threads, why) for `threads=auto` or `threads=N`."""
    from attnlab.errors import ConfigError

    if setting == "auto":
        return available_cores()
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(
            f"threads={setting!r}: give auto (the cores this process may use) or a number >= 1, e.g. threads=2"
        )
    return setting, f"threads={setting}"


def check_threads(setting: int | str | None, key: str = "threads") -> None:
    """A thread count above the cores this process may use is refused before anything starts: past
    them threads only wait on each other, and far past them (threads=1000) OpenMP fails to create
    them with a multi-line libgomp error inside the first parallel region."""
    from attnlab.errors import ConfigError

    if setting is None or setting == "auto" or isinstance(setting, bool) or not isinstance(setting, int):
        return
    cores, why = available_cores()
    if setting > cores:
        raise ConfigError(
            f"{key}={setting} is more than the {cores} core{'s' if cores > 1 else ''} this process may use "
            f"({why}); set {key}=auto or {key}=<n> with n <= {cores}"
        )


@contextmanager
def training_threads(setting: int | str) -> Iterator[str]:
    """Within the block torch uses the chosen number of intra-op threads (restored after). Yields
    the line to log."""
    import torch

    threads, why = choose_threads(setting)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield f"threads: {threads} ({why}; {openmp_wait_policy()})"
    finally:
        torch.set_num_threads(previous)
