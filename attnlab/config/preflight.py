"""One preflight for every command that composes a Hydra config: `python -m attnlab` (conf/config.yaml),
`python -m attnlab.bench` (conf/bench.yaml), the study's cells and `python -m attnlab.check gpu`.

Before Hydra creates a run directory: Hydra's own flags parsed, the overrides checked (a command's
`check_overrides`), the config composed once and checked (its `check`). A single run then runs from
that config (attnlab.config.single_run); only a multirun or a Hydra flag hands composing to
`@hydra.main`. Every mistake is a ConfigError whose one line names the fix; `refuse` prints it and
exits with status 2. Composition errors are worded from the exception's type and attributes (the key,
the value, the typed node, the missing option), never from Hydra's text.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig

from attnlab.config.fields import field_error
from attnlab.config.overrides import HIDDEN_OPTIONS, check_overrides, one_line
from attnlab.errors import ConfigError, did_you_mean

EXIT_USER_ERROR = 2


@dataclass(frozen=True)
class Command:
    """A command that composes one config: its name as typed, its primary config and its checks."""

    program: str  # for "see `<program> --help`"
    config_name: str  # conf/<config_name>.yaml
    check: Callable[[DictConfig], Any]  # the composed config's checks (one-line ConfigErrors)
    check_overrides: Callable[[list[str]], None] | None = None  # the command line's, before composing
    # hydra.job.name as @hydra.main names it (the file of the decorated function): the job's log file
    # is <job_name>.log unless the config names it (conf/hydra/default.yaml: run.log)
    job_name: str = "app"


def _app_check(cfg: DictConfig) -> None:
    from attnlab.config.checks import check_config

    check_config(cfg)


APP = Command("python -m attnlab", "config", _app_check, check_overrides)


def preflight(argv: list[str], command: Command = APP, *, hydra_config: bool = True) -> DictConfig | None:
    """Everything checkable before a run directory exists. Returns the composed, checked config, or
    None when `argv` holds Hydra flags (--help, -m ...: only the flags and overrides are checked, Hydra
    composes). Without `hydra_config` the result has no `hydra` node and runs in-process."""
    from attnlab.config.schemas import store_configs

    store_configs()
    if command.check_overrides is not None:
        command.check_overrides(argv)
    if any(a.startswith("-") for a in argv):
        check_hydra_flags(argv, program=command.program, config_name=command.config_name)
        return None
    cfg = compose(argv, command.config_name, hydra_config=hydra_config, job_name=command.job_name)
    command.check(cfg)
    return cfg


def compose(
    argv: list[str], config_name: str = "config", *, hydra_config: bool = False, job_name: str = "app"
) -> DictConfig:
    """conf/<config_name>.yaml composed with `argv`; a composition error is a one-line ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module="attnlab.conf", version_base="1.3", job_name=job_name):
            return hydra_compose(
                config_name=config_name, overrides=list(argv), return_hydra_config=hydra_config
            )
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(hydra_error_message(err, argv, config_name=config_name)) from err


