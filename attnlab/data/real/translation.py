"""English -> German pairs from the gettext catalogues installed on a Debian machine.

    translation_pairs(catalogues, rules) -> (rows, report)
      rows:   [{"source": en, "target": de, "origin": "coreutils", "split": "train"}, ...]
      report: {"read": n, "dropped": {reason: n}, "kept": n, "catalogues": {name: kept}}

Each catalogue (`<locale dir>/de/LC_MESSAGES/<name>.mo`) holds the German translations of one
program's messages, written by its translators: real, human parallel text. The rules, in order
(each dropped entry is counted under its reason):

1. `context` — entries with a msgctxt ("File" as a menu vs a noun): the pair is ambiguous without it;
   `plural` — entries with plural forms (msgstr[0] is not always the singular);
2. `empty` — an empty source or translation after whitespace normalisation (all whitespace runs,
   newlines of multi-line help texts included, become one space);
3. `identical` — translation equal to the source (untranslatable names, formats, option lists);
4. `too_short` / `too_long` — sources of fewer than `min_words` words (single words: "Open",
   "Size" are ambiguous out of context) or more than `max_words` words or `max_chars` characters
   (long --help screens; the recipes train on short messages);
5. `length_ratio` — translation length / source length (characters) outside
   [1 / max_ratio, max_ratio]: truncated or misaligned entries;
6. `placeholders` — the placeholders of source and translation differ (printf %s/%d/%1$s, {name},
   $VAR, --options, compared as sorted lists with positions dropped): a translation that loses or
   invents an argument is broken, and a model must learn to carry them over unchanged.

Placeholders, options and identifiers are never altered. Then duplicates: one row per distinct
source; when catalogues translate it differently the translation shared by most catalogues wins
(ties: the first catalogue by name), and `origin` names the first catalogue holding the kept pair.
Finally each source goes to train/validation/test by a hash of its group key (text.split_key), so
no source, nor a case/punctuation/placeholder variant of it, is in two splits.
"""

from __future__ import annotations

import collections
import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from attnlab.data.real.mo import read_mo
from attnlab.data.real.text import build_report, normalise_space, placeholders, split_key, split_of, words

# Where Debian installs German catalogues; iso_* (from iso-codes) are lists of country, language and
# currency names, not messages, and are left out.
CATALOGUE_GLOBS = (
    "/usr/share/locale/de/LC_MESSAGES/*.mo",
    "/usr/share/vim/vim*/lang/de/LC_MESSAGES/*.mo",
)
NAME_LISTS = ("iso_",)


@dataclass(frozen=True)
class TranslationRules:
    min_words: int = 2
    max_words: int = 30
    max_chars: int = 200
    max_ratio: float = 3.0
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)


def find_catalogues(patterns: Iterable[str] = CATALOGUE_GLOBS) -> list[Path]:
    """The German catalogues on this machine, name lists excluded, sorted by path."""
    found = {Path(p) for pattern in patterns for p in glob.glob(pattern)}
    return sorted(p for p in found if not p.name.startswith(NAME_LISTS))


def catalogue_name(path: Path) -> str:
    """coreutils.mo -> coreutils"""
    return path.stem


def translation_pairs(catalogues: Iterable[Path], rules: TranslationRules = TranslationRules()):
    """(rows, report) — see the module docstring for the rules."""
    dropped: collections.Counter[str] = collections.Counter()
    candidates: dict[str, list[tuple[str, str]]] = collections.defaultdict(
        list
    )  # source -> [(target, origin)]
    read = 0
    for path in sorted(catalogues):
        origin = catalogue_name(path)
        for entry in read_mo(path):
            read += 1
            reason = _rejection(entry, rules)
            if reason:
                dropped[reason] += 1
                continue
            candidates[normalise_space(entry.msgid)].append((normalise_space(entry.msgstrs[0]), origin))
    rows, duplicates = [], 0
    for source in sorted(candidates):
        options = candidates[source]
        duplicates += len(options) - 1
        votes = collections.Counter(target for target, _ in options)
        first_origin = {}
        for target, origin in sorted(options, key=lambda option: option[1]):
            first_origin.setdefault(target, origin)
        target = min(votes, key=lambda t: (-votes[t], first_origin[t]))
        rows.append(
            {
                "source": source,
                "target": target,
                "origin": first_origin[target],
                "split": split_of(split_key(source), rules.fractions),
            }
        )
    dropped["duplicate"] = duplicates
    return rows, build_report(read, dropped, rows, by="origin", label="catalogues")


def _rejection(entry, rules: TranslationRules) -> str | None:
    if entry.context is not None:
        return "context"
    if entry.msgid_plural is not None:
        return "plural"
    source, target = normalise_space(entry.msgid), normalise_space(entry.msgstrs[0])
    if not source or not target:
        return "empty"
    if source == target:
        return "identical"
    n = len(words(source))
    if n < rules.min_words:
        return "too_short"
    if n > rules.max_words or len(source) > rules.max_chars:
        return "too_long"
    if not 1 / rules.max_ratio <= len(target) / len(source) <= rules.max_ratio:
        return "length_ratio"
    if placeholders(source) != placeholders(target):
        return "placeholders"
    return None
