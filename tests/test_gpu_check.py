"""`make gpu-check` (attnlab/check/gpu.py): one line and exit 0 without CUDA; its parts' report lines,
checked here on the CPU with small sizes (the GPU figures are in docs/measurements.md when measured)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from attnlab.check import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: the check would run")
def test_without_cuda_it_skips_with_one_line_and_exit_0():
    done = subprocess.run(
        [sys.executable, "-m", "attnlab.check.gpu"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "gpu-check skipped: no CUDA GPU visible (torch.cuda.is_available() is False); run it where a GPU is visible"
    ]
    assert done.stderr == ""


def test_make_has_the_target():
    assert "\ngpu-check: $(STAMP)\n\t$(BIN)/python -m attnlab.check.gpu\n" in (ROOT / "Makefile").read_text()


def test_the_conformance_part_reports_one_line_per_variant():
    ok, lines = gpu.conformance(device="cpu", names=["linear"])
    assert ok
    assert re.fullmatch(r"conformance linear: \d+ passed, 0 failed, \d+ skipped", lines[0]), lines


def test_the_bench_part_reports_each_variant_against_sdpa(tmp_path):
    ok, lines = gpu.bench(tmp_path, device="cpu", dtype="float32", length=64, variants="[multihead,linear]")
    assert ok, lines
    assert re.fullmatch(r"bench multihead N=64: [\d.]+ ms, 1\.00x SDPA time, 1\.00x SDPA memory", lines[0]), (
        lines
    )
    assert re.fullmatch(
        r"bench linear N=64: [\d.]+ ms, [\d.]+x SDPA time(, [\d.]+x SDPA memory)?", lines[1]
    ), lines
