"""Keep freed memory in the process during a CPU sweep, so timings measure compute, not page faults.

glibc's malloc hands large blocks back to the kernel when they are freed (an mmap threshold that
grows only to 32 MiB, a trim threshold of twice that). The next call then takes fresh pages, and the
kernel zeroes each one on first touch: every large temporary of every call is paid for again in
page faults and system CPU time (measured with `getrusage`: docs/measurements.md). That is a cost of glibc's defaults, not of the attention method, and it falls unevenly: variants
made of several unfused ops pay more of it than the fused SDPA kernels. `keep_freed_memory=false`
measures it.

`keep_freed_memory()` raises both thresholds for the sweep (blocks up to 256 MiB come from the heap,
and up to 1 GiB of freed heap stays mapped) and sets them back afterwards. It is the effect of the
jemalloc/tcmalloc that PyTorch's own CPU launcher (`python -m torch.backends.xeon.run_cpu`) preloads
by default, without preloading anything. Only glibc has these knobs; elsewhere (macOS, musl) it does
nothing and says so. Measured peak memory is unaffected: the bench counts live tensor bytes.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager

from attnlab.attention.cpu import keep_freed_heap, trim_heap

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
KEEP = {M_MMAP_THRESHOLD: 256 << 20, M_TRIM_THRESHOLD: 1 << 30}
# What glibc's dynamic thresholds settle at once large blocks are in use (its DEFAULT_MMAP_THRESHOLD_MAX
# on 64-bit, and twice that): restored after the sweep; setting them switches the dynamic adjustment off.
GLIBC_STEADY = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}


@contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[str]:
    """Within the block, freed heap memory is kept for reuse. Yields how allocation was configured
    (recorded with the results)."""
    if not enabled:
        yield "system default (keep_freed_memory=false)"
        return
    if not keep_freed_heap(KEEP):
        yield f"system default (no glibc mallopt on this platform: {platform.libc_ver()[0] or platform.system()})"
        return
    try:
        yield (
            f"glibc, freed memory kept: mmap threshold {KEEP[M_MMAP_THRESHOLD] >> 20} MiB, "
            f"trim threshold {KEEP[M_TRIM_THRESHOLD] >> 20} MiB"
        )
    finally:
        keep_freed_heap(GLIBC_STEADY)
        trim_heap()
