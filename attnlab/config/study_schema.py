"""`python -m attnlab.study`'s keys as typed schemas: StudyArgs (its own command-line keys,
attnlab.study.cli STUDY_ARGS) and StudyBlock (a task's `study:` block, conf/task/<name>.yaml), each key's
type, default and per-field check declared side by side, as BenchSchema's are
(attnlab.config.bench_schema, attnlab.config.fields).

Neither is stored in Hydra's ConfigStore: no config composes the study's own keys (attnlab.study.cli
reads them from the command line, beside the overrides it passes to every run), and the block is part
of a task's config, which a plugin task writes without listing a schema. `fields.checked_values` runs the
declared checks on the values given. What relates two keys or needs the composed task is checked by
attnlab.study.plan: the block's defaults against the command line's, a length key the task's generator
has, skip entries naming axes that exist, mean_over a grid axis, the variants against the attention
roles the task's model uses.

The checks keep the study's own wording (`lengths: 'abc' is not a positive integer`), which predates
attnlab.config.fields' `check_number`; the bad-input catalogue holds users to it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attnlab.config.fields import ABSENT, as_list, checked, plain
from attnlab.errors import ConfigError

TEMPLATE_FIELDS = ("length", "half")  # what a study.length_overrides template may name in braces
EXAMPLES = {"variants": "[multihead,linear]", "lengths": "[64,128]", "seeds": "[0,1]"}


def variant_layers(name: str, key: str = "variants") -> list[str]:
    """The registered variants a name where a variant goes stands for: itself, or a hybrid's one per
    layer (attnlab.nn.pattern); an unknown name is `<key>: <the registry's did-you-mean>`."""
    from attnlab.attention.registry import find_attention
    from attnlab.nn.pattern import is_pattern, parse_pattern

    try:
        if is_pattern(name):  # a hybrid: every layer's name, values and count
            return [layer.attention.name for layer in parse_pattern(name.split("+"), key=f"'{name}'")]
        find_attention(name)  # the one check of an attention name (attnlab.attention.registry)
        return [name]
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None


# ---- the checks: (value, key) -> None or a one-line ConfigError; ABSENT and null pass (the default) ----
def _cells(item: Any) -> Any:
    """A grid axis of the study's own (variants, lengths, seeds): a non-empty list, each item checked."""

    def check(value: Any, key: str) -> None:
        if value is ABSENT or value is None:
            return
        values = as_list(value)
        if not values:
            raise ConfigError(
                f"{key}= is empty: the grid has no cells; give at least one, e.g. {key}={EXAMPLES[key]}"
            )
        for v in values:
            item(v, key)

    return check


def _variant(name: Any, key: str) -> None:
    variant_layers(str(name), key)


def _positive_length(n: Any, key: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"{key}: {n!r} is not a positive integer; e.g. {key}=[64,128,256]")


def _seed(n: Any, key: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise ConfigError(f"{key}: {n!r} is not an integer; e.g. {key}=[0,1]")


def _eval_lengths(value: Any, key: str) -> None:
    if value is ABSENT or value is None:
        return
    values = as_list(value)
    if not values:
        raise ConfigError(f"{key}=[] is empty; give the test lengths, e.g. {key}=[256,1024,4096]")
    for n in values:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"{key}: {n!r} is not a positive integer; e.g. {key}=[256,4096]")


def _flag(value: Any, key: str) -> None:
    if value is not ABSENT and not isinstance(value, bool):
        raise ConfigError(f"{key}={value}: expected true or false")


def _skip(value: Any, key: str) -> None:
    """A list of {axis: value or [values]} (one mapping alone is a one-entry list); which axes exist is
    the study's (attnlab.study.plan check_skip)."""
    if value is ABSENT or value is None:
        return
    for entry in as_list(value):
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(
                f"{key}: {entry!r} is not a mapping of axes to values; e.g. "
                f"{key}=[{{length:64,task.data.builtin.num_kv_pairs:64}}]"
            )


