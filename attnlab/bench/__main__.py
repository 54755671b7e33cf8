"""`python -m attnlab.bench key=value ...` — the Hydra entry point (config: conf/bench.yaml).

The overrides are composed and checked (attnlab.bench.config.parse) before Hydra creates a run
directory, so a bad input is one `error:` line, exit status 2, and writes nothing. A single run runs
from that config (attnlab.config.single_run: composed once); -m and Hydra's flags go to @hydra.main.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from attnlab.bench.sweep import run
from attnlab.config import preflight as checked
from attnlab.config.preflight import EXIT_USER_ERROR, refuse
from attnlab.config.single_run import run_single
from attnlab.errors import AttnlabError, ConfigError

EXIT_INTERRUPTED = 130


def job(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except AttnlabError as exc:  # a user mistake: one line, no traceback
        refuse(exc)
    except KeyboardInterrupt:  # run() has written the points measured before it
        print("interrupted: rerun the command for the missing points", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


# -m or Hydra's flags: Hydra composes and launches; a single run runs from the preflight's config
main = hydra.main(config_path="pkg://attnlab.conf", config_name="bench", version_base="1.3")(job)


def check(cfg: DictConfig) -> None:
    """conf/bench.yaml's values (attnlab.bench.config.parse) and the output directory."""
    from attnlab.bench.config import parse
    from attnlab.config.checks import check_directory

    parse(cfg)
    check_directory("out_dir", cfg.get("out_dir"))  # else an OSError traceback after the sweep has measured


BENCH = checked.Command("python -m attnlab.bench", "bench", check, job_name="__main__")


def preflight(argv: list[str], *, hydra_config: bool = True) -> DictConfig | None:
    """Compose conf/bench.yaml with `argv` and check every value (attnlab.config.preflight); None for
    Hydra flags (--help, -m), which Hydra handles itself. Raises AttnlabError with a one-line message.
    Without `hydra_config` the result has no `hydra` node and can be run in-process (`run(cfg)`)."""
    return checked.preflight(argv, BENCH, hydra_config=hydra_config)


def run_args(argv: list[str]) -> tuple[int, str]:
    """`python -m attnlab.bench argv` in this process, for tests: (exit status, the one-line error or '').
    `argv` should set `out_dir`."""
    try:
        cfg = preflight(argv, hydra_config=False)
        if cfg is None:
            raise ConfigError("run_args runs the bench without Hydra flags")
        run(cfg)
    except AttnlabError as error:
        return EXIT_USER_ERROR, f"error: {error}"
    return 0, ""


def entry() -> None:
    try:
        cfg = preflight(sys.argv[1:])
    except AttnlabError as error:
        refuse(error)
    if cfg is None:
        main()
    else:
        run_single(cfg, job, config_name="bench")


if __name__ == "__main__":
    entry()
