"""`python -m attnlab`: discover plugins, store their configs, then hand over to Hydra.

Errors a user can fix (AttnlabError) are printed as one line and exit with status 2; their
traceback goes to the run's log file. Anything else is a bug and is shown in full.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from attnlab.errors import AttnlabError, ConfigError
from attnlab.schemas import store_configs

log = logging.getLogger("attnlab")
EXIT_USER_ERROR = 2


def _run_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return None


@hydra.main(config_path="pkg://attnlab.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train + evaluate; returns the monitored validation metric (what sweepers optimise)."""
    from attnlab.train import run

    for name in ("lightning.pytorch", "lightning.fabric"):  # one handler (Hydra's console + run.log), no duplicates
        logging.getLogger(name).handlers.clear()
    try:
        results = run(cfg)
    except AttnlabError as error:
        run_dir = _run_dir()
        if run_dir is not None:
            with open(run_dir / "run.log", "a") as handle:
                handle.write(traceback.format_exc())
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    return results["metrics"].get(cfg.task.monitor)


def check_overrides(argv: list[str]) -> None:
    """Reject unknown attention names/parameters in command-line overrides with a closest match."""
    from attnlab.attention import registry

    names: list[str] = []
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep:
            continue
        if key == "attention" or key.endswith("_attention"):
            for name in value.split(","):
                if name and name != "null":
                    registry.registry_entry(name)  # raises with the closest match
                    names.append(name)
    names = names or ["multihead"]
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key.startswith("attention.") and key != "attention.name":
            param = key.split(".", 1)[1]
            known = [n for n in names if param in registry.registry_entry(n).hyperparameters]
            if not known:
                # Validate against the first named variant so the message lists its parameters.
                registry.validate_hyperparameters(names[0], {param: None})


def entry() -> None:
    """Console entry point (`attnlab` and `python -m attnlab`)."""
    try:
        store_configs()
        check_overrides(sys.argv[1:])
    except AttnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    main()


__all__ = ["ConfigError", "entry", "main"]
