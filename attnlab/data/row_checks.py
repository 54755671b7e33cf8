"""The values in a task's rows, checked once after loading: what each logical column must hold.

A text column that holds objects (a jsonl field of dicts) would be trained on as their repr, a text
column with nothing in it trains on padding, and token ids written as a string ("1 2 3") would be
read character by character: each is a one-line DataError naming the row, the column and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attnlab.errors import DataError

TEXT_COLUMNS = ("text", "source", "target", "document", "summary")  # the built-in tasks' text columns
TOKEN_COLUMNS = ("ids", "loss_mask")  # pre-tokenized rows (task=mqar, task=lm with ids)


def check_row_values(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], columns: Mapping[str, str], origin: str
) -> None:
    """Raise DataError at the first row whose text or token column holds the wrong kind of value,
    or when a split's text column is empty in every row."""
    for split, rows in splits.items():
        for logical in columns:
            actual = columns[logical]
            key = f"task.data.columns.{logical}={actual}"
            if logical in TEXT_COLUMNS:
                _check_texts(rows, logical, split, origin, key)
            elif logical in TOKEN_COLUMNS:
                _check_token_lists(rows, logical, split, key)


def _check_texts(rows: Sequence[Mapping[str, Any]], logical: str, split: str, origin: str, key: str) -> None:
    for i, row in enumerate(rows):
        value = row.get(logical)
        if value is not None and not isinstance(value, str | int | float) or isinstance(value, bool):
            nested = (
                f"; to read a field inside it write task.data.columns.{logical}={key.split('=', 1)[1]}.<field>"
                if isinstance(value, Mapping)
                else ""
            )
            raise DataError(
                f"row {i} of the {split} split of {origin} holds a {type(value).__name__} in the text column "
                f"({key}), not text; point task.data.columns.{logical}=<a column of strings>{nested}"
            )
    if rows and all(not str(row.get(logical) or "").strip() for row in rows):
        raise DataError(
            f"every text in the {split} split of {origin} is empty ({key}, {len(rows)} rows): there is nothing "
            f"to {'train on' if split == 'train' else 'evaluate'}; point task.data.columns.{logical}=<the column "
            f"that holds the text>"
        )


def _check_token_lists(rows: Sequence[Mapping[str, Any]], logical: str, split: str, key: str) -> None:
    noun = "token ids (integers)" if logical == "ids" else "true/false flags, one per token"
    for i, row in enumerate(rows):
        value = row.get(logical)
        # every row's container, the first element's type (the elements of 10^5 rows are not walked)
        if not isinstance(value, list | tuple) or (value and not isinstance(value[0], int)):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise DataError(
                f"row {i} of the {split} split: {logical} must be a list of {noun}, got {type(value).__name__} "
                f"{shown} ({key}); write it as a JSON list, e.g. [3, 17, 5]"
            )
