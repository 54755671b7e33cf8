"""Which Debian package installed a file, its version, and the licence its copyright file declares.

    owners()                    -> {"/usr/share/locale/de/LC_MESSAGES/coreutils.mo": "coreutils", ...}
    package_info("coreutils")   -> PackageInfo("coreutils", "9.1-1", "GPL-3+, GPL-2+, ...", "/usr/share/doc/coreutils/copyright")

`owners` reads dpkg's file lists (/var/lib/dpkg/info/*.list, what `dpkg -S` searches) once, so mapping
twenty thousand files costs one pass. Licences come from /usr/share/doc/<package>/copyright: the
`License:` fields of a machine-readable (DEP-5) file, most frequent first, else the licence names
its text mentions. Off Debian every answer is "unknown" and the builder still runs.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

DPKG_INFO = Path("/var/lib/dpkg/info")
DOC = Path("/usr/share/doc")
UNKNOWN = "unknown"
# Licence names looked for in copyright files that are not DEP-5, most specific first.
KNOWN_LICENCES = [
    ("Apache License", "Apache-2.0"),
    ("GNU Lesser General Public License", "LGPL"),
    ("GNU Library General Public License", "LGPL"),
    ("GNU General Public License", "GPL"),
    ("BSD", "BSD"),
    ("MIT License", "MIT"),
    ("Permission is hereby granted, free of charge", "Expat/MIT"),
    ("public domain", "public domain"),
]


@dataclass(frozen=True)
class PackageInfo:
    name: str
    version: str
    licence: str
    copyright_file: str


@lru_cache(maxsize=1)
def owners() -> dict[str, str]:
    """Installed path -> package name, from dpkg's file lists ({} where there is no dpkg)."""
    out: dict[str, str] = {}
    if not DPKG_INFO.is_dir():
        return out
    for listing in sorted(DPKG_INFO.glob("*.list")):
        package = listing.stem.split(":")[0]  # libfoo:amd64.list -> libfoo
        for line in listing.read_text(errors="replace").splitlines():
            out.setdefault(line, package)
    return out


def owner(path: str | Path) -> str:
    """The package that installed `path` (also through /usr merges and symlinked folders), or 'unknown'."""
    table = owners()
    for candidate in (str(path), os.path.realpath(path)):
        if candidate in table:
            return table[candidate]
        if candidate.startswith("/usr/") and candidate[4:] in table:  # merged-/usr: /lib/... listed
            return table[candidate[4:]]
    return UNKNOWN


@cache
def package_info(name: str) -> PackageInfo:
    copyright_file = DOC / name / "copyright"
    return PackageInfo(name, _version(name), _licence(copyright_file), str(copyright_file))


def _version(name: str) -> str:
    if name == UNKNOWN:
        return UNKNOWN
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return done.stdout.strip() or UNKNOWN


def _licence(copyright_file: Path) -> str:
    try:
        text = copyright_file.read_text(errors="replace")
    except OSError:
        return UNKNOWN
    fields = collections.Counter(
        m.strip() for m in re.findall(r"^License:\s*(.+)$", text, flags=re.MULTILINE) if m.strip()
    )
    if fields:
        return ", ".join(name for name, _ in fields.most_common(4))
    flat = " ".join(text.split()).lower()  # "Apache\nLicense" is still "apache license"
    found = [short for phrase, short in KNOWN_LICENCES if phrase.lower() in flat]
    return ", ".join(dict.fromkeys(found)) or f"see {copyright_file}"
