"""Where a task's rows come from: the hub, local files, a built-in generator, or a shipped real set.

    load_splits(cfg.task.data, columns={"text": "text", "label": "label"}, builtin=listops)
      -> {"train": [{"text": ..., "label": ...}, ...], "validation": [...], "test": [...]}

Every source ends in the same three splits of row dicts keyed by the task's LOGICAL column names
(the keys of `columns`); `columns` maps each to the column in the source, and a dotted name such as
"translation.de" reaches into a nested dict (wmt14 rows are {"translation": {"de": ..., "en": ...}}).

Split rules, the same for the hub and for files:
- validation may be called validation/valid/val/dev; when there is none, a deterministic 10% of
  train (seed 0) becomes validation (logged);
- test, when there is none, is the validation split (logged as a warning: the "test" score is then
  a validation score);
- task.data.limit.<split> keeps a deterministic random subset (seed 0) of that many rows, so a file
  or hub set sorted by label still gives mixed labels.

Shipped real sets (source=shipped name=gettext_de|manpages; attnlab.data.real) are gzipped jsonl
files inside the package, read exactly as source=files reads them; a named source, like source=hf
name=..., because their paths are the package's business, not the user's.

Built-in generators (source=builtin) are callables with keyword-only parameters — the split sizes
n_train/n_validation/n_test, a seed, and their own knobs — returning {split: rows} with the logical
column names already; task.data.builtin is passed to them as keyword arguments (unknown names are
an error), and `columns` is not used for them. Their knobs are ordinary config keys, typed and
defaulted by the signature: see attnlab.data.generators.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attnlab.data.row_checks import check_row_values
from attnlab.data.splits import SPLITS
from attnlab.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

SOURCES = ("builtin", "hf", "files", "shipped")
VALIDATION_FRACTION = 0.1

Table = Any  # a list of row dicts, or a datasets.Dataset: both have len() and are sliced by _take


def load_splits(
    data: Mapping,
    *,
    columns: Mapping[str, str],
    builtin: Callable[..., dict[str, list[dict]]] | None,
    cache_dir: str | Path | None = None,
) -> dict[str, list[dict]]:
    """The train/validation/test rows of a task's data config, keyed by logical column names."""
    source = _get(data, "source", "builtin")
    if source == "builtin":
        tables, origin = _builtin_tables(data, builtin), "the built-in dataset"
        columns = {name: name for name in columns}
    elif source == "hf":
        from attnlab.data.hub import load_hub

        name = _get(data, "name")
        tables, origin = load_hub(name, _get(data, "subset"), cache_dir=cache_dir), f"hub dataset '{name}'"
    elif source == "files":
        from attnlab.data.files import load_files

        tables, origin = load_files(data, cache_dir=cache_dir)
    elif source == "shipped":
        from attnlab.data.files import read_table
        from attnlab.data.real import shipped_files

        name = _get(data, "name")
        files = shipped_files(name)
        tables = {split: read_table(path, "name", cache_dir=cache_dir) for split, path in files.items()}
        origin = f"shipped dataset '{name}'"
    else:
        raise DataError(
            f"unknown data source '{source}'{did_you_mean(source, SOURCES)}; "
            f"choose task.data.source={'|'.join(SOURCES)}"
        )
    tables = complete_splits(tables, origin)
    tables = _apply_limits(tables, _get(data, "limit") or {})
    for split in SPLITS:
        if len(tables[split]) == 0:
            fix = (
                f"set task.data.builtin.n_{split}=<rows>"
                if source == "builtin"
                else f"add rows to it, or leave task.data.{split} unset to derive it from train"
            )
            raise DataError(f"split '{split}' of {origin} is empty; {fix}")
    splits = {split: select_columns(tables[split], columns, origin=origin, split=split) for split in SPLITS}
    check_row_values(splits, columns, origin)
    return splits


def check_labels(rows: Sequence[Mapping], *, column: str = "label", split: str = "train") -> dict[Any, int]:
    """Count the classes of a classification split; fewer than two classes is a DataError."""
    counts: dict[Any, int] = {}
    for i, row in enumerate(rows):
        label = row.get(column)
        if label is None:
            raise DataError(f"row {i} of the {split} split has no '{column}' label; fill it or drop the row")
        if isinstance(label, float) and label.is_integer():
            label = int(label)  # 1.0 from a CSV/parquet float column is class 1
        if isinstance(label, float) or not isinstance(label, str | int):
            raise DataError(
                f"row {i} of the {split} split has label {label!r} in '{column}': a class must be an integer or a "
                f"name, not a {type(label).__name__}; this looks like a regression target or the wrong column "
                f"(set task.data.columns.label=<column of class ids or names>)"
            )
        counts[label] = counts.get(label, 0) + 1
    if len(counts) == len(rows) >= 10:
        raise DataError(
            f"every row of the {split} split has its own '{column}' value ({len(rows)} classes for {len(rows)} rows); "
            f"that is not a label column: set task.data.columns.label=<column of class ids or names>"
        )
    if len(counts) < 2:
        only = next(iter(counts), None)
        raise DataError(
            f"the {split} split has {len(counts)} class(es) in '{column}' (only {only!r}); a classifier needs "
            f"at least two: check task.data.columns.label=<column> or use more rows (task.data.limit.{split})"
        )
    return dict(sorted(counts.items(), key=lambda kv: str(kv[0])))


