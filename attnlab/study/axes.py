"""The study's extra axes: `grid.<key>=[...]` (crossed, reported per point) and `tune.<key>=[...]`
(crossed, one value selected per cell on validation), their checks, and how a value names a cell.

An axis is (config key, values). Grid and tune axes come from the task's `study:` block (`grid:` /
`tune:` mappings) and the command line (`grid.<key>=[...]` replaces the block's list for that key;
`grid={}` drops the block's axes). A cell's name holds one short token per axis, so it is stable
(it depends only on the cell's own values: adding a value later keeps the finished runs) and
filesystem- and Hydra-safe (letters, digits, `_` and `-`):

    linear-L128-s0                          no axes: the name the study always used
    linear-L128-d_model64-s0-lr0p003        grid model.d_model=64, tune task.module.lr=0.003
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from attnlab.config.fields import as_list, plain
from attnlab.errors import ConfigError, did_you_mean

Axes = tuple[tuple[str, tuple[Any, ...]], ...]  # ((key, values), ...) in the order given
Point = tuple[tuple[str, Any], ...]  # ((key, value), ...): one value per axis

# keys an axis may not vary, and what to use instead
RESERVED = {
    "attention": "list the variants with variants=[...]",
    "seed": "list the seeds with seeds=[...]",
    "task": "a study is one task: run one study per task, each with its own out=DIR",
    "experiment": "choose the preset as a plain override (experiment=NAME), one study per preset",
}
SAFE = re.compile(r"[A-Za-z0-9_-]+")


def merge(kind: str, block: Mapping[str, Any] | None, given: Mapping[str, Any] | None, cleared: bool) -> Axes:
    """The block's axes, then the command line's (a key given replaces the block's list; `cleared`:
    `kind={}` dropped the block's axes). In the block, `key: null` drops an axis a preset inherits (an
    experiment's study block is merged into the task's, and a merge cannot remove a key)."""
    axes: dict[str, list[Any]] = {}
    for source in (({} if cleared else block) or {}, given or {}):
        for key, values in flatten(plain(source)).items():
            if values is None and source is not given:
                axes.pop(str(key), None)
                continue
            values = as_list(values)
            if not values:
                raise ConfigError(
                    f"{kind}.{key}=[] is empty: the study would have no cells; give at least one value, "
                    f"e.g. {kind}.{key}=[a,b], or leave {kind}.{key} out"
                )
            unique = []
            for value in values:
                if value not in unique:
                    unique.append(value)
            axes[str(key)] = unique
    return tuple((key, tuple(values)) for key, values in axes.items())


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{model: {d_model: [..]}}` and `{model.d_model: [..]}` alike, as {"model.d_model": [..]}."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_keys(grid: Axes, tune: Axes, *, passed: Sequence[str], length_keys: Sequence[str]) -> None:
    """One-line errors for an axis key the study sets itself, sets twice, or that an override also sets."""
    seen: dict[str, str] = {}
    for kind, axes in (("grid", grid), ("tune", tune)):
        for key, _ in axes:
            bare = key.lstrip("+~")
            if bare != key:
                raise ConfigError(f"{kind}.{key}: an axis sets an existing key; write {kind}.{bare}=[...]")
            if key in RESERVED:
                raise ConfigError(f"{kind}.{key}: the study cannot vary {key} as an axis; {RESERVED[key]}")
            if key in length_keys:
                raise ConfigError(
                    f"{kind}.{key}: the study sets {key} from each length (its data's length knobs, study.length_overrides); "
                    f"vary it with lengths=[...]"
                )
            if key in seen:
                raise ConfigError(f"{kind}.{key} and {seen[key]}.{key} both vary {key}; keep one of them")
            seen[key] = kind
            if key in passed:
                raise ConfigError(
                    f"{key} is given both as {kind}.{key}=[...] and as the override {key}=...; the override "
                    f"would win in every cell: drop it, or give {kind}.{key}=[value] to fix the axis at one value"
                )


def check_keys_exist(cfg: DictConfig, axes: Axes, kind: str, groups: Sequence[str]) -> None:
    """Every axis key is a config group or a key of the composed run config (a typo is an error, not a
    silently added key); `cfg` is one cell's config composed without its axis values."""
    for key, _ in axes:
        if key in groups:
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if isinstance(parent, DictConfig) and leaf in list(
            parent
        ):  # `in` skips keys whose value is ??? (missing)
            continue
        where = f"'{parent_key}'" if parent_key else "the run config"
        known = list(parent.keys()) if isinstance(parent, DictConfig) else []
        hint = did_you_mean(leaf, [str(k) for k in known]) if known else ""
        raise ConfigError(
            f"{kind}.{key}: {where} has no key '{leaf}'{hint}; an axis varies an existing config key "
            f"(python -m attnlab --cfg job shows them)"
        )


def points(axes: Axes) -> list[Point]:
    """The cartesian product of the axes' values, the first axis slowest; [()] without axes."""
    keys = [key for key, _ in axes]
    return [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


# ---- names -----------------------------------------------------------------------------------------
def labels(keys: Sequence[str]) -> dict[str, str]:
    """A short label per axis key: its last component (d_model), or the whole key with `_` for `.`
    where two keys share a last component."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    out = {}
    for key, short in zip(keys, last, strict=True):
        label = short if last.count(short) == 1 else key.replace(".", "_")
        out[key] = re.sub(r"[^A-Za-z0-9_]", "_", label)
    return out


def token(value: Any) -> str:
    """A value as a name token: numbers and simple words as they read (`.` as `p`: 0.003 -> 0p003),
    anything else a readable prefix and a short hash of its exact value."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, int | float):
        return f"{value}".replace(".", "p").replace("+", "")
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if SAFE.fullmatch(text) and len(text) <= 32:
        return text
    digest = hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:16].strip("_") + "-" + digest


def tag(point: Point, names: Mapping[str, str]) -> str:
    """`-<label><token>` per axis of the point ('' for none)."""
    parts = []
    for key, value in point:
        text = token(value)
        joiner = "" if text[:1].isdigit() or text[:1] == "-" else "_"
        parts.append(f"-{names[key]}{joiner}{text}")
    return "".join(parts)


def describe(point: Point) -> str:
    """`model.d_model=64 task.data.builtin.kind=fuzzy_recall` (for headings and the console)."""
    return " ".join(f"{key}={value_text(value)}" for key, value in point)


def value_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)
