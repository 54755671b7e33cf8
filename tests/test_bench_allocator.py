"""The bench's host allocation: within `keep_freed_memory()` freed memory is reused, not re-faulted."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab.host.allocator import keep_freed_memory

BLOCKS, BLOCK_FLOATS = 4, 12 << 20  # 4 x 48 MiB: above glibc's largest dynamic mmap threshold (32 MiB)
PAGES = BLOCKS * BLOCK_FLOATS * 4 // 4096

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def allocate_fill_free() -> None:
    blocks = [torch.empty(BLOCK_FLOATS).fill_(1.0) for _ in range(BLOCKS)]
    del blocks


def faults_after_warm_up(rounds: int = 6) -> int:
    """Minor page faults of one allocate-fill-free round after `rounds` others, like a bench point's
    later repeats. (Kept memory settles within ~3 rounds: the heap grows until the freed blocks,
    which are reused with a different alignment, fit.)"""
    for _ in range(rounds):
        allocate_fill_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    allocate_fill_free()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc_only
def test_kept_memory_is_reused_without_page_faults():
    with keep_freed_memory() as allocation:
        assert allocation.startswith("glibc, freed memory kept")
        assert faults_after_warm_up() < PAGES // 10  # the same pages again: nothing for the kernel to zero


@glibc_only
def test_glibc_defaults_fault_every_round_in_a_fresh_process():
    """What the bench avoids: by default each 48 MiB block is mmapped afresh and every page re-faulted."""
    code = (
        "from tests.test_bench_allocator import faults_after_warm_up, PAGES\n"
        "from attnlab.host.allocator import keep_freed_memory\n"
        "with keep_freed_memory(enabled=False) as allocation:\n"
        "    print(allocation, '|', faults_after_warm_up(), PAGES)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    allocation, numbers = out.split("|")
    faults, pages = map(int, numbers.split())
    assert allocation.strip() == "system default (keep_freed_memory=false)"
    assert faults > pages * 9 // 10
