"""Summarisation pairs from the English man pages installed on a machine: DESCRIPTION -> NAME line.

    summary_pairs(pages, rules) -> (rows, report)
      rows:   [{"document": text, "summary": "list directory contents", "origin": "ls.1", "package":
                "coreutils", "split": "test"}, ...]
      report: {"read": n, "dropped": {reason: n}, "kept": n, "packages": {name: kept}}

Every man page opens with a NAME line, "ls \\- list directory contents": a one-line summary its
author wrote for whatis(1)/apropos(1). The document is the page's DESCRIPTION section (roff
stripped by attnlab.data.real.roff, paragraphs one per line). The rules, in order:

1. `alias` — `.so` pages (another page's name) and symlinks: the same text twice;
   `release_track` — gcloud pages of the alpha/beta track when the GA command exists (the same
   command documented three times); `no_name` / `no_description` — pages without either section;
2. `summary_length` — summaries outside [min_summary_words, max_summary_words] words;
3. the summary is not left in the document: a leading sentence that repeats it ("(ALPHA) Delete a
   Filestore backup." for "delete a Filestore backup": at least `copy_recall` of the summary's
   words) is removed, as are the "(ALPHA)"/"(BETA)" track markers. Without this the first-line
   baseline would be near perfect on thousands of gcloud pages;
4. the document keeps whole sentences up to `max_document_words` words; `document_length` — fewer
   than `min_document_words` words remain;
5. `duplicate` — a document (case and spacing aside) already kept.

Splits are by a hash of the normalised summary (text.split_key), so pages sharing a summary
("list directory contents" for ls and dir) always share a split.
"""

from __future__ import annotations

import collections
import glob
import gzip
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from attnlab.data.real.packages import owner
from attnlab.data.real.roff import sections
from attnlab.data.real.text import build_report, normalise_space, sentences, split_key, split_of, words

MAN_GLOB = "/usr/share/man/man[1-8]/*"  # English pages only: translations live in /usr/share/man/<lang>/
_NAME_DASH = re.compile(r"\s+(?:\\?-|\u2014|\u2013)+\s+")
_TRACK = re.compile(r"\((?:ALPHA|BETA|PREVIEW)\)\s*")
_GCLOUD_TRACK = re.compile(r"^gcloud_(alpha|beta|preview)_")


@dataclass(frozen=True)
class SummaryRules:
    min_summary_words: int = 3
    max_summary_words: int = 20
    min_document_words: int = 15
    max_document_words: int = 120
    copy_recall: float = 0.8
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # a few thousand pages: larger test split


def find_pages(pattern: str = MAN_GLOB) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(pattern))


def page_name(path: Path) -> str:
    """ls.1.gz -> ls.1"""
    return path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name


def read_page(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def summary_pairs(pages: Iterable[Path], rules: SummaryRules = SummaryRules()):
    """(rows, report) — see the module docstring for the rules."""
    pages = sorted(pages)
    names = {page_name(p) for p in pages}
    dropped: collections.Counter[str] = collections.Counter()
    rows, seen = [], set()
    read = 0
    for path in pages:
        read += 1
        name = page_name(path)
        if path.is_symlink():
            dropped["alias"] += 1
            continue
        ga = _GCLOUD_TRACK.sub("gcloud_", name)
        if ga != name and ga in names:
            dropped["release_track"] += 1
            continue
        source = read_page(path)
        if source.lstrip().startswith(".so "):
            dropped["alias"] += 1
            continue
        row, reason = page_pair(source, rules)
        if reason:
            dropped[reason] += 1
            continue
        key = " ".join(row["document"].lower().split())
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        row |= {"origin": name, "package": owner(os.fspath(path))}
        row["split"] = split_of(split_key(row["summary"]), rules.fractions)
        rows.append(row)
    return rows, build_report(read, dropped, rows, by="package", label="packages")


def page_pair(source: str, rules: SummaryRules) -> tuple[dict, str | None]:
    """({"document", "summary"}, None) for one page's roff source, or ({}, the reason it is dropped)."""
    parts = sections(source)
    name_line = " ".join(parts.get("NAME", []))
    pieces = _NAME_DASH.split(name_line, maxsplit=1)
    if len(pieces) != 2 or not pieces[1].strip():
        return {}, "no_name"
    summary = normalise_space(_TRACK.sub("", pieces[1])).rstrip(".")
    if not rules.min_summary_words <= len(words(summary)) <= rules.max_summary_words:
        return {}, "summary_length"
    paragraphs = [normalise_space(_TRACK.sub("", p)) for p in parts.get("DESCRIPTION", [])]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        return {}, "no_description"
    document = _without_summary_copy(paragraphs, summary, rules.copy_recall)
    document = _first_words(document, rules.max_document_words)
    if len(words(" ".join(document))) < rules.min_document_words:
        return {}, "document_length"
    return {"document": "\n".join(document), "summary": summary}, None


def _without_summary_copy(paragraphs: list[str], summary: str, copy_recall: float) -> list[str]:
    """The paragraphs without a leading sentence that repeats the summary."""
    first = sentences(paragraphs[0])
    if first and _recall(summary, first[0]) >= copy_recall:
        rest = " ".join(first[1:])
        return ([rest] if rest else []) + paragraphs[1:]
    return paragraphs


def _recall(summary: str, sentence: str) -> float:
    """The fraction of the summary's words (lower case) found in `sentence`."""
    wanted = [w.lower() for w in words(summary)]
    have = {w.lower() for w in words(sentence)}
    return sum(w in have for w in wanted) / max(1, len(wanted))


def _first_words(paragraphs: list[str], limit: int) -> list[str]:
    """Whole sentences, in order, while the total stays within `limit` words (at least one sentence)."""
    out, total = [], 0
    for paragraph in paragraphs:
        kept = []
        for sentence in sentences(paragraph):
            n = len(words(sentence))
            if total + n > limit and (out or kept):
                if kept:
                    out.append(" ".join(kept))
                return out
            kept.append(sentence)
            total += n
        if kept:
            out.append(" ".join(kept))
    return out
