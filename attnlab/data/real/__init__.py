"""Real evaluation data built from material on a Debian machine, shipped with the package.

    SHIPPED["gettext_de"]   English -> German software messages (gettext catalogues)   task=translate
    SHIPPED["manpages"]     man page DESCRIPTION -> its NAME line                       task=summarise
    shipped_files("manpages") -> {"train": Path(...jsonl.gz), "validation": ..., "test": ...}

Read them through the ordinary data path: `task.data.source=shipped task.data.name=<set>` (the
files source underneath, so `task.data.source=files task.data.train=<path>` works too). Provenance,
licences, counts and the cleaning rules: attnlab/data/real/data/README.md. Rebuild:

    python -m attnlab.data.real build [--out DIR]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attnlab.errors import DataError, did_you_mean

DATA_DIR = Path(__file__).parent / "data"
SPLIT_FILES = {"train": "train.jsonl.gz", "validation": "validation.jsonl.gz", "test": "test.jsonl.gz"}


@dataclass(frozen=True)
class ShippedSet:
    name: str
    task: str  # the task it is for
    columns: tuple[str, str]  # its (source, target) columns, the task's logical names
    description: str


SHIPPED = {
    "gettext_de": ShippedSet(
        "gettext_de", "translate", ("source", "target"), "English -> German software messages (gettext)"
    ),
    "manpages": ShippedSet(
        "manpages", "summarise", ("document", "summary"), "man page DESCRIPTION -> its NAME line"
    ),
}


def shipped_files(name: str | None, root: Path = DATA_DIR) -> dict[str, Path]:
    """{split: path} of a shipped set; an unknown name is a one-line DataError."""
    if not name:
        raise DataError(f"task.data.source=shipped needs a set: task.data.name={'|'.join(SHIPPED)}")
    if name not in SHIPPED:
        raise DataError(
            f"unknown shipped dataset '{name}'{did_you_mean(str(name), SHIPPED)}; "
            f"choose task.data.name={'|'.join(SHIPPED)}"
        )
    files = {split: root / name / file for split, file in SPLIT_FILES.items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise DataError(
            f"shipped dataset '{name}' is missing {missing[0]}; rebuild it with python -m attnlab.data.real build"
        )
    return files
