"""The three splits every source ends in, and the names a source may give them. Its own module so the
loaders (files, hub) and the dispatcher that calls them (sources) all read it without importing each
other."""

from __future__ import annotations

SPLITS = ("train", "validation", "test")

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def canonical_split(name: str) -> str | None:
    """'valid', 'dev', 'val' -> 'validation'; None for names that are not a split (e.g. 'unsupervised')."""
    return SPLIT_ALIASES.get(str(name).strip().lower())
