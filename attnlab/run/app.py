"""`python -m attnlab`: discover plugins, store their configs, then hand over to Hydra.

Errors a user can fix (AttnlabError) are printed as one line and exit with status 2; their
traceback goes to the run's log file. Anything else is a bug and is shown in full. Command-line
overrides are checked (and the config composed and checked) before Hydra creates a run directory,
so a bad input writes nothing; a single run then runs from that config (composed once), a multirun
through `@hydra.main`. In a multirun sweep a failing member writes `failed.json` instead of
`results.json` and the sweep goes on; `sweep_summary.json` lists the failures at the end.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from attnlab.config import preflight as checked
from attnlab.config.overrides import check_overrides
from attnlab.config.preflight import EXIT_USER_ERROR, refuse
from attnlab.config.single_run import run_single, set_run_dir
from attnlab.errors import AttnlabError, ConfigError
from attnlab.run.lock import RunDirectoryInUse, acquire
from attnlab.run.results import summarise_sweep, write_failure

log = logging.getLogger("attnlab")
# + the signal that stopped the run: 130 for Ctrl-C, 143 for SIGTERM (the shell's convention)
EXIT_INTERRUPTED = 128


def _run_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return None


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def job(cfg: DictConfig) -> float | None:
    """Train + evaluate; returns the monitored validation metric (what sweepers optimise)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from attnlab.console import quiet_frameworks
    from attnlab.run.interrupts import Interrupted, report
    from attnlab.run.train import run

    quiet_frameworks()  # one handler (Hydra's console + run.log), no duplicates, no framework noise
    multirun = _is_multirun()
    try:
        results = run(cfg)
    except Interrupted as stop:  # outside a training step: one line naming the phase, status 143 / 130
        write_failure(_run_dir(), stop, stop.line().removeprefix("error: "))
        report(stop)
    except SIGTERMException as stop:
        message = f"interrupted: checkpoint saved in {_run_dir()}/checkpoints/last.ckpt; resume with the same command plus ckpt_path=last"
        write_failure(_run_dir(), stop, message)
        print(f"error: {message}", file=sys.stderr)
        from attnlab.run.callbacks import GracefulStop

        sys.exit(EXIT_INTERRUPTED + GracefulStop.stopped_by)
    except Exception as error:
        user = user_error(error)
        if isinstance(user, RunDirectoryInUse):  # the directory is another run's: write nothing there
            print(f"error: {user}", file=sys.stderr)
            if multirun:
                return None
            sys.exit(EXIT_USER_ERROR)
        if user is not None:
            write_failure(_run_dir(), error, str(user))
            print(f"error: {user} (recorded in {_run_dir()}/failed.json)", file=sys.stderr)
            if multirun:
                return None  # the other members of the sweep go on
            sys.exit(EXIT_USER_ERROR)
        # a bug: shown in full; in a sweep, recorded and the sweep goes on
        write_failure(_run_dir(), error, f"{type(error).__name__}: {error}")
        if not multirun:
            raise
        log.exception("sweep member failed")
        return None
    return results["metrics"].get(cfg.task.monitor)


# A multirun or Hydra's own flags (--help, --cfg, -m): Hydra composes and launches. A single run runs
# from the preflight's config instead (attnlab.config.single_run), so it is composed once.
main = hydra.main(config_path="pkg://attnlab.conf", config_name="config", version_base="1.3")(job)