def refuse(error: BaseException, note: str = "") -> NoReturn:
    """The user's mistake as one `error:` line on stderr, and exit status 2."""
    print(f"error: {error}{note}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


# ---- Hydra's flags --------------------------------------------------------------------------------
class _FlagParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _flag_parser() -> _FlagParser:
    """The flags `@hydra.main` takes (Hydra 1.3); parsing only, Hydra acts on them itself."""
    parser = _FlagParser(add_help=False)
    for flag, short in (("--help", "-h"), ("--hydra-help", None), ("--version", None), ("--resolve", None)):
        parser.add_argument(flag, *([short] if short else []), action="store_true")
    for flag, short in (("--run", "-r"), ("--multirun", "-m"), ("--shell-completion", "-sc")):
        parser.add_argument(flag, short, action="store_true")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    for flag, short in (("--package", "-p"), ("--config-path", "-cp"), ("--config-name", "-cn")):
        parser.add_argument(flag, short)
    parser.add_argument("--config-dir", "-cd")
    parser.add_argument("--experimental-rerun")
    info = ["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"]
    parser.add_argument("--info", "-i", const="all", nargs="?", choices=info)
    return parser


def check_hydra_flags(argv: list[str], *, program: str, config_name: str) -> None:
    """Hydra's own flags (--cfg, --config-name, -m ...): a mistake is one line here, where Hydra
    would print its usage (or a multi-line missing-config error) instead."""
    if not any(a.startswith("-") for a in argv):
        return
    try:
        args = _flag_parser().parse_args(argv)
    except ConfigError as err:
        raise ConfigError(f"{err}; see `{program} --help`") from None
    if args.config_name not in (None, config_name):
        raise ConfigError(
            f"--config-name={args.config_name}: {program} composes its one config '{config_name}'; drop --config-name "
            f"and choose groups instead (e.g. experiment=<name>)"
        )
    for flag, value in (("--config-dir", args.config_dir), ("--config-path", args.config_path)):
        if value is not None and not Path(value).is_dir():
            raise ConfigError(
                f"{flag}={value} is not a directory; give a directory of YAML configs or drop {flag}"
            )


# ---- composition errors, worded from their type and attributes ----------------------------------
# Typed fields whose `=null` error lists the allowed values.
def _null_refused_choices() -> dict[str, tuple[str, ...]]:
    from attnlab.nn.positional import SCHEMES

    return {"model.positional": tuple(SCHEMES)}


KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def hydra_error_message(error: BaseException, argv: list[str] = (), *, config_name: str = "config") -> str:
    """One line for a Hydra/OmegaConf composition error, naming the override and the fix."""
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    causes = [error]
    while len(causes) < 5:
        last = causes[-1]
        # a config that fails to merge (a task's YAML with a key its typed node lacks) is raised by Hydra
        # inside its handler, without `from`: the OmegaConf error is the composition error's context
        implicit = last.__context__ if isinstance(last, ConfigCompositionException) else None
        if (last.__cause__ or implicit) is None:
            break
        causes.append(last.__cause__ or implicit)
    for cause in causes:
        if isinstance(cause, MissingConfigException) and cause.missing_cfg_file:
            group, _, option = cause.missing_cfg_file.rpartition("/")
            options = [o for o in cause.options or [] if o not in HIDDEN_OPTIONS]
            choices = f"; choose {group}= one of {', '.join(options)}" if options else ""
            return f"unknown {group} '{option}'{did_you_mean(option, options)}{choices}"
        if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.key is not None:
            return _unknown_key(cause, argv, config_name)
        if isinstance(cause, ValidationError) and cause.full_key:
            return _invalid_value(cause)
    return one_line(causes[0])


def _unknown_key(cause: Any, argv: list[str], config_name: str) -> str:
    key = str(cause.key)
    dotted = str(cause.full_key or key)
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    node_type = cause.object_type
    if dataclasses.is_dataclass(node_type):  # a typed node (ModelConfig, TrainerConfig ...) takes no new keys
        known = [f.name for f in dataclasses.fields(node_type) if not f.name.startswith("_")]
        typed = (
            f"unknown config key '{dotted}'{did_you_mean(key, known)}; the keys of {parent or 'the config'} "
            f"are: {', '.join(known)}"
        )
        from attnlab.config.data_schema import DataSchema

        if issubclass(node_type, DataSchema) and not any(
            a.split("=")[0].lstrip("+~") == dotted for a in argv
        ):
            # a task config's own data key, not the command line's: say how a task adds keys
            typed += (
                "; a task with data keys of its own writes its whole data: block instead of `- data: default`"
            )
        return typed
    known = _known_keys(parent, argv, config_name)
    return (
        f"unknown config key '{dotted}'{did_you_mean(key, known)}; to add a new key write +{dotted}=<value>"
    )


def _invalid_value(cause: Any) -> str:
    where, value, node_type = str(cause.full_key), cause.value, cause.object_type
    declared = field_error(node_type, str(cause.key), where, value)
    if declared is not None:  # the field's own wording (attnlab.config.fields)
        return declared
    if value is None:  # null for a typed field that must hold a value
        choices = _null_refused_choices().get(where)
        fix = f"choose {where}= one of {', '.join(choices)}" if choices else f"set {where}=<value>"
        return f"{where}=null is not allowed: the key needs a value; {fix} (or drop the override for its default)"
    kind = KINDS.get(_field_type(node_type, str(cause.key)), "another type")
    return f"{where}={value} is not valid: expected {kind}; set {where}=<{kind}>"


def _field_type(node_type: Any, key: str) -> Any:
    """The declared type of field `key` of dataclass `node_type`, without Optional."""
    try:
        hint = typing.get_type_hints(node_type).get(key)
    except Exception:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint


def _known_keys(parent: str, argv: list[str], config_name: str = "config") -> list[str]:
    """Keys of the composed config node `parent` (best effort; [] when composition itself fails)."""
    try:
        from hydra import compose as hydra_compose
        from hydra import initialize_config_module
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf

        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
            cfg = hydra_compose(
                config_name=config_name,
                overrides=[a for a in argv if a.split("=")[0] in ("task", "model", "trainer", "attention")],
            )
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return list(node.keys()) if node is not None and hasattr(node, "keys") else []
    except Exception:
        return []
