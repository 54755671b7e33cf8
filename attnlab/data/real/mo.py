"""Read a compiled gettext catalogue (.mo) into its entries, with context and plural forms kept apart.

    read_mo(path) -> [MoEntry(context, msgid, msgid_plural, msgstrs), ...]   (the header entry dropped)

Python's `gettext.GNUTranslations` folds context and plural keys into its catalogue and stops on a
catalogue whose header is not UTF-8 (net-tools ships Latin-1), so this reads the format itself:
a magic number, the entry count, and two tables of (length, offset) pairs for the original and the
translated strings (GNU gettext manual, "The Format of GNU MO Files"). Strings are decoded with the
charset the header declares. A msgid holds `context \\x04 msgid` when the entry has a context and
`msgid \\x00 msgid_plural` when it has plural forms; msgstr then holds the forms joined by `\\x00`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from attnlab.errors import DataError

MAGIC_LE, MAGIC_BE = 0x950412DE, 0xDE120495
CONTEXT_SEPARATOR, PLURAL_SEPARATOR = "\x04", "\x00"
_CHARSET = re.compile(r"charset=([\w.-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class MoEntry:
    context: str | None  # msgctxt, when the entry has one
    msgid: str
    msgid_plural: str | None  # the English plural form, when the entry has plural forms
    msgstrs: tuple[str, ...]  # the translation, or one per plural form


def read_mo(path: str | Path) -> list[MoEntry]:
    """Every translated entry of a .mo file except the header (msgid "")."""
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise DataError(f"{path} is not a gettext .mo catalogue (only {len(data)} bytes)")
    (magic,) = struct.unpack("<I", data[:4])
    order = {MAGIC_LE: "<", MAGIC_BE: ">"}.get(magic)
    if order is None:
        raise DataError(f"{path} is not a gettext .mo catalogue (magic number {magic:#x})")
    _, count, originals, translations = struct.unpack(order + "4I", data[4:20])
    raw = []
    for i in range(count):
        length, offset = struct.unpack(order + "2I", data[originals + 8 * i : originals + 8 * i + 8])
        t_length, t_offset = struct.unpack(
            order + "2I", data[translations + 8 * i : translations + 8 * i + 8]
        )
        raw.append((data[offset : offset + length], data[t_offset : t_offset + t_length]))
    charset = "utf-8"
    for key, value in raw:
        if key == b"":
            match = _CHARSET.search(value.decode("ascii", errors="replace"))
            if match and match.group(1).upper() not in ("CHARSET", "UTF-8", "UTF8"):
                charset = match.group(1)
    entries = []
    for key, value in raw:
        if key == b"":
            continue
        msgid, msgstr = _decode(key, charset), _decode(value, charset)
        context = None
        if CONTEXT_SEPARATOR in msgid:
            context, msgid = msgid.split(CONTEXT_SEPARATOR, 1)
        plural = None
        if PLURAL_SEPARATOR in msgid:
            msgid, plural = msgid.split(PLURAL_SEPARATOR, 1)
        entries.append(MoEntry(context, msgid, plural, tuple(msgstr.split(PLURAL_SEPARATOR))))
    return entries


def _decode(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


def write_mo(path: str | Path, entries: list[MoEntry], *, charset: str = "UTF-8") -> None:
    """A little-endian .mo file of `entries` (and a header naming `charset`): for tests and fixtures."""
    pairs = [("", f"Content-Type: text/plain; charset={charset}\n")]
    for e in entries:
        key = e.msgid if e.msgid_plural is None else e.msgid + PLURAL_SEPARATOR + e.msgid_plural
        if e.context is not None:
            key = e.context + CONTEXT_SEPARATOR + key
        pairs.append((key, PLURAL_SEPARATOR.join(e.msgstrs)))
    pairs.sort(key=lambda kv: kv[0].encode(charset))
    keys = [k.encode(charset) for k, _ in pairs]
    values = [v.encode(charset) for _, v in pairs]
    n = len(pairs)
    originals, translations = 28, 28 + 8 * n
    offset = 28 + 16 * n
    o_table, t_table, blob = b"", b"", b""
    for table_items, which in ((keys, "o"), (values, "t")):
        for item in table_items:
            entry = struct.pack("<2I", len(item), offset + len(blob))
            blob += item + b"\x00"
            if which == "o":
                o_table += entry
            else:
                t_table += entry
    header = struct.pack("<7I", MAGIC_LE, 0, n, originals, translations, 0, 0)
    Path(path).write_bytes(header + o_table + t_table + blob)
