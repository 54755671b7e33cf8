"""A real text corpus for task=lm, shipped with the package: Python's standard-library docstrings.

    corpus(validation_fraction=0.05, test_fraction=0.05, max_documents=None, seed=0)
      -> {"train"/"validation"/"test": [{"text": str}, ...]}

`attnlab/data/text/python_docs.jsonl` holds one document per module (~820 KB of English prose and
signatures from CPython 3.11.7, PSF License; provenance in attnlab/data/text/README.md). Documents
are split between train/validation/test by a seeded shuffle, so no module is in two splits.
The same file works as a local file source: task.data.source=files task.data.train=<that file>.

Rebuild it (deterministic for a given Python version):

    python -m attnlab.data.corpus [--out FILE] [--max-bytes N]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import sys
import warnings
from pathlib import Path

from attnlab.errors import DataError

# Pure-Python, documented, import-safe modules (no GUI, no side effects on import).
MODULES = [
    "abc",
    "argparse",
    "ast",
    "asyncio.events",
    "asyncio.futures",
    "asyncio.locks",
    "asyncio.queues",
    "asyncio.streams",
    "asyncio.tasks",
    "base64",
    "bisect",
    "bz2",
    "calendar",
    "cmd",
    "code",
    "codecs",
    "collections",
    "collections.abc",
    "colorsys",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "email.message",
    "email.parser",
    "email.utils",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http.client",
    "http.cookies",
    "http.server",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "json.decoder",
    "json.encoder",
    "keyword",
    "linecache",
    "locale",
    "logging",
    "logging.handlers",
    "lzma",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "os",
    "os.path",
    "pathlib",
    "pickle",
    "pickletools",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "profile",
    "pstats",
    "queue",
    "quopri",
    "random",
    "re",
    "reprlib",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "stat",
    "statistics",
    "string",
    "stringprep",
    "struct",
    "subprocess",
    "symtable",
    "sysconfig",
    "tabnanny",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "token",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "tracemalloc",
    "types",
    "typing",
    "unittest.case",
    "unittest.mock",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "xml.sax",
    "zipfile",
    "zipimport",
    "zoneinfo",
]  # noqa: SIM905 (a word list reads better as one string)


CORPUS_FILE = Path(__file__).parent / "text" / "python_docs.jsonl"


def corpus(
    *,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.05,
    max_documents: int | None = None,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """The shipped corpus split by document: {split: [{"text": str}, ...]}, deterministic in `seed`."""
    if not (
        0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1
    ):
        raise DataError(
            f"corpus validation_fraction={validation_fraction} and test_fraction={test_fraction} must be in (0, 1) "
            "and sum to less than 1"
        )
    documents = [json.loads(line)["text"] for line in CORPUS_FILE.read_text().splitlines() if line.strip()]
    random.Random(f"corpus-{seed}").shuffle(documents)
    if max_documents is not None:
        if max_documents < 3:
            raise DataError(f"corpus max_documents={max_documents} must be >= 3 (one per split) or null")
        documents = documents[:max_documents]
    n = len(documents)
    n_validation = max(1, round(validation_fraction * n))
    n_test = max(1, round(test_fraction * n))
    return {
        "validation": [{"text": t} for t in documents[:n_validation]],
        "test": [{"text": t} for t in documents[n_validation : n_validation + n_test]],
        "train": [{"text": t} for t in documents[n_validation + n_test :]],
    }


def module_document(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module(name)
    parts = [f"Module {name}", inspect.getdoc(module) or ""]
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            parts.append(_entry(attr, obj))
            if inspect.isclass(obj):
                for method, member in sorted(vars(obj).items()):
                    if not method.startswith("_") and inspect.isfunction(member):
                        parts.append(_entry(f"{attr}.{method}", member))
    return "\n\n".join(p for p in parts if p.strip())


def _entry(name: str, obj) -> str:
    doc = inspect.getdoc(obj)
    if not doc:
        return ""
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = "(...)"
    return f"{name}{signature}\n{doc}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS_FILE)
    parser.add_argument("--max-bytes", type=int, default=1_200_000)
    args = parser.parse_args()
    total, rows = 0, []
    for name in MODULES:
        text = module_document(name)
        size = len(text.encode())
        if total + size > args.max_bytes:
            break
        rows.append({"title": name, "text": text})
        total += size
    with args.out.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} documents, {total} bytes of text -> {args.out} (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
