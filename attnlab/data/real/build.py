"""Build the shipped real-data sets from this machine's catalogues and man pages, with their README.

    python -m attnlab.data.real build [--out DIR] [--only gettext_de|manpages]

Writes DIR/<set>/{train,validation,test}.jsonl.gz (one JSON object a line, sorted, gzip without a
timestamp: the same machine gives the same bytes) and DIR/README.md (provenance, licences, counts,
rules). The default DIR is the package's own data folder (attnlab/data/real/data), so a rebuild on
another Debian release shows up as a plain git diff.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gzip
import io
import json
import platform
from pathlib import Path

from attnlab.data.real import DATA_DIR, SHIPPED, SPLIT_FILES
from attnlab.data.real.manpages import MAN_GLOB, SummaryRules, find_pages, summary_pairs
from attnlab.data.real.packages import owner, package_info
from attnlab.data.real.translation import (
    CATALOGUE_GLOBS,
    TranslationRules,
    find_catalogues,
    translation_pairs,
)


def write_split_files(folder: Path, rows: list[dict], fields: tuple[str, ...]) -> dict[str, int]:
    """rows (each with a `split`) -> folder/<split>.jsonl.gz with `fields`; {split: count}."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, file in SPLIT_FILES.items():
        chosen = [{k: row[k] for k in fields} for row in rows if row["split"] == split]
        text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n" for row in chosen)
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
            handle.write(text.encode("utf-8"))
        (folder / file).write_bytes(buffer.getvalue())
        counts[split] = len(chosen)
    return counts


def build_translation(out: Path) -> dict:
    catalogues = find_catalogues()
    rows, report = translation_pairs(catalogues, TranslationRules())
    report["splits"] = write_split_files(out / "gettext_de", rows, ("source", "target", "origin"))
    packages = {}
    for path in catalogues:
        info = package_info(owner(path))
        packages[path.stem] = {
            "path": str(path), "package": info.name, "version": info.version, "licence": info.licence,
            "copyright": info.copyright_file, "kept": report["catalogues"].get(path.stem, 0),
        }  # fmt: skip
    report["sources"] = packages
    return report


def build_summaries(out: Path) -> dict:
    rows, report = summary_pairs(find_pages(), SummaryRules())
    report["splits"] = write_split_files(out / "manpages", rows, ("document", "summary", "origin", "package"))
    report["sources"] = {
        name: {"version": (info := package_info(name)).version, "licence": info.licence,
               "copyright": info.copyright_file, "kept": kept}
        for name, kept in report["packages"].items()
    }  # fmt: skip
    return report


def _system() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.platform())
    except OSError:  # not a Linux with /etc/os-release
        return platform.platform()