def user_error(error: BaseException) -> AttnlabError | None:
    """The AttnlabError behind `error` (Hydra's instantiate wraps errors raised in constructors), else None."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, AttnlabError):
            return error
        error, seen = error.__cause__, seen + 1
    return None


def preflight(argv: list[str], *, hydra_config: bool = True) -> DictConfig | None:
    """The app's preflight (attnlab.config.preflight): the composed, checked config, or None for
    multirun/flags, where only the overrides are checked. Raises AttnlabError with a one-line message."""
    return checked.preflight(argv, checked.APP, hydra_config=hydra_config)


class RunFinished(Exception):
    """`ckpt_path=last` names a run that already finished: say so, run nothing, exit 0."""


def resumed_run_dir(cfg: DictConfig, argv: list[str]) -> str | None:
    """`ckpt_path=last`: the run directory to continue, the newest run of the same task/attention (None:
    no resume, or the command line names the directory itself).

    Raises RunFinished when that run (or the run directory given explicitly) already finished."""
    if cfg.get("ckpt_path") != "last":
        return None
    from attnlab.run.checkpoints import already_finished_message, find_resumable_run
    from attnlab.run.results import is_finished

    explicit = [a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "paths.run_dir="))]
    if explicit:
        if is_finished(explicit[-1]):
            raise RunFinished(already_finished_message(Path(explicit[-1])))
        return None
    base = Path(cfg.hydra.run.dir).parent
    found = find_resumable_run(base)
    if found is None:
        raise ConfigError(
            f"ckpt_path=last: no run with checkpoints/last.ckpt under {base}/; start a fresh run (drop ckpt_path) "
            f"or give a checkpoint file: ckpt_path=<run_dir>/checkpoints/last.ckpt"
        )
    if is_finished(found):
        raise RunFinished(already_finished_message(found))
    print(f"resuming {found}", file=sys.stderr)
    return str(found)


def run_args(argv: list[str]) -> tuple[int, str]:
    """`python -m attnlab argv` in this process, for tests: (exit status, the one-line error or '').

    `argv` must set `paths.run_dir` (there is no Hydra run directory in-process)."""
    from attnlab.run.train import run

    try:
        cfg = preflight(argv, hydra_config=False)
        if cfg is None:
            raise ConfigError("run_args runs single runs only (no flags)")
        run(cfg)
    except Exception as error:
        user = user_error(error)
        if user is None:
            raise
        return EXIT_USER_ERROR, f"error: {user}"
    return 0, ""


def lock_named_run_dir(argv: list[str]) -> None:
    """Take the lock of a run directory named on the command line (or resumed) before Hydra writes its
    run.log and .hydra/ there; held until this process exits. A timestamped default directory is
    locked by attnlab.run.train.run (Hydra resolves its name only when it starts the job)."""
    named = [a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "paths.run_dir="))]
    if named:
        acquire(named[-1])


def entry() -> None:
    """Console entry point (`attnlab` and `python -m attnlab`)."""
    argv = sys.argv[1:]
    from attnlab.run.interrupts import Interrupted, install, report, set_phase

    install()  # SIGTERM and Ctrl-C end every phase within seconds (attnlab/run/interrupts.py)
    set_phase("checking the config")
    try:
        cfg = preflight(argv)
        if cfg is not None:
            resumed = resumed_run_dir(cfg, argv)
            if resumed is not None:
                set_run_dir(cfg, resumed)
            lock_named_run_dir([*argv, *([f"hydra.run.dir={resumed}"] if resumed else [])])
    except AttnlabError as error:  # no run directory yet: say that nothing was written
        refuse(error, " (nothing was written)")
    except RunFinished as finished:
        print(finished, file=sys.stderr)
        sys.exit(0)
    except Interrupted as stop:
        report(stop)
    set_phase("starting the run")
    try:
        if cfg is None:
            main()
        else:
            run_single(cfg, job, config_name="config")
    except Interrupted as stop:  # in Hydra's set-up or tear-down, outside attnlab.run.app.job
        report(stop)
    if SweepSummary.failures:
        sys.exit(EXIT_USER_ERROR)


try:  # Hydra's callback API (hydra.experimental) is available in every supported Hydra
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[assignment,misc]


class SweepSummary(_HydraCallback):
    """After a multirun: write sweep_summary.json and print the failed members (if any)."""

    failures = 0  # read by attnlab.run.app.entry for the exit status

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarise_sweep(sweep_dir)
        SweepSummary.failures = len(summary["failed"])
        line = f"sweep {sweep_dir}: {len(summary['ok'])} ok, {len(summary['failed'])} failed"
        print(line, file=sys.stderr)
        for item in summary["failed"]:
            print(f"  failed {item['job']}: {item['message']}", file=sys.stderr)


__all__ = ["check_overrides", "entry", "main", "preflight", "run_args"]
