"""Plain text of the sections of a man page's roff source (man and mdoc macros), without running groff.

    sections(source) -> {"NAME": [paragraph, ...], "DESCRIPTION": [...], ...}

Good enough for the prose of NAME and DESCRIPTION: font and size escapes are dropped, character
escapes become their characters, text-bearing macros (.B, .I, .BR, mdoc's .Nm, .Fl, .Ar ...) keep
their arguments, layout macros (.PP, .TP, .IP, .RS, .sp ...) end a paragraph, and anything else
(.de, .ds, tables, conditionals) is skipped. Rendering with man(1) would be exact but takes ~0.1 s
a page; this reads ~20,000 pages in seconds.
"""

from __future__ import annotations

import re
import shlex

# Character escapes -> text (groff_char(7)); anything not listed is dropped.
CHARACTERS = {
    "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'", "em": "-", "en": "-", "hy": "-",
    "mi": "-", "bu": "*", "co": "(C)", "rg": "(R)", "tm": "(TM)", "ti": "~", "ha": "^", "rs": "\\",
    "ga": "`", "aa": "'", "ul": "_", "pl": "+", "eq": "=", "sl": "/", "ba": "|", "or": "|", "lh": "",
    "rh": "", "ua": "^", "da": "v", "<-": "<-", "->": "->", "ss": "ß", "de": "°", "mu": "x", "di": "/",
    "Fo": "«", "Fc": "»", ">=": ">=", "<=": "<=", "!=": "!=", "ap": "~", "sq": "*", "lB": "[", "rB": "]",
}  # fmt: skip
TEXT_MACROS = {
    "B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB", "UR", "MT", "OP",
    # mdoc
    "Nm", "Nd", "Ar", "Fl", "Cm", "Pa", "Xr", "Em", "Sy", "Dq", "Ql", "Qq", "Sq", "Pq", "Li", "Ev", "Va",
    "Dv", "Fn", "Fa", "Ic", "Er", "Ad", "Ms", "Tn", "Ux", "At", "Bx", "Ox", "Nx", "Fx", "Dl", "Op", "Aq",
    "Brq", "Bq", "Lk", "No", "Ns", "Ot", "St", "Lb", "Vt", "Ft", "In", "Cd", "Mt", "Eo", "Ec",
}  # fmt: skip
BREAK_MACROS = {"PP", "LP", "P", "TP", "IP", "HP", "RS", "RE", "sp", "br", "Pp", "Bl", "El", "It", "Bd", "Ed",
                "TQ", "nf", "fi", "EX", "EE", "SS", "Ss", "in", "ti", "ne", "bp"}  # fmt: skip
# mdoc words that are macro names inside a text macro's arguments (".Fl a Ar file"): dropped.
_MDOC_CALLABLE = TEXT_MACROS | {
    "Pf",
    "Xo",
    "Xc",
    "Oo",
    "Oc",
    "Qo",
    "Qc",
    "Do",
    "Dc",
    "Po",
    "Pc",
    "Bro",
    "Brc",
}
_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_SIZE = re.compile(r"\\s[+-]?(\d+|\[\d+\]|\(\d\d)")
_NAMED_CHAR = re.compile(r"\\(\((..)|\[([^\]]*)\])")
_STRING = re.compile(r"\\\*(\((..)|\[([^\]]*)\]|.)")
_OTHER = re.compile(r"\\[hvwlLxXoNbDZk]'[^']*'|\\[nkgmM](\[[^\]]*\]|\(..|.)|\\[&,/%c^|:!{}0 tzdu]|\\\"")


def unescape(text: str) -> str:
    """Inline roff escapes -> plain text."""
    text = text.replace("\\e", "\x00").replace("\\\\", "\x00")  # a literal backslash, restored below
    text = text.replace("\\-", "-").replace("\\ ", " ").replace("\\~", " ").replace("\\0", " ")
    text = _FONT.sub("", text)
    text = _SIZE.sub("", text)
    text = _NAMED_CHAR.sub(lambda m: CHARACTERS.get(m.group(2) or m.group(3), ""), text)
    text = _STRING.sub(
        lambda m: {"R": "(R)", "(Tm": "(TM)", "(lq": '"', "(rq": '"'}.get(m.group(1), ""), text
    )
    text = _OTHER.sub("", text)
    text = text.replace("\\", "")
    return text.replace("\x00", "\\")


def _macro_words(args: str) -> list[str]:
    try:
        words = shlex.split(args, posix=True)
    except ValueError:
        words = args.split()
    return words


def _macro_text(name: str, args: str) -> str:
    words = _macro_words(args)
    if name in {"BR", "RB", "IR", "RI", "BI", "IB"}:
        return "".join(words)  # alternating fonts, no spaces between
    if name[:1].isupper() and name[1:2].islower():  # mdoc: drop nested macro names
        words = [w for w in words if w not in _MDOC_CALLABLE]
        if name == "Fl":
            words = ["-" + w for w in words] or ["-"]
    return " ".join(words)


def sections(source: str) -> dict[str, list[str]]:
    """{section title (upper case): [paragraph text, ...]} in page order; the first title wins."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    paragraph: list[str] = []
    skipping = False  # inside .de … .. or a table (.TS … .TE)

    def flush() -> None:
        if current is not None and paragraph:
            text = " ".join(" ".join(paragraph).split())
            if text:
                current.append(text)
        paragraph.clear()

    for line in source.splitlines():
        if skipping:
            if line.startswith(("..", ".TE")):
                skipping = False
            continue
        if line.startswith((".de", ".TS", ".am")):
            skipping = True
            continue
        if line.startswith(("'", ".")):
            body = line[1:].lstrip()
            name, _, args = body.partition(" ")
            name = name.strip()
            if name.startswith('\\"') or not name:
                continue
            if name in ("SH", "Sh"):
                flush()
                title = unescape(" ".join(_macro_words(args))).strip().upper()
                current = out.setdefault(title, []) if title not in out else None
                continue
            if name in BREAK_MACROS:
                flush()
                continue
            if name in TEXT_MACROS:
                paragraph.append(unescape(_macro_text(name, args)))
            continue
        if not line.strip():
            flush()
            continue
        paragraph.append(unescape(line))
    flush()
    return out
