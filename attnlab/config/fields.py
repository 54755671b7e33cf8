"""Per-field checks declared on the typed configs (attnlab.config.schemas): OmegaConf checks a field's
type when the config is composed; the range, the choices or the format a type cannot say are declared
beside the field (`bounded`, `one_of`, `flag`, `checked`) and run by `check_fields` on every typed node.
A type error at compose time is worded by the same declaration (`field_error`), so a field has one
message whatever its mistake (trainer.max_steps=abc and trainer.max_steps=0 both say what is allowed).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from attnlab.errors import ConfigError, did_you_mean

ABSENT = object()  # a key the config does not have
CHECK = "attnlab_check"  # the metadata key of a field's declared check


def show(value: Any) -> str:
    """A value as the user wrote it on the command line."""
    return "null" if value is None else str(value) if not isinstance(value, str) or value else "''"


def _bound(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else f"{b:g}"


def plain(value: Any) -> Any:
    """A DictConfig or ListConfig as plain Python; anything else as it is."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def as_list(value: Any) -> list[Any]:
    """A list (or ListConfig, or Hydra's `a,b` sweep) as a list, a single value as a one-item list."""
    value = plain(value)
    if hasattr(value, "list"):  # ChoiceSweep from x=a,b
        return [plain(v) for v in value.list]
    return list(value) if isinstance(value, list | tuple) else [value]


def check_number(
    value: Any,
    key: str,
    *,
    kind: type = int,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    also: tuple[Any, ...] = (),
    example: Any = None,
) -> None:
    """`value` (at config `key`) must be an int (kind=int) or a finite number (kind=float) inside the
    bounds, or one of `also` (None, -1, 'auto' ...); else a one-line ConfigError with an example."""
    if value is ABSENT or any(value is a or (value == a and type(value) is type(a)) for a in also):
        return
    number = not isinstance(value, bool) and isinstance(value, int if kind is int else int | float)
    bounds = [
        f"{op} {_bound(b)}" for op, b in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if b is not None
    ]
    noun = "an integer" if kind is int else "a number"
    inside = (
        number
        and math.isfinite(value)
        and (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )
    if not inside:
        allowed = f"{noun} {' and '.join(bounds)}".strip()
        extra = f" (or {', '.join('null' if a is None else str(a) for a in also)})" if also else ""
        hint = f"; e.g. {key}={example}" if example is not None else ""
        raise ConfigError(f"{key}={show(value)} must be {allowed}{extra}{hint}")


def check_positive(value: Any, key: str, *, allow_none: bool = False) -> None:
    """`value` must be a number above zero (or null where `allow_none`)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key}={value} must be a positive number; set {key}=<n> with n > 0")


def check_choice(value: Any, key: str, choices: tuple[Any, ...]) -> None:
    if value is ABSENT or value in choices:
        return
    shown = list(dict.fromkeys(show(c) for c in choices))
    raise ConfigError(
        f"{key}={show(value)} is not allowed{did_you_mean(str(value), shown)}; choose {key}= one of {', '.join(shown)}"
    )


def check_flag(value: Any, key: str) -> None:
    if value is not ABSENT and not isinstance(value, bool):
        raise ConfigError(f"{key}={show(value)} must be true or false")


# ---- declaring a field's check --------------------------------------------------------------------
Check = Callable[[Any, str], None]  # (value, dotted key) -> None, or a one-line ConfigError


def checked(default: Any, check: Check) -> Any:
    """A dataclass field with `default` whose values `check` accepts."""
    factory = isinstance(default, list | dict)
    return dataclasses.field(
        **({"default_factory": lambda: default} if factory else {"default": default}),
        metadata={CHECK: check},
    )


def bounded(default: Any, **bounds: Any) -> Any:
    """A number field: check_number's bounds (kind, ge, gt, le, lt, also, example)."""
    return checked(default, lambda value, key: check_number(value, key, **bounds))


def one_of(default: Any, choices: tuple[Any, ...]) -> Any:
    return checked(default, lambda value, key: check_choice(value, key, choices))


def flag(default: bool | None) -> Any:
    """true or false (or null where null is the default: the Trainer decides)."""

    def check(value: Any, key: str) -> None:
        if not (value is None and default is None):
            check_flag(value, key)

    return checked(default, check)


def declared_check(node_type: Any, key: str) -> Check | None:
    """The check declared on field `key` of the dataclass `node_type`, if any."""
    if not dataclasses.is_dataclass(node_type):
        return None
    found = {f.name: f for f in dataclasses.fields(node_type)}.get(key)
    return None if found is None else found.metadata.get(CHECK)


def check_fields(cfg: DictConfig, prefix: str = "") -> None:
    """Every declared check of every typed node under `cfg` (the hydra node aside)."""
    node_type = OmegaConf.get_type(cfg)
    for key in cfg:
        if not prefix and key == "hydra":
            continue
        where = f"{prefix}{key}"
        check = declared_check(node_type, str(key))
        if check is not None:
            check(OmegaConf.select(cfg, str(key), default=ABSENT, throw_on_missing=False), where)
        child = cfg._get_node(key)
        if OmegaConf.is_dict(child) and not child._is_missing() and not child._is_none():
            check_fields(child, f"{where}.")


def checked_values(node_type: Any, cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Every field of the dataclass `node_type` with its value in `cfg` (a DictConfig or a plain mapping;
    a missing key takes its default), each passed through its declared check (the key named with
    `prefix`): for a schema no config composes (the bench's keys read from a plain mapping, the study's
    command line and block, a plugin task's untyped task.data)."""
    values = {}
    for f in dataclasses.fields(node_type):
        value = cfg.get(f.name, ABSENT)
        if f.metadata.get(CHECK) is not None:
            f.metadata[CHECK](value, f"{prefix}{f.name}")
        if value is ABSENT:
            value = f.default_factory() if callable(f.default_factory) else f.default
        values[f.name] = value
    return values


def field_error(node_type: Any, key: str, full_key: str, value: Any) -> str | None:
    """The declared check's message for a value OmegaConf refused at compose time (wrong type, null
    for a required field), or None when the field declares no check."""
    check = declared_check(node_type, key)
    if check is None:
        return None
    try:
        check(value, full_key)
    except ConfigError as error:
        return str(error)
    return None
