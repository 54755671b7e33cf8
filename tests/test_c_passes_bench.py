"""benchmarks/c_passes.py (docs/c-passes.md, kept-or-deleted per C pass): a tiny run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from attnlab.attention import cpu

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not cpu.available(), reason="no C passes here (no compiler, or turned off)")
def test_the_c_passes_table_runs_and_checks_the_forms_against_c():
    args = ["--length", "128", "--rounds", "1", "--no-compile", "--only", "log_decay_gate", "window_causal"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "c_passes.py"), *args],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith(("| log_decay_gate", "| window_causal"))]
    assert len(rows) == 2
    assert all(row.rstrip(" |").endswith(("keep", "delete")) for row in rows)
    assert "differs from C" not in out
