"""Run the cells that have no finished run, as ONE Hydra multirun of the app (never training here).

The multirun is `python -m attnlab -m ... +study_cell=<cell>,<cell>,...` in a child process, the
command a user would type: the app's own checks, plugins, failure records (a failing member writes
failed.json and the others go on) and sweep summary apply unchanged, and so does whichever
`hydra/launcher=` the overrides choose (local, joblib `parallel`, submitit `slurm`). A child process
also keeps Hydra's global state and the launchers' worker pools out of the study, which reads the
results back afterwards whatever the sweep's exit status.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attnlab.run.results import is_finished, read_failure, read_json, write_json_atomic
from attnlab.study.plan import CELL_GROUP, Cell, Study, override_key, shared_overrides, write_cell_configs

LAUNCHED_FILE = "launched.json"  # in the study directory: {cell: the overrides it was last run with}
INTERRUPTED = "SIGTERMException"  # failed.json's error of a run stopped by Ctrl-C/SIGTERM (attnlab.run.app)


@dataclass
class Todo:
    """The cells of a study by what their run directories hold."""

    finished: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)  # with the earlier attempt's message
    missing: list[Cell] = field(default_factory=list)
    resume: list[Cell] = field(default_factory=list)  # stopped (not failed) with a checkpoint: continue it

    @property
    def to_run(self) -> list[Cell]:
        return [c for c, _ in self.failed] + self.missing


def todo(study: Study) -> Todo:
    state = Todo()
    for cell in study.cells:
        run_dir = study.run_dir(cell)
        if is_finished(run_dir):
            state.finished.append(cell)
            continue
        record = read_failure(run_dir)
        if record is None:
            state.missing.append(cell)
        else:
            state.failed.append((cell, str(record.get("message", "")).splitlines()[0][:200]))
        stopped = record is None or record.get("error") == INTERRUPTED  # interrupted or killed, not an error
        if stopped and last_checkpoint(run_dir).exists():
            state.resume.append(cell)
    return state


def last_checkpoint(run_dir: Path) -> Path:
    """Where a run keeps its newest state (conf/callbacks/default.yaml; `ckpt_path=last` reads it)."""
    return run_dir / "checkpoints" / "last.ckpt"


def describe(study: Study, state: Todo) -> list[str]:
    """What the study is about to do, for the console."""
    cells = study.cells
    factors = [f"{len(study.variants)} variants", f"{len(study.lengths)} lengths"]
    factors += [f"{len(study.grid_points)} grid points"] if study.grid else []
    factors += [f"{len(study.seeds)} seeds"]
    factors += [f"{len(study.tune_points)} tuned values"] if study.tune else []
    full = 1
    for factor in (study.variants, study.lengths, study.grid_points, study.seeds, study.tune_points):
        full *= len(factor)
    left_out = f", less {full - len(cells)} left out by skip=" if study.skip else ""
    lines = [
        f"study {study.task}: {len(cells)} cells ({' × '.join(factors)}{left_out}) in {study.out}",
        f"skipped {len(state.finished)} finished cell(s); running {len(state.to_run)} "
        f"({len(state.missing)} new, {len(state.failed)} failed before and retried)",
    ]
    resumed = {c.name for c in state.resume}
    lines += [
        f"  retrying {cell.name} (failed before: {message})"
        for cell, message in state.failed
        if cell.name not in resumed
    ]
    lines += [
        f"  resuming {cell.name} from its checkpoint (it was stopped before finishing)"
        for cell in state.resume
    ]
    launched = read_json(study.out / LAUNCHED_FILE) or {}
    stale = [
        c.name
        for c in state.finished
        if not same_overrides(launched.get(c.name, list(study.overrides)), list(study.overrides))
    ]
    if stale:
        lines.append(
            f"warning: {len(stale)} finished cell(s) ran with other overrides than this command's "
            f"({', '.join(stale[:4])}{', ...' if len(stale) > 4 else ''}); they are kept as they are: give a new "
            "out=DIR to run the whole grid with these overrides"
        )
    return lines


def same_overrides(ran: Sequence[str], now: Sequence[str]) -> bool:
    """Whether a cell that ran with `ran` got what `now` asks: the same list, or the same overrides in
    another order where no key is set twice (Hydra applies group choices before values, and values of
    different keys do not interact; a key set twice depends on the order)."""
    if list(ran) == list(now):
        return True
    keys = [override_key(o) for o in now]
    return len(set(keys)) == len(keys) and sorted(ran) == sorted(now)


def record_launch(study: Study, cells: Sequence[Cell]) -> None:
    """Remember the overrides each launched cell runs with (the next rerun warns when they changed)."""
    path = study.out / LAUNCHED_FILE
    launched = read_json(path) or {}
    launched.update({cell.name: list(study.overrides) for cell in cells})
    write_json_atomic(path, launched)


def multirun_argv(study: Study, cells: Sequence[Cell], *, wandb_group: bool) -> list[str]:
    """`python -m attnlab` arguments for one multirun over `cells` (their configs already written)."""
    names = ",".join(cell.name for cell in cells)
    return [
        "-m",
        *shared_overrides(study, study.cells_dir, wandb_group=wandb_group),
        f"+{CELL_GROUP}={names}",
    ]


def launch(study: Study, cells: Sequence[Cell], *, wandb_group: bool, resume: Sequence[Cell] = ()) -> int:
    """Write the cells' configs under the study directory and run them (`resume`: from their last
    checkpoint); the multirun's exit status."""
    if not cells:
        return 0
    write_cell_configs(study, cells, study.cells_dir, resume=resume)
    record_launch(study, cells)
    argv = multirun_argv(study, cells, wandb_group=wandb_group)
    print("running: python -m attnlab " + " ".join(argv), file=sys.stderr, flush=True)
    process = subprocess.Popen([sys.executable, "-m", "attnlab", *argv])
    try:
        return process.wait()
    except KeyboardInterrupt:  # the child got the Ctrl-C too: its running cell saves a checkpoint and stops
        print("\nCtrl-C: waiting for the running cell to stop (Ctrl-C again to kill it)", file=sys.stderr)
        try:
            process.wait()
        except KeyboardInterrupt:
            process.kill()
            process.wait()
        raise
