"""The built-in data generators by name, and their knobs as structured configs.

A generator is a function with keyword-only, typed parameters with defaults (the split sizes
n_train/n_validation/n_test, a seed, and its own difficulty knobs) that returns {split: rows}.
Its signature is the single source of those knobs: `generator_config_class(name)` turns it into a
dataclass, stored in Hydra's ConfigStore as group `builtin`, option <name>. A task config places it
under its data config:

    defaults:
      - /builtin@data.builtin: listops
      - _self_

so `task.data.builtin.max_length=2000` is an ordinary typed key (no `+`), its default is the
generator's, and a misspelt key is rejected with the closest match. The node's first field,
`generator`, names the generator it configures (set by that choice; not a knob).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import field, make_dataclass
from typing import Any

from attnlab.data.corpus import corpus
from attnlab.data.listops import listops
from attnlab.data.mad import mad
from attnlab.data.mqar import mqar
from attnlab.data.seq2seq_builtin import summarisation_builtin, translation_builtin
from attnlab.errors import ConfigError, did_you_mean

GENERATORS: dict[str, Callable[..., dict[str, list[dict]]]] = {
    "listops": listops,
    "translation": translation_builtin,
    "summarisation": summarisation_builtin,
    "mqar": mqar,
    "mad": mad,
    "corpus": corpus,
}
GENERATOR_KEY = "generator"  # the field naming the generator in a `builtin` node


def get_generator(name: str) -> Callable[..., dict[str, list[dict]]]:
    if name not in GENERATORS:
        raise ConfigError(
            f"unknown built-in generator '{name}'{did_you_mean(name, GENERATORS)}; "
            f"available: {', '.join(GENERATORS)}"
        )
    return GENERATORS[name]


def generator_config_class(name: str) -> type:
    """The dataclass {generator: name, <every keyword-only parameter with its type and default>}."""
    function = get_generator(name)
    hints = typing.get_type_hints(function)
    specs: list[tuple[str, Any, Any]] = [(GENERATOR_KEY, str, field(default=name))]
    for p in inspect.signature(function).parameters.values():
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            raise TypeError(f"generator {name}: parameter '{p.name}' must be keyword-only with a default")
        specs.append((p.name, hints[p.name], field(default=p.default)))
    return make_dataclass(f"{function.__name__.title().replace('_', '')}Config", specs)


def generator_params(builtin: Mapping) -> tuple[str | None, dict[str, Any]]:
    """(generator name or None, its keyword arguments) from a task's `data.builtin` node."""
    params = {str(k): v for k, v in dict(builtin or {}).items()}
    return params.pop(GENERATOR_KEY, None), params


def store_generator_configs() -> None:
    """Store every generator's structured config in Hydra's ConfigStore as group `builtin`."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in GENERATORS:
        store.store(group="builtin", name=name, node=generator_config_class(name), provider="attnlab")
