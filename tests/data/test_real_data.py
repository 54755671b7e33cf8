"""The real-data builders (attnlab.data.real) on tiny synthetic catalogues and man pages, and the
shipped sets through the tasks' data path: cleaning rules, placeholders kept, no split leakage,
determinism, and the files loading offline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from attnlab.data import first_line_baseline, load_splits
from attnlab.data.real import SHIPPED, shipped_files
from attnlab.data.real.build import write_split_files
from attnlab.data.real.manpages import SummaryRules, page_pair, summary_pairs
from attnlab.data.real.mo import MoEntry, read_mo, write_mo
from attnlab.data.real.text import placeholders, split_key, split_of
from attnlab.data.real.translation import TranslationRules, translation_pairs
from attnlab.errors import DataError


def entry(msgid: str, msgstr: str, *, context: str | None = None, plural: str | None = None) -> MoEntry:
    return MoEntry(context, msgid, plural, (msgstr,) if plural is None else (msgstr, msgstr + "en"))


CORE = [
    entry("Cannot open %s: %s", "Kann %s nicht öffnen: %s"),
    entry("cannot open %d:", "kann %d nicht öffnen:"),  # a case/punctuation/placeholder variant of the first
    entry("Use --force to overwrite %1$s", "Mit --force wird %1$s überschrieben"),
    entry("Hello {name}, welcome", "Hallo {name}, willkommen"),
    entry("Open", "Öffnen"),  # one word: too short
    entry("File not found", "File not found"),  # identical
    entry("File menu entry", "Datei", context="menu"),  # a context
    entry("%d file removed", "%d Datei entfernt", plural="%d files removed"),  # plural forms
    entry("Lost %s argument", "Argument verloren"),  # the translation drops the placeholder
    entry("Removed the directory", "Das Verzeichnis wurde entfernt"),
    entry("   Too\tmany\n  spaces   here ", "Zu  viele\nLeerzeichen hier"),
    entry(" ".join(["word"] * 40), " ".join(["Wort"] * 40)),  # too long
]
OTHER = [
    entry("Removed the directory", "Verzeichnis entfernt"),  # a second translation, one catalogue only
    entry("Write error on %s", "Schreibfehler bei %s"),
]


@pytest.fixture
def catalogues(tmp_path: Path) -> list[Path]:
    core, other, third = tmp_path / "core.mo", tmp_path / "other.mo", tmp_path / "third.mo"
    write_mo(core, CORE)
    write_mo(other, OTHER)
    write_mo(third, [entry("Removed the directory", "Das Verzeichnis wurde entfernt")])
    return [core, other, third]


def test_read_mo_keeps_context_and_plural_apart_and_decodes_the_declared_charset(tmp_path):
    write_mo(tmp_path / "latin.mo", [entry("Name too long", "Name zu lang für »x«")], charset="ISO-8859-1")
    [latin] = read_mo(tmp_path / "latin.mo")
    assert latin.msgstrs == ("Name zu lang für »x«",)
    write_mo(tmp_path / "a.mo", CORE)
    by_id = {e.msgid: e for e in read_mo(tmp_path / "a.mo")}
    assert by_id["File menu entry"].context == "menu"
    assert by_id["%d file removed"].msgid_plural == "%d files removed"
    assert by_id["%d file removed"].msgstrs == ("%d Datei entfernt", "%d Datei entfernten")


def test_read_mo_refuses_a_file_that_is_not_a_catalogue(tmp_path):
    (tmp_path / "x.mo").write_bytes(b"not a catalogue at all, really")
    with pytest.raises(DataError, match="not a gettext .mo catalogue"):
        read_mo(tmp_path / "x.mo")


def test_translation_cleaning_rules(catalogues):
    rows, report = translation_pairs(catalogues, TranslationRules())
    by_source = {row["source"]: row for row in rows}
    assert report["dropped"] == {
        "too_short": 1, "identical": 1, "context": 1, "plural": 1, "placeholders": 1, "too_long": 1, "duplicate": 2,
    }  # fmt: skip
    assert report["kept"] == len(rows) == 7
    # placeholders and options are kept verbatim; whitespace runs become one space
    assert by_source["Use --force to overwrite %1$s"]["target"] == "Mit --force wird %1$s überschrieben"
    assert by_source["Hello {name}, welcome"]["target"] == "Hallo {name}, willkommen"
    assert by_source["Too many spaces here"]["target"] == "Zu viele Leerzeichen hier"
    # the translation two catalogues agree on wins over the other one; origin names the first catalogue
    assert by_source["Removed the directory"]["target"] == "Das Verzeichnis wurde entfernt"
    assert by_source["Removed the directory"]["origin"] == "core"
    assert by_source["Write error on %s"]["origin"] == "other"
    for row in rows:
        assert placeholders(row["source"]) == placeholders(row["target"])


def test_translation_build_is_deterministic_and_variants_share_a_split(catalogues):
    first, _ = translation_pairs(catalogues)
    second, _ = translation_pairs(list(reversed(catalogues)))
    assert first == second
    splits = {row["source"]: row["split"] for row in first}
    assert splits["Cannot open %s: %s"] == splits["cannot open %d:"]  # one group key: never split apart


def test_no_group_key_is_in_two_splits_of_a_larger_synthetic_set(tmp_path):
    verbs = ["open", "close", "read", "write", "remove", "create", "rename", "lock"]
    things = ["file", "directory", "socket", "pipe", "device", "archive", "branch", "socket file"]
    source = [entry(f"Cannot {v} {t} %s", f"{t} %s kann nicht: {v}") for v in verbs for t in things]
    variant = [entry(f"cannot {v} {t} %d.", f"{t} %d kann nicht: {v}.") for v in verbs for t in things]
    write_mo(tmp_path / "a.mo", source)
    write_mo(tmp_path / "b.mo", variant)
    rows, _ = translation_pairs(
        [tmp_path / "a.mo", tmp_path / "b.mo"], TranslationRules(fractions=(0.5, 0.25, 0.25))
    )
    seen: dict[str, str] = {}
    for row in rows:
        key = split_key(row["source"])
        assert seen.setdefault(key, row["split"]) == row["split"], row["source"]
    assert {row["split"] for row in rows} == {"train", "validation", "test"}
    assert split_of("a key", (0.9, 0.05, 0.05)) == split_of("a key", (0.9, 0.05, 0.05))


def test_written_split_files_are_byte_identical_across_builds(tmp_path, catalogues):
    rows, _ = translation_pairs(catalogues)
    write_split_files(tmp_path / "a", rows, ("source", "target", "origin"))
    write_split_files(tmp_path / "b", rows, ("source", "target", "origin"))
    for name in ("train.jsonl.gz", "validation.jsonl.gz", "test.jsonl.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


GCLOUD_PAGE = r"""
.TH "GCLOUD_FILESTORE_BACKUPS_DELETE" 1
.SH "NAME"
.HP
gcloud filestore backups delete \- delete a Filestore backup
.SH "DESCRIPTION"
(ALPHA) Delete a Filestore backup. This command can fail when the backup specified does not exist, or
when the active account does not have permission to delete the given backup.

