"""Trivial predictions that every seq2seq score should be compared with."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def copy_baseline(rows: Sequence[Mapping], *, column: str = "source") -> list[str]:
    """Translation's floor: the prediction is the source text itself."""
    return [str(row[column]) for row in rows]


def lead_baseline(rows: Sequence[Mapping], n: int = 3, *, column: str = "document") -> list[str]:
    """Summarisation's floor ("lead-n"): the first `n` sentences of the document."""
    return [" ".join(split_sentences(str(row[column]))[:n]) for row in rows]


def first_line_baseline(rows: Sequence[Mapping], *, column: str = "document") -> list[str]:
    """Summarisation's other floor: the document's first non-empty line (the whole document when it
    has no line breaks). On documents whose first line is a topic sentence it beats lead-3."""
    out = []
    for row in rows:
        lines = [line.strip() for line in str(row[column]).splitlines() if line.strip()]
        out.append(lines[0] if lines else "")
    return out


def split_sentences(text: str) -> list[str]:
    """Sentences ending in . ! or ? followed by whitespace (a space before the mark is allowed)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]