def _templates(value: Any, key: str) -> None:
    """A list of `key=value` overrides a length sets, with {length} and {half} in braces."""
    if value is ABSENT or value is None:
        return
    if not isinstance(plain(value), list):
        raise ConfigError(
            f'{key}={value} must be a list of templates, e.g. {key}: ["model.max_len={{length}}"]'
        )
    for template in (str(t) for t in plain(value)):
        for _, name, _, _ in string.Formatter().parse(template):
            if name is not None and name not in TEMPLATE_FIELDS:
                raise ConfigError(
                    f"{key} '{template}' uses {{{name}}}; only {{length}} and {{half}} may appear in braces"
                )
        if "=" not in template:
            raise ConfigError(f"{key} '{template}' is not key=value; write e.g. \"model.max_len={{length}}\"")


def _overrides(value: Any, key: str) -> None:
    if value is ABSENT or value is None:
        return
    if not isinstance(plain(value), list):
        raise ConfigError(f'{key}={value} must be a list of overrides, e.g. {key}: ["experiment=mqar"]')


def _axes(value: Any, key: str) -> None:
    """{config key: values} (nested or dotted; `key: null` drops an axis a preset inherits)."""
    if value is not ABSENT and value is not None and not isinstance(plain(value), Mapping):
        raise ConfigError(
            f"{key}={value} must map config keys to their values, e.g. {key}: {{model.d_model: [64, 128]}}"
        )


def _per_length(value: Any, key: str) -> None:
    """{config key: {length: value}}: a value that follows the length."""
    if value is ABSENT or value is None:
        return
    block = plain(value)
    if not isinstance(block, Mapping):
        raise ConfigError(
            f"{key}={value} must map config keys to {{length: value}}, e.g. "
            f"{key}: {{task.data.batch_size: {{64: 512, 128: 256}}}}"
        )
    for name, mapping in block.items():
        if not isinstance(mapping, dict) or not all(isinstance(n, int) for n in mapping):
            raise ConfigError(
                f"{key}.{name} must map lengths to values, e.g. {key}: {{{name}: {{64: 4, 128: 8}}}}"
            )


@dataclass
class StudyArgs:
    """`python -m attnlab.study`'s own keys (the rest of the command line goes to every run). A list
    key takes `[a,b]`, `a,b` or a single `a`; None takes the task's study block's default."""

    task: str | None = None  # a task with a study: block (required: attnlab.study.cli says which exist)
    variants: Any = checked(None, _cells(_variant))  # registered names or hybrid patterns
    lengths: Any = checked(None, _cells(_positive_length))
    seeds: Any = checked(None, _cells(_seed))
    out: str | None = None  # the study's directory; null = studies/<task>/
    eval_lengths: Any = checked(None, _eval_lengths)  # every run is also tested at these lengths
    allow_partial: Any = checked(False, _flag)  # Any, not bool: `maybe` is refused, not read as a string
    mean_over: str | None = None  # a grid key averaged per variant (which: attnlab.study.plan)
    skip: Any = checked(None, _skip)  # cells left out: a list of {axis: value or [values]}


@dataclass
class StudyBlock:
    """A task's `study:` block (conf/task/<name>.yaml, or an experiment preset's), in the order its
    keys are listed when one is unknown. `variants`, `lengths`, `seeds`, `eval_lengths`, `mean_over` and
    `skip` are the defaults of StudyArgs' keys, checked by StudyArgs' checks where the command line
    leaves them: a default the command line replaces is never read (a plugin task's block may name a
    variant installed with it alone)."""

    # templates with {length} and {half}: what a length sets beyond the data's length knobs
    length_overrides: Any = checked(None, _templates)
    variants: Any = None
    lengths: Any = None
    seeds: Any = None
    overrides: Any = checked(None, _overrides)  # applied before the command line's own overrides
    grid: Any = checked(None, _axes)  # {config key: values}: crossed, reported per value
    tune: Any = checked(None, _axes)  # {config key: values}: the best on validation per cell
    mean_over: str | None = None
    skip: Any = checked(None, _skip)
    per_length: Any = checked(None, _per_length)  # {config key: {length: value}}
    eval_lengths: Any = None
