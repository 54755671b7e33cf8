"""Run one job from the config the preflight composed: what `@hydra.main` does for a single run (no
flags, no -m), through Hydra's public `hydra.core.utils.run_job`, so a single run composes its config
once. Multiruns and Hydra's own flags (--help, --cfg, -m ...) still go through `@hydra.main`, which
composes there instead (the preflight only checks their overrides).

What `@hydra.main` adds around `run_job` for a single run, done here the same way: the run mode
recorded in `hydra.mode`, Hydra's own logging configured from `hydra.hydra_logging`, and the
callbacks listed under `hydra.callbacks` told of the run's start and end. The job itself (the run
directory, `.hydra/` files, the job's logging, `hydra.job.env_set`, the working directory) is
`run_job`'s, exactly as under `@hydra.main`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write


class _Callbacks:
    """The `hydra.callbacks` of a config, instantiated, each event passed to every one as Hydra's own
    dispatcher does: ends in reverse order, and a callback that raises is a warning, not a failed run."""

    def __init__(self, cfg: DictConfig) -> None:
        from hydra.utils import instantiate

        self.callbacks = [
            instantiate(node) for node in (OmegaConf.select(cfg, "hydra.callbacks") or {}).values()
        ]

    def _each(self, event: str, *, reverse: bool = False, **kwargs: Any) -> None:
        for callback in reversed(self.callbacks) if reverse else self.callbacks:
            try:
                getattr(callback, event)(**kwargs)
            except Exception as error:
                warnings.warn(
                    f"Callback {type(callback).__name__}.{event} raised {type(error).__name__}: {error}",
                    stacklevel=3,
                )

    def on_run_start(self, **kwargs: Any) -> None:
        self._each("on_run_start", **kwargs)

    def on_run_end(self, **kwargs: Any) -> None:
        self._each("on_run_end", reverse=True, **kwargs)

    def on_job_start(self, **kwargs: Any) -> None:
        self._each("on_job_start", **kwargs)

    def on_job_end(self, **kwargs: Any) -> None:
        self._each("on_job_end", reverse=True, **kwargs)


def set_run_dir(cfg: DictConfig, run_dir: str) -> None:
    """`hydra.run.dir=<run_dir>` applied to a composed config, recorded with the other Hydra overrides
    (as the same override on the command line would be)."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.run.dir = run_dir
        cfg.hydra.overrides.hydra.append(f"hydra.run.dir={run_dir}")


def run_single(cfg: DictConfig, task_function: Callable[[DictConfig], Any], *, config_name: str) -> Any:
    """Run `task_function` as the single job of `cfg` (composed with its `hydra` node); returns its
    value, or raises what it raised."""
    from hydra.core.utils import configure_log, run_job
    from hydra.types import HydraContext, RunMode

    if OmegaConf.select(cfg, "hydra.mode") is None:  # as @hydra.main: the mode, and its override recorded
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.mode = RunMode.RUN
            cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    callbacks = _Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name=config_name)
    job = run_job(
        task_function=task_function,
        config=cfg,
        job_dir_key="hydra.run.dir",
        job_subdir_key=None,
        # run_job reads only the callbacks; the config loader was the preflight's and is gone
        hydra_context=HydraContext(config_loader=None, callbacks=callbacks),  # type: ignore[arg-type]
    )
    callbacks.on_run_end(config=cfg, config_name=config_name, job_return=job)
    return job.return_value  # raises the job's exception, as @hydra.main does
