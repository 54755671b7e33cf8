"""Text rules shared by the real-data builders: whitespace, placeholders, sentences, split keys.

    normalise_space("Usage:\\t%s  [OPTION]...\\n")   -> "Usage: %s [OPTION]..."
    placeholders("Cannot open %1$s: %s (--force)")   -> ["%s", "%s", "--force"]   (positions dropped)
    split_of("Cannot open %s:", (0.9, 0.05, 0.05))   -> "train" | "validation" | "test"

`split_of` hashes a *group key* (`split_key`: lower case, placeholders unified, punctuation and
spaces dropped), so "Cannot open %s" and "cannot open %d:" always land in the same split: no source
string, nor a near copy of it, is ever in two splits. The hash is SHA-256, stable across Python
versions and machines (unlike `hash()`).
"""

from __future__ import annotations

import collections
import hashlib
import re

# printf conversions (with %1$s positions, flags, width, precision, length; %<PRId64> from inttypes),
# Python's %(name)s, brace fields {0} {name} {name:>8}, shell variables $HOME ${x}, command-line
# options --long-option and -x (after a space, bracket, comma or quote: not the hyphen of
# "»leakproof«-Funktion"; a translated =METAVAR is not part of the option), Qt's %1.
PLACEHOLDER = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t|I64|I32)?[diouxXeEfFgGaAcspn%]"
    r"|%<PRI\w+>"
    r"|%\(\w+\)[-+ #0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"
    r"|%\d+"
    r"|\{\w*(?:[:!][^{}\s]*)?\}"
    r"|\$\{?[A-Za-z_]\w*\}?"
    r"|(?:(?<=^)|(?<=[\s(\[,|'\"`]))--?[A-Za-z][\w-]*"
)
_POSITION = re.compile(r"^%\d+\$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(`])")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalise_space(text: str) -> str:
    """Every run of whitespace (newlines, tabs, non-breaking spaces) -> one space; ends stripped."""
    return " ".join(text.replace("\u00a0", " ").split())


def placeholders(text: str) -> list[str]:
    """The placeholders of a message, sorted, with printf positions dropped (%2$s -> %s), so a
    translation that reorders its arguments still matches its source."""
    return sorted(_POSITION.sub("%", match) for match in PLACEHOLDER.findall(text))


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    """Sentences of prose: a . ! or ? followed by space and a capital, digit or quote ends one."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def split_key(text: str) -> str:
    """The group a text belongs to for splitting: lower case, placeholders unified, no punctuation."""
    text = PLACEHOLDER.sub(" \x00 ", text.lower())
    return " ".join(re.findall(r"\w+|\x00", text))


def split_of(key: str, fractions: tuple[float, float, float]) -> str:
    """train / validation / test for a group key, by SHA-256: deterministic everywhere."""
    position = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12  # in [0, 1)
    train, validation, _ = fractions
    if position < train:
        return "train"
    return "validation" if position < train + validation else "test"


def build_report(read: int, dropped: collections.Counter, rows: list[dict], by: str, label: str) -> dict:
    """A builder's summary: {"read": n, "dropped": {reason: n}, "kept": n, label: {rows[by]: kept}}."""
    kept = collections.Counter(row[by] for row in rows)
    return {"read": read, "dropped": dict(dropped), "kept": len(rows), label: dict(sorted(kept.items()))}
