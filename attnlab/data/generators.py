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

A generator's LENGTH is what `task.eval_lengths` changes to test trained weights on longer (or
shorter) sequences, and what a study's lengths= set (attnlab.study.plan): a generator with a `seq_len`
parameter needs nothing more; one whose length is other knobs, or whose rows the task cuts into
windows, declares it in LENGTH_KNOBS. The other way round, the length of the rows a node's knobs
generate (`generated_length`: `seq_len`, or GENERATED_LENGTH's entry) is checked against model.max_len.
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
from attnlab.data.mad import sequence_length as mad_length
from attnlab.data.mqar import mqar
from attnlab.data.passkey import passkey
from attnlab.data.seq2seq_builtin import summarisation_builtin, translation_builtin
from attnlab.errors import ConfigError, did_you_mean

GENERATORS: dict[str, Callable[..., dict[str, list[dict]]]] = {
    "listops": listops,
    "translation": translation_builtin,
    "summarisation": summarisation_builtin,
    "mqar": mqar,
    "mad": mad,
    "corpus": corpus,
    "passkey": passkey,
}
GENERATOR_KEY = "generator"  # the field naming the generator in a `builtin` node
LENGTH_KEY = "seq_len"  # the conventional length knob: a generator with it needs no LENGTH_KNOBS entry
SPLIT_SIZES = {"train": "n_train", "validation": "n_validation", "test": "n_test"}

# Generators whose length is not `seq_len`: a length in tokens -> the knobs that make their rows that long.
LENGTH_KNOBS: dict[str, Callable[[int], dict[str, int]]] = {
    # characters = tokens for the byte tokenizer; half to full length, as the classify study's lengths
    "listops": lambda n: {"min_length": n // 2, "max_length": n},
    # documents the LM task packs and cuts into windows of the length it evaluates: no knob changes
    "corpus": lambda n: {},
}


# Generators whose longest row is not `seq_len` tokens long: their knobs (defaults filled in) -> that length
# in tokens, the inverse of LENGTH_KNOBS (generated_length).
GENERATED_LENGTH: dict[str, Callable[[Mapping[str, Any]], int | None]] = {
    "listops": lambda knobs: knobs["max_length"],  # characters = tokens for the byte tokenizer
    "mad": lambda knobs: mad_length(knobs["kind"], knobs["seq_len"]),  # seq_len null: the kind's own
}


def generated_length(builtin: Mapping) -> int | None:
    """The length in tokens of the longest row a task's `data.builtin` node generates (None: its rows have
    no set length, e.g. corpus's documents): what model.max_len must hold (attnlab.config.sequence_lengths)."""
    name, params = generator_params(builtin)
    if name is None:
        return None
    knobs = {
        p.name: p.default
        for p in inspect.signature(get_generator(name)).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    } | params
    if name in GENERATED_LENGTH:
        return GENERATED_LENGTH[name](knobs)
    return knobs.get(LENGTH_KEY)


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


def length_knobs(name: str, length: int) -> dict[str, int] | None:
    """The knobs that make generator `name`'s rows `length` tokens long; None when it has no length."""
    if name in LENGTH_KNOBS:
        return LENGTH_KNOBS[name](length)
    if LENGTH_KEY in inspect.signature(get_generator(name)).parameters:
        return {LENGTH_KEY: length}
    return None


def generate_test_at(builtin: Mapping, length: int, n_test: int | None) -> list[dict]:
    """The test rows of a task's `data.builtin` node regenerated at `length` tokens: the same generator,
    other knobs and seed, `n_test` rows (None: the generator's own count), no train/validation rows."""
    name, params = generator_params(builtin)
    knobs = length_knobs(name, length) if name else None
    if knobs is None:
        raise ConfigError(f"built-in generator '{name}' has no sequence length; remove task.eval_lengths")
    function = get_generator(name)
    accepted = inspect.signature(function).parameters
    sizes = {SPLIT_SIZES["train"]: 0, SPLIT_SIZES["validation"]: 0}
    if n_test is not None:
        sizes[SPLIT_SIZES["test"]] = n_test
    return function(**params | knobs | {k: v for k, v in sizes.items() if k in accepted})["test"]


def store_generator_configs() -> None:
    """Store every generator's structured config in Hydra's ConfigStore as group `builtin`."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in GENERATORS:
        store.store(group="builtin", name=name, node=generator_config_class(name), provider="attnlab")