def complete_splits(tables: Mapping[str, Table], origin: str) -> dict[str, Table]:
    """Carve validation from train when absent; use validation as test when absent."""
    if "train" not in tables:
        raise DataError(
            f"{origin} has no train split (found: {', '.join(tables) or 'none'}); "
            f"name one split train, e.g. task.data.train=<file>"
        )
    out = dict(tables)
    if "validation" not in out:
        train = out["train"]
        n = len(train)
        if n < 2:
            raise DataError(
                f"{origin}: train has {n} row(s), too few to carve a validation split; "
                f"provide one with task.data.validation=<file>"
            )
        k = max(1, round(VALIDATION_FRACTION * n))
        order = list(range(n))
        random.Random(0).shuffle(order)
        out["validation"], out["train"] = _take(train, sorted(order[:k])), _take(train, sorted(order[k:]))
        log.info(
            "%s has no validation split: using a deterministic 10%% of train (%d of %d rows)", origin, k, n
        )
    if "test" not in out:
        out["test"] = out["validation"]
        log.warning(
            "%s has no test split: the validation split is used as test (test scores = validation scores)",
            origin,
        )
    return {split: out[split] for split in SPLITS}


def select_columns(table: Table, columns: Mapping[str, str], *, origin: str, split: str) -> list[dict]:
    """Rows as dicts {logical: value}; a dotted source name ('translation.de') reads a nested field."""
    names = _column_names(table)
    paths: dict[str, list[str]] = {}
    for logical, actual in columns.items():
        actual = str(actual)
        if actual in names:
            paths[logical] = [actual]
        elif "." in actual and actual.split(".")[0] in names:
            paths[logical] = actual.split(".")
        else:
            raise DataError(
                f"column '{actual}' not found in the {split} split of {origin}{did_you_mean(actual, names)}; "
                f"available columns: {', '.join(names) or 'none'}; remap with task.data.columns.{logical}=<column>"
            )
    tops = sorted({path[0] for path in paths.values()})
    rows = table.select_columns(tops).to_list() if hasattr(table, "select_columns") else table
    return [
        {logical: _dig(row, path, i, split, origin) for logical, path in paths.items()}
        for i, row in enumerate(rows)
    ]


def _dig(row: Mapping, path: list[str], i: int, split: str, origin: str) -> Any:
    value: Any = row
    for depth, key in enumerate(path):
        if not isinstance(value, Mapping) or key not in value:
            keys = list(value) if isinstance(value, Mapping) else []
            where = ".".join(path[:depth]) or "the row"
            raise DataError(
                f"row {i} of the {split} split of {origin}: {where} has no '{key}'{did_you_mean(key, keys)} "
                f"(keys: {', '.join(map(str, keys)) or 'none'}); remap with task.data.columns.<name>=<column>"
            )
        value = value[key]
    return value


def _check_builtin_types(builtin: Callable, signature: inspect.Signature, params: Mapping) -> None:
    """task.data.builtin.<key> values against the generator's annotations (int, float, bool, str)."""
    import typing

    try:
        hints = typing.get_type_hints(builtin)
    except Exception:  # unresolvable annotations: the generator checks its own arguments
        return
    nouns = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    for key, value in params.items():
        kind = hints.get(key)
        if kind not in nouns:
            continue
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        ok = ok or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise DataError(
                f"task.data.builtin.{key}={value!r} is not valid: expected {nouns[kind]}; "
                f"set task.data.builtin.{key}=<{nouns[kind]}> (default {signature.parameters[key].default!r})"
            )


def _builtin_tables(
    data: Mapping, builtin: Callable[..., dict[str, list[dict]]] | None
) -> dict[str, list[dict]]:
    if builtin is None:
        raise DataError(
            "this task has no built-in dataset; use task.data.source=files task.data.path=<file> "
            "or task.data.source=hf task.data.name=<hub dataset>"
        )
    from attnlab.data.generators import generator_params

    _, params = generator_params(_plain(_get(data, "builtin") or {}))  # the `generator` field is no knob
    signature = inspect.signature(builtin)
    accepted = [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        for key in params:
            if key not in accepted:
                raise DataError(
                    f"unknown parameter task.data.builtin.{key} for {getattr(builtin, '__name__', 'the generator')}"
                    f"{did_you_mean(key, accepted)}; accepted: {', '.join(accepted)}"
                )
    _check_builtin_types(builtin, signature, params)
    splits = builtin(**params)
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise TypeError(
            f"built-in generator {builtin!r} returned no {missing} split(s); it must return {SPLITS}"
        )
    return {split: list(splits[split]) for split in SPLITS}


def _apply_limits(tables: dict[str, Table], limit: Mapping) -> dict[str, Table]:
    out = dict(tables)
    for split, cap in _plain(limit).items():
        if split not in SPLITS:
            raise DataError(
                f"unknown split task.data.limit.{split}{did_you_mean(split, SPLITS)}; use one of {', '.join(SPLITS)}"
            )
        if cap is None:
            continue
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise DataError(f"task.data.limit.{split}={cap!r} must be a positive integer or null")
        n = len(out[split])
        if cap < n:
            out[split] = _take(out[split], sorted(random.Random(0).sample(range(n), cap)))
    return out


def _take(table: Table, indices: list[int]) -> Table:
    if isinstance(table, list):
        return [table[i] for i in indices]
    return table.select(indices)


def _column_names(table: Table) -> list[str]:
    if hasattr(table, "column_names"):
        return list(table.column_names)
    names: dict[str, None] = {}
    for row in table[:100]:
        names.update(dict.fromkeys(row))
    return list(names)


def _get(data: Mapping, key: str, default: Any = None) -> Any:
    value = data.get(key, default) if data is not None else default
    return default if value is None else value


def _plain(value: Any) -> Any:
    """DictConfig/ListConfig (or any Mapping/sequence) -> plain dict/list, without importing omegaconf."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value
