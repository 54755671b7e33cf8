"""`python -m attnlab.variants`: every registered attention variant, built-in or plugin.

    python -m attnlab.variants          a table: name, complexity, capabilities, parameters, exact?, source
    python -m attnlab.variants --json   the same, machine-readable

Plugins that failed to load are listed below the table as warnings (the exit status stays 0: a
broken plugin never hides the others).
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import fields
from typing import Any

from attnlab.attention.base import Capabilities
from attnlab.attention.registry import available_attentions, broken_plugins, registry_entry
from attnlab.errors import OneLineArgumentParser

CAPABILITY_LABELS = {
    "causal": "causal",
    "key_padding_mask": "padding",
    "cross": "cross",
    "incremental": "incremental",
    "alibi": "alibi",
    "segments": "segments",
}


def variant_rows() -> list[dict[str, Any]]:
    """One dict per registered variant (the --json output)."""
    rows = []
    for name in available_attentions():
        entry = registry_entry(name)
        cls = entry.cls
        rows.append(
            {
                "name": name,
                "complexity": cls.complexity,
                "capabilities": {f.name: getattr(cls.capabilities, f.name) for f in fields(Capabilities)},
                "parameters": {p.name: p.default for p in entry.hyperparameters.values()},
                "parameter_types": {p.name: p.describe() for p in entry.hyperparameters.values()},
                "context": list(entry.context),
                "exact": cls.exact,
                "reference_tolerance": cls.reference_tolerance,
                "fixed_heads": cls.fixed_heads,
                "source": entry.source,
                "class": f"{cls.__module__}.{cls.__qualname__}",
            }
        )
    return rows


def _exactness(row: dict[str, Any]) -> str:
    if row["exact"]:
        return "exact"
    if row["reference_tolerance"] is not None:
        return f"≈ (±{row['reference_tolerance']:g})"
    return "no"


def print_table(rows: list[dict[str, Any]], broken: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 240)  # piped output: no wrapping at 80
    table = Table(title="attnlab attention variants", show_lines=False)
    for column in ("name", "complexity", "capabilities", "parameters", "exact?", "source"):
        table.add_column(column, overflow="fold")
    for row in rows:
        capabilities = ", ".join(
            label for key, label in CAPABILITY_LABELS.items() if row["capabilities"][key]
        )
        parameters = "\n".join(row["parameter_types"].values()) or "-"
        table.add_row(
            row["name"], row["complexity"], capabilities or "-", parameters, _exactness(row), row["source"]
        )
    console.print(table)
    for name, reason in broken.items():
        console.print(
            f"[yellow]warning:[/] attention plugin '{name}' failed to load and is skipped: {reason}",
            markup=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m attnlab.variants", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # broken plugins are reported below, once, in our own words
        warnings.simplefilter("ignore")
        rows = variant_rows()
        broken = broken_plugins()
    if args.json:
        json.dump({"variants": rows, "broken_plugins": broken}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        for name, reason in broken.items():
            print(
                f"warning: attention plugin '{name}' failed to load and is skipped: {reason}", file=sys.stderr
            )
    else:
        print_table(rows, broken)
    return 0


if __name__ == "__main__":
    sys.exit(main())