Use \fB\-\-async\fR to return before the operation completes; run \f5gcloud filestore operations list\fR
to follow it.
.SH "EXAMPLES"
To delete a backup, run:
"""


def test_man_page_pair_removes_the_summary_sentence_and_track_markers():
    row, reason = page_pair(GCLOUD_PAGE, SummaryRules())
    assert reason is None
    assert row["summary"] == "delete a Filestore backup"
    assert "Delete a Filestore backup" not in row["document"] and "(ALPHA)" not in row["document"]
    assert row["document"].startswith("This command can fail when the backup specified does not exist")
    assert "Use --async to return" in row["document"]  # roff escapes resolved, options intact
    assert len(row["document"].splitlines()) == 2  # one paragraph a line
    [first_line] = first_line_baseline([row])
    assert first_line == row["document"].splitlines()[0] and row["summary"] not in first_line


def test_man_page_rules_drop_aliases_short_documents_and_alpha_copies(tmp_path):
    man = tmp_path / "man1"
    man.mkdir()
    (man / "gcloud_filestore_backups_delete.1").write_text(GCLOUD_PAGE)
    (man / "gcloud_alpha_filestore_backups_delete.1").write_text(GCLOUD_PAGE)  # the GA page exists
    (man / "alias.1").write_text(".so man1/gcloud_filestore_backups_delete.1\n")
    (man / "tiny.1").write_text(
        ".SH NAME\ntiny \\- print a tiny thing\n.SH DESCRIPTION\nPrint a tiny thing.\n"
    )
    rows, report = summary_pairs(sorted(man.iterdir()), SummaryRules())
    assert [row["origin"] for row in rows] == ["gcloud_filestore_backups_delete.1"]
    assert report["dropped"] == {"alias": 1, "release_track": 1, "document_length": 1}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sets_have_no_group_key_in_two_splits(name):
    spec = SHIPPED[name]
    key_column = spec.columns[0] if spec.task == "translate" else spec.columns[1]  # source / summary
    owner: dict[str, str] = {}
    for split, path in shipped_files(name).items():
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
        assert rows, f"{name}/{split} is empty"
        for row in rows:
            assert {*spec.columns, "origin"} <= row.keys()
            key = split_key(row[key_column])
            assert owner.setdefault(key, split) == split, (
                f"{row[key_column]!r} is in {owner[key]} and {split}"
            )


@pytest.mark.parametrize(
    ("name", "columns"),
    [
        ("gettext_de", {"source": "source", "target": "target"}),
        ("manpages", {"document": "document", "summary": "summary"}),
    ],
)
def test_shipped_sets_load_through_the_data_path(tmp_path, name, columns):
    data = {"source": "shipped", "name": name, "limit": {"train": 50, "validation": 20, "test": 20}}
    splits = load_splits(data, columns=columns, builtin=None, cache_dir=tmp_path)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [50, 20, 20]
    assert all(
        isinstance(row[c], str) and row[c] for rows in splits.values() for row in rows for c in columns
    )
    # the same files through source=files (gzipped jsonl)
    files = shipped_files(name)
    data = {
        "source": "files",
        "train": str(files["train"]),
        "test": str(files["test"]),
        "limit": {"train": 30},
    }
    splits = load_splits(data, columns=columns, builtin=None, cache_dir=tmp_path)
    assert len(splits["train"]) == 30 and len(splits["test"]) > 100


def test_an_unknown_shipped_set_is_one_line(tmp_path):
    with pytest.raises(DataError, match="did you mean 'manpages'"):
        load_splits({"source": "shipped", "name": "manpage"}, columns={"document": "document"}, builtin=None)
    with pytest.raises(DataError, match="needs a set: task.data.name=gettext_de"):
        load_splits({"source": "shipped"}, columns={"document": "document"}, builtin=None)