def readme(reports: dict[str, dict]) -> str:
    """The README written beside the data (see the module docstring)."""
    t, s = TranslationRules(), SummaryRules()
    lines = [
        "# Real evaluation data: software-message translation and man-page summarisation",
        "",
        "Written by `python -m attnlab.data.real build` (attnlab/data/real/build.py); do not edit by hand.",
        f"Built {dt.date.today().isoformat()} on {_system()} "
        "from files installed by its Debian packages. Nothing here is generated text: every target",
        "was written by a person (a translator, a man page's author).",
        "",
        "| set | task | train | validation | test | columns | read with |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        spec, splits = SHIPPED[name], report["splits"]
        columns = ", ".join((*spec.columns, "origin") + (("package",) if name == "manpages" else ()))
        lines.append(
            f"| `{name}` | {spec.task} | {splits['train']} | {splits['validation']} | {splits['test']} | {columns} "
            f"| `task={spec.task} task.data.source=shipped task.data.name={name}` |"
        )
    lines += ["", "Files: `<set>/{train,validation,test}.jsonl.gz`, one JSON object a line (UTF-8, gzip)."]
    if "gettext_de" in reports:
        r = reports["gettext_de"]
        lines += [
            "",
            "## `gettext_de`: English -> German software messages",
            "",
            f"Source: the German gettext catalogues (`.mo`) installed here ({', '.join(f'`{g}`' for g in CATALOGUE_GLOBS)};",
            "iso-codes' `iso_*` catalogues are lists of country/language names and are left out), read by",
            "attnlab/data/real/mo.py. Each entry is (English msgid, German msgstr) as the program's translators wrote it.",
            "",
            f"Cleaning (attnlab/data/real/translation.py), {r['read']} entries read:",
            "",
            "| rule | dropped |",
            "|---|---|",
            f"| entries with a msgctxt (ambiguous without it) | {r['dropped'].get('context', 0)} |",
            f"| entries with plural forms | {r['dropped'].get('plural', 0)} |",
            f"| empty source or translation | {r['dropped'].get('empty', 0)} |",
            f"| translation identical to the source | {r['dropped'].get('identical', 0)} |",
            f"| source under {t.min_words} words (single words: ambiguous) | {r['dropped'].get('too_short', 0)} |",
            f"| source over {t.max_words} words or {t.max_chars} characters (long help screens) | {r['dropped'].get('too_long', 0)} |",
            f"| length ratio (characters) outside [1/{t.max_ratio:g}, {t.max_ratio:g}] | {r['dropped'].get('length_ratio', 0)} |",
            f"| placeholders differ (%s %d %1$s {{name}} $VAR --option, positions ignored) | {r['dropped'].get('placeholders', 0)} |",
            f"| duplicate source (the translation most catalogues agree on is kept) | {r['dropped'].get('duplicate', 0)} |",
            f"| **kept** | **{r['kept']}** |",
            "",
            "Whitespace runs (newlines of multi-line messages included) become one space; nothing else is changed:",
            "placeholders, options, identifiers and accelerator marks (`_File`, `&OK`) stay as written.",
            f"Splits ({', '.join(f'{x:g}' for x in t.fractions)}) are by SHA-256 of the source's group key (lower case,",
            "placeholders unified, punctuation dropped), so no source nor a case/punctuation variant of it is in two splits.",
            "`origin` is the first catalogue (by name) holding the kept pair.",
            "",
            "| catalogue | package | version | licence (from its copyright file) | pairs kept |",
            "|---|---|---|---|---|",
        ]
        for name, info in r["sources"].items():
            lines.append(
                f"| {name} | {info['package']} | {info['version']} | {info['licence']} | {info['kept']} |"
            )
    if "manpages" in reports:
        r = reports["manpages"]
        lines += [
            "",
            "## `manpages`: man page DESCRIPTION -> NAME line",
            "",
            f"Source: the English man pages installed here (`{MAN_GLOB}`), roff read by attnlab/data/real/roff.py.",
            "The summary is the NAME line's one-line description (`ls \\- list directory contents` -> `list directory",
            "contents`); the document is the DESCRIPTION section, one paragraph a line.",
            "",
            f"Cleaning (attnlab/data/real/manpages.py), {r['read']} pages read:",
            "",
            "| rule | dropped |",
            "|---|---|",
            f"| aliases (`.so` pages, symlinks) | {r['dropped'].get('alias', 0)} |",
            f"| gcloud alpha/beta pages whose GA command has a page | {r['dropped'].get('release_track', 0)} |",
            f"| no NAME description / no DESCRIPTION | {r['dropped'].get('no_name', 0)} / {r['dropped'].get('no_description', 0)} |",
            f"| summary outside {s.min_summary_words}-{s.max_summary_words} words | {r['dropped'].get('summary_length', 0)} |",
            f"| document under {s.min_document_words} words once the summary's copy is removed | {r['dropped'].get('document_length', 0)} |",
            f"| duplicate document | {r['dropped'].get('duplicate', 0)} |",
            f"| **kept** | **{r['kept']}** |",
            "",
            "The summary is not left in the document: a leading sentence holding at least "
            f"{s.copy_recall:.0%} of the summary's words",
            '("(ALPHA) Delete a Filestore backup." for "delete a Filestore backup") is removed, as are the',
            "`(ALPHA)`/`(BETA)` markers, so neither the first-line nor the lead-3 baseline can copy the answer.",
            f"Documents keep whole sentences up to {s.max_document_words} words. Splits "
            f"({', '.join(f'{x:g}' for x in s.fractions)}) are by SHA-256 of the normalised summary,",
            "so pages sharing a summary share a split. google-cloud-cli's pages are generated from one template family",
            "(command reference pages), so its documents and summaries are formulaic; `package` lets you filter them.",
            "",
            "| package | version | licence (from its copyright file) | pairs kept |",
            "|---|---|---|---|",
        ]
        for name, info in r["sources"].items():
            lines.append(f"| {name} | {info['version']} | {info['licence']} | {info['kept']} |")
    lines += [
        "",
        "## Licences",
        "",
        "Each text keeps the licence of the package it comes from (tables above; the full terms are each package's",
        "`/usr/share/doc/<package>/copyright` on a Debian system). Most catalogues and many man pages are GPL/LGPL;",
        "google-cloud-cli's pages are Apache-2.0; the Linux man-pages project's pages carry their own permissive",
        "licences. These files are evaluation data distributed beside attnlab (MIT), not part of its code.",
        "",
        "## Rebuild",
        "",
        "    python -m attnlab.data.real build                 # into attnlab/data/real/data (this folder)",
        "    python -m attnlab.data.real build --out /tmp/real # elsewhere; then task.data.source=files task.data.train=/tmp/real/<set>/train.jsonl.gz ...",
        "",
        "The result depends on the installed packages and their versions (tables above); on the same machine the",
        "data files are byte-identical (this README carries the build date).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m attnlab.data.real", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the sets and their README")
    build.add_argument("--out", type=Path, default=DATA_DIR)
    build.add_argument("--only", choices=sorted(SHIPPED), action="append")
    args = parser.parse_args(argv)
    builders = {"gettext_de": build_translation, "manpages": build_summaries}
    reports = {}
    for name in args.only or list(builders):
        reports[name] = builders[name](args.out)
        splits = reports[name]["splits"]
        print(
            f"{name}: {reports[name]['kept']} pairs ({', '.join(f'{k} {v}' for k, v in splits.items())}) -> {args.out / name}"
        )
    (args.out / "README.md").write_text(readme(reports), encoding="utf-8")
    summary = collections.Counter({name: r["kept"] for name, r in reports.items()})
    print(f"README -> {args.out / 'README.md'} ({dict(summary)})")


if __name__ == "__main__":
    main()
