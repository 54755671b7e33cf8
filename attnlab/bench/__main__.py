"""`python -m attnlab.bench key=value ...` — the Hydra entry point (config: conf/bench.yaml).

The overrides are composed and checked (attnlab.bench.config.parse) before Hydra creates a run
directory, so a bad input is one `error:` line, exit status 2, and writes nothing.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from attnlab.bench.sweep import run
from attnlab.errors import AttnlabError, ConfigError

EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


@hydra.main(config_path="pkg://attnlab.conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except AttnlabError as exc:  # a user mistake: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:  # run() has written the points measured before it
        print("interrupted: rerun the command for the missing points", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def preflight(argv: list[str], *, hydra_config: bool = True) -> DictConfig | None:
    """Compose conf/bench.yaml with `argv` and check every value; None for Hydra flags (--help, -m),
    which Hydra handles itself. Raises AttnlabError with a one-line message. Without `hydra_config`
    the result has no `hydra` node and can be run in-process (`run(cfg)`)."""
    from attnlab.config.checks import check_hydra_flags

    if any(a.startswith("-") for a in argv):
        check_hydra_flags(argv, program="python -m attnlab.bench", config_name="bench")
        return None
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from attnlab.bench.config import parse
    from attnlab.config.checks import hydra_error_message

    try:
        with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
            cfg = compose(config_name="bench", overrides=list(argv), return_hydra_config=hydra_config)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(hydra_error_message(err, argv, config_name="bench")) from err
    parse(cfg)
    from attnlab.config.checks import check_directory

    check_directory("out_dir", cfg.get("out_dir"))  # else an OSError traceback after the sweep has measured
    return cfg


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
        preflight(sys.argv[1:])
    except AttnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    main()


if __name__ == "__main__":
    entry()
