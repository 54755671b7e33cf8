"""Command-line overrides checked before Hydra composes anything: unknown group options (a sweep's
every member included, which composition alone would not see), attention parameters by name and type
for every named variant, and per-layer counts. Each mistake is a one-line ConfigError."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from attnlab.errors import ConfigError, did_you_mean
from attnlab.nn.pattern import COUNT_KEYS, check_layer_counts

HIDDEN_OPTIONS = {"schema", "default"}  # building blocks of other options, not choices


def group_options(group: str) -> list[str]:
    """The options of a config group: YAML files under conf/<group> plus ConfigStore entries."""
    from hydra.core.config_store import ConfigStore

    if group == "attention":
        from attnlab.attention import available_attentions

        return available_attentions()
    import attnlab.conf as conf_package  # conf/, installed as a package

    conf_dir = Path(conf_package.__file__).parent
    found = {p.stem for p in (conf_dir / group).glob("*.yaml")} if (conf_dir / group).is_dir() else set()
    with contextlib.suppress(
        OSError
    ):  # no such group in the ConfigStore; sub-groups (task/decode) are no options
        found |= {
            name.removesuffix(".yaml")
            for name in ConfigStore.instance().list(group)
            if name.endswith(".yaml")
        }
    return sorted(found - HIDDEN_OPTIONS)


def config_groups() -> list[str]:
    import attnlab.conf as conf_package

    return sorted(
        p.name
        for p in Path(conf_package.__file__).parent.iterdir()
        if p.is_dir() and not p.name.startswith("_")
    )


def _values(override: Any) -> list[Any]:
    """The plain values of a parsed override (every member of a `a,b` sweep); [] for functions like range()."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return [v for v in value.list if not hasattr(v, "list")]
    if override.is_sweep_override():
        return []
    return [value]


def one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


def check_overrides(argv: list[str]) -> None:
    """Reject unknown group options, attention names and attention parameters (name or type) with a closest match."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from attnlab.attention import registry

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides: {one_line(err)}; write them as key=value") from None
    groups = set(config_groups()) | {"attention"}
    names: list[str] = []
    for override in overrides:
        key = override.key_or_group
        if override.is_delete():
            continue
        values = _values(override)
        if key == "attention" or key.endswith("_attention"):
            for name in values:
                if name in (None, "null") and key == "attention":  # else Hydra's multi-line ValueError
                    from attnlab.attention import available_attentions

                    raise ConfigError(
                        f"attention=null: every model needs an attention variant; choose attention= one of "
                        f"{', '.join(available_attentions())} (e.g. attention=multihead)"
                    )
                if name in (None, "null"):  # a role override set back to the run's attention
                    continue
                registry.find_attention(str(name))  # the one check of a name: unknown or a broken plugin
                names.append(str(name))
        elif key in groups and key != "hydra":
            options = group_options(key)
            for value in values:
                if value is not None and str(value) not in options:
                    raise ConfigError(
                        f"unknown {key} '{value}'{did_you_mean(str(value), options)}; "
                        f"choose {key}= one of {', '.join(options) or '(none)'}"
                    )
    names = names or ["multihead"]
    check_layer_counts(
        {o.key_or_group: _values(o) for o in overrides if not o.is_delete() and o.key_or_group in LAYER_KEYS}
    )
    for override in overrides:
        key = override.key_or_group
        if override.is_delete() or not key.startswith("attention.") or key == "attention.name":
            continue
        param = key.split(".", 1)[1]
        having = [n for n in names if param in registry.registry_entry(n).hyperparameters]
        if not having:  # validate against the first named variant so the message lists its parameters
            registry.validate_hyperparameters(names[0], {param: None})
        for name in having:
            for value in _values(override):
                registry.validate_hyperparameters(name, {param: value})


LAYER_KEYS = {*COUNT_KEYS, *(k for keys in COUNT_KEYS.values() for k in keys)}
