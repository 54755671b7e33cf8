"""Local data files (jsonl/json/csv/tsv/parquet) read through `datasets`.

Two layouts, chosen by the task's data config:
- one file per split: task.data.train=<file> [task.data.validation=<file>] [task.data.test=<file>]
  (validation and test are optional: see attnlab.data.sources for how missing splits are derived);
- one file with a split column: task.data.path=<file> [task.data.split_column=split], whose values
  are train / validation (or val, valid, dev) / test.

A text file may be gzipped (`train.jsonl.gz`): the extension before `.gz` names the format.
Text files that are not valid UTF-8 do not stop a run: undecodable bytes become U+FFFD, their count
is logged as a warning, and `datasets` reads a UTF-8 copy written under the cache directory.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnlab.data.splits import SPLIT_ALIASES, SPLITS, canonical_split
from attnlab.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

# extension -> (datasets builder, extra builder arguments, is text)
FORMATS: dict[str, tuple[str, dict[str, Any], bool]] = {
    ".jsonl": ("json", {}, True),
    ".json": ("json", {}, True),
    ".csv": ("csv", {}, True),
    ".tsv": ("csv", {"sep": "\t"}, True),
    ".parquet": ("parquet", {}, False),
}
REPLACEMENT = "\ufffd"
COMPRESSED = ".gz"  # gzip, for the text formats


def load_files(data: Mapping, *, cache_dir: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """({split: datasets.Dataset}, a description of the files for messages)."""
    path = data.get("path")
    per_split = {split: data.get(split) for split in SPLITS if data.get(split)}
    if path and per_split:
        raise DataError(
            f"give either task.data.path=<file> (with a split column) or task.data.train/validation/test, "
            f"not both (got path={path} and {', '.join(per_split)})"
        )
    if path:
        column = data.get("split_column") or "split"
        return split_by_column(read_table(path, "path", cache_dir=cache_dir), column, str(path)), str(path)
    if not per_split:
        raise DataError(
            "task.data.source=files needs files: task.data.train=<file> (and optionally validation/test), "
            "or task.data.path=<file> with a split column"
        )
    tables = {split: read_table(file, split, cache_dir=cache_dir) for split, file in per_split.items()}
    return tables, f"files ({', '.join(f'{s}={f}' for s, f in per_split.items())})"


def read_table(file: str | Path, key: str, *, cache_dir: str | Path | None = None) -> Any:
    """One local file -> datasets.Dataset. `key` is the config key that named it (for messages)."""
    import datasets

    path = Path(file).expanduser()
    if not path.is_file():
        raise DataError(
            f"data file not found: {path.resolve()}; check task.data.{key}=<path to an existing file>"
        )
    suffix = format_suffix(path)
    if suffix not in FORMATS or (path.suffix.lower() == COMPRESSED and not FORMATS[suffix][2]):
        raise DataError(
            f"unsupported data file extension '{suffix or path.name}' ({path}){did_you_mean(suffix, FORMATS)}; "
            f"use one of {', '.join(FORMATS)}"
        )
    builder, kwargs, is_text = FORMATS[suffix]
    derive = (
        f", or leave task.data.{key} unset to derive it from train" if key in ("validation", "test") else ""
    )
    if is_text and not text_bytes(path).strip():
        raise DataError(f"data file {path} (task.data.{key}) is empty; add rows to it{derive}")
    if builder == "csv" and len([line for line in text_bytes(path).splitlines() if line.strip()]) < 2:
        # else datasets' own words: "Instruction 'train' corresponds to no data!"
        raise DataError(
            f"data file {path} (task.data.{key}) has a header but no rows; add rows to it{derive}"
        )
    if is_text:
        path = utf8_copy(path, cache_dir)
    try:
        return datasets.load_dataset(
            builder,
            data_files=str(path),
            split="train",
            cache_dir=None if cache_dir is None else str(cache_dir),
            **kwargs,
        )
    except (datasets.exceptions.DatasetGenerationError, ValueError, OSError) as err:
        lines = str(err.__cause__ or err).strip().splitlines()
        reason = lines[0][:200] if lines else type(err.__cause__ or err).__name__
        raise DataError(f"could not read {file} as {suffix[1:]}: {reason}; check the file's format") from err


def format_suffix(path: Path) -> str:
    """The extension that names the format: '.jsonl' for train.jsonl and for train.jsonl.gz."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == COMPRESSED:
        return suffixes[-2]
    return path.suffix.lower()


def text_bytes(path: Path) -> bytes:
    """The bytes of a text file, decompressed when it is gzipped."""
    raw = path.read_bytes()
    if path.suffix.lower() == COMPRESSED:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"could not read {path} as gzip: {err}; check the file") from err
    return raw


def utf8_copy(path: Path, cache_dir: str | Path | None) -> Path:
    """`path` itself when it is valid UTF-8; else a copy with undecodable bytes replaced (and a warning)."""
    raw = text_bytes(path)
    try:
        raw.decode("utf-8")
        return path
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8", errors="replace")
    replaced = text.count(REPLACEMENT) - raw.count(REPLACEMENT.encode("utf-8"))
    folder = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "attnlab"
    folder = folder / "utf8-copies"
    folder.mkdir(parents=True, exist_ok=True)
    name = path.name[: -len(COMPRESSED)] if path.suffix.lower() == COMPRESSED else path.name
    copy = folder / f"{hashlib.sha256(raw).hexdigest()[:16]}-{name}"  # written uncompressed
    if not copy.exists():
        copy.write_text(text, encoding="utf-8")
    log.warning(
        "%s is not valid UTF-8: replaced %d undecodable byte sequence(s) with U+FFFD; re-save it as UTF-8 to keep them",
        path,
        replaced,
    )
    return copy


def split_by_column(table: Any, column: str, origin: str) -> dict[str, Any]:
    """One table with a split column -> {split: table}; values are matched through SPLIT_ALIASES."""
    names = list(table.column_names)
    if column not in names:
        raise DataError(
            f"{origin} has no split column '{column}'{did_you_mean(column, names)}; available columns: "
            f"{', '.join(names)}; set task.data.split_column=<column>, or give task.data.train=<file> per split"
        )
    groups: dict[str, list[int]] = {}
    unknown: set[str] = set()
    for i, value in enumerate(table[column]):
        split = canonical_split(value)
        if split is None:
            unknown.add(str(value))
        else:
            groups.setdefault(split, []).append(i)
    if unknown:
        raise DataError(
            f"{origin}: unknown value(s) {', '.join(sorted(unknown)[:5])} in split column '{column}'; "
            f"use train, validation or test (also accepted: {', '.join(a for a in SPLIT_ALIASES if a not in SPLITS)})"
        )
    return {split: table.select(indices) for split, indices in groups.items()}
