"""glibc's allocator knobs through ctypes (mallopt, malloc_trim): the bench keeps freed memory mapped
during a sweep (attnlab/host/allocator.py says why), and a run hands kept heap back before it counts
its peak. Elsewhere (macOS, musl) each call does nothing and says so by its result."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_heap(values: dict[int, int]) -> bool:
    """mallopt(param, value) for each item; False where there is no glibc or it refused one."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in values.items())


def trim_heap() -> bool:
    """Hand the freed heap the process keeps back to the system (malloc_trim(0)); False without glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True
