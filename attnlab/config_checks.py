"""Checks on a composed config that Hydra's types cannot express; each failure is a one-line fix."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from attnlab.errors import ConfigError, did_you_mean
from attnlab.hf_models import is_hf_model, require_transformers


def _positive(value, key: str, *, allow_none: bool = False, allow_minus_one: bool = False) -> None:
    if value is None and allow_none:
        return
    if allow_minus_one and value == -1:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        also = " (or -1 for no limit)" if allow_minus_one else ""
        raise ConfigError(f"{key}={value} must be a positive number; set {key}=<n> with n > 0{also}")


def check_config(cfg: DictConfig) -> None:
    model, trainer = cfg.model, cfg.trainer
    if is_hf_model(model):  # a transformers model: its own config holds the sizes (attnlab.hf.model)
        require_transformers()
        _positive(model.max_len, "model.max_len")
    else:
        for key in ("d_model", "heads", "max_len", "encoder_layers", "mlp_ratio"):
            _positive(model[key], f"model.{key}")
        if not 0.0 <= model.dropout < 1.0:
            raise ConfigError(f"model.dropout={model.dropout} must be in [0, 1)")
    _positive(trainer.max_steps, "trainer.max_steps", allow_minus_one=True)
    data = cfg.task.get("data")
    if data is not None:
        _positive(data.batch_size, "task.data.batch_size")
        for split, limit in (data.get("limit") or {}).items():
            _positive(limit, f"task.data.limit.{split}", allow_none=True)
    check_device(trainer)
    from attnlab.tasks.common import check_task_config

    check_task_config(cfg.task)  # what the framework calls on the task is there, and monitor names a metric


def check_device(trainer: DictConfig) -> None:
    accelerator, precision = str(trainer.accelerator), str(trainer.precision)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer=gpu but no CUDA GPU is visible; use trainer=cpu (or trainer.accelerator=auto)"
        )
    on_gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if precision.startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"trainer.precision={precision} but this GPU has no bfloat16 support; use trainer.precision=16-mixed"
        )
    if precision.startswith("16") and not on_gpu:
        raise ConfigError(
            f"trainer.precision={precision} (fp16) needs a CUDA GPU; on CPU use trainer.precision=bf16-mixed or 32-true"
        )


# ---- command-line overrides, checked before Hydra composes anything -------------------------------
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
                if name in (None, "null"):
                    continue
                check_attention_name(str(name))
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


def check_attention_name(name: str) -> None:
    """A known variant, or a clear error: a plugin that failed to load says so and why."""
    from attnlab.attention import registry

    broken = registry.broken_plugins()
    if name in broken:
        raise ConfigError(
            f"attention '{name}' is a plugin that failed to load ({broken[name]}); fix or reinstall the "
            f"package that provides it, or choose another variant (`python -m attnlab.variants` lists them)"
        )
    registry.registry_entry(name)  # raises with the closest match


def one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


def hydra_error_message(error: BaseException, argv: list[str] = ()) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the override and the fix."""
    causes = [error]
    while causes[-1].__cause__ is not None and len(causes) < 5:
        causes.append(causes[-1].__cause__)
    text = " ".join(one_line(c) for c in causes)
    match = re.search(r"Key '([^']+)' (?:is not in struct|not in '\w+')", text)  # a plain or a typed node
    if match:
        key = match.group(1)
        full = re.search(r"full_key: ([\w.]+)", text)
        dotted = full.group(1) if full else key
        parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
        known = _known_keys(parent, argv)
        hint = did_you_mean(key, known)
        if "is not in struct" not in match.group(
            0
        ):  # a typed node (ModelConfig, DecodeConfig) takes no new keys
            return f"unknown config key '{dotted}'{hint}; the keys of {parent or 'the config'} are: {', '.join(known)}"
        return f"unknown config key '{dotted}'{hint}; to add a new key write +{dotted}=<value>"
    match = re.search(r"Key '([^']+)' not in '\w+' full_key: ([\w.]+)", text)
    if match:  # a typed (dataclass) node, e.g. model.* or task.data.builtin.*: its fields are all its keys
        key, dotted = match.groups()
        parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
        known = _known_keys(parent, argv)
        return f"unknown config key '{dotted}'{did_you_mean(key, known)}; {parent or 'the config'} has: {', '.join(known)}"
    match = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", text)
    if match:
        full = re.search(r"full_key: ([\w.]+)", text)
        where = full.group(1) if full else "a config value"
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(
            match.group(2), match.group(2).lower()
        )
        return f"{where}={match.group(1)} is not valid: expected {kind}; set {where}=<{kind}>"
    match = re.search(r"Could not find '([^']+)'", text)
    if match:
        return f"{one_line(causes[0])}"
    return one_line(causes[0])


def _known_keys(parent: str, argv: list[str]) -> list[str]:
    """Keys of the composed config node `parent` (best effort; [] when composition itself fails)."""
    try:
        from hydra import compose, initialize_config_module
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf

        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
            cfg = compose(
                config_name="config",
                overrides=[a for a in argv if a.split("=")[0] in ("task", "model", "trainer", "attention")],
            )
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return list(node.keys()) if node is not None and hasattr(node, "keys") else []
    except Exception:
        return []
