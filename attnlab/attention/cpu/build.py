"""Compile, cache and load the C kernels (the .c files beside this module), or say why not.

The sources are compiled on first use with the system's C compiler (`cc`, or $CC; -O3 -march=native)
into one library in ~/.cache/attnlab (or $XDG_CACHE_HOME/attnlab), keyed by every source's text, the
compiler, the flags and the CPU, and loaded with ctypes. A failed build warns once and leaves the
PyTorch forms in place; ATTNLAB_FUSED_CPU=0 turns the C off without trying.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).parent
SOURCES = tuple(sorted(HERE.glob("*.c")))  # compiled together into one library
HEADERS = tuple(sorted(HERE.glob("*.h")))  # part of the cache key: a changed header rebuilds
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")
# x86: let the compiler's own vector loops (exp, the elementwise passes) use all 512 bits where the CPU
# has AVX-512 (GCC and clang default to 256 there; docs/measurements.md).
X86_FLAGS = ("-mprefer-vector-width=512",)
# Threads through torch's own OpenMP runtime (already loaded: the same libgomp/libomp serves both);
# where torch does not use OpenMP, or the compiler has none (Apple clang), one thread.
PARALLEL, SERIAL = ("-fopenmp",), ("-fopenmp-simd",)


def _cpu_signature() -> str:
    """What -march=native compiles for: the CPU's model and feature flags where Linux tells them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    keys = ("model name", "flags", "Features", "CPU part")
    return platform.machine() + "".join(sorted({line for line in lines if line.startswith(keys)}))


def _flag_sets() -> list[tuple[str, ...]]:
    flags = (*FLAGS, *X86_FLAGS) if platform.machine().lower() in ("x86_64", "amd64") else FLAGS
    serial = (*flags, *SERIAL)
    if "parallel backend: OpenMP" in torch.__config__.parallel_info():
        return [(*flags, *PARALLEL), serial]
    return [serial]


def source_key(*parts: str) -> str:
    """The cache key: every source and header by name and text (any edit to any file rebuilds), then
    `parts` (flags, compiler version, CPU)."""
    texts = [f"{p.name}\0{p.read_text()}" for p in (*SOURCES, *HEADERS)]
    return hashlib.sha256("\0".join([*texts, *parts]).encode()).hexdigest()[:16]


def _build(compiler: str, flags: tuple[str, ...], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, *flags, f"-I{HERE}", "-o", str(built), *map(str, SOURCES)]
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(built, target)  # atomic: processes building at once all end with a whole file


def _load(compiler: str, flags: tuple[str, ...]) -> ctypes.CDLL:
    """The library built with `flags`, from the cache (built there first if need be)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = source_key(*flags, version, _cpu_signature())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnlab"
    target = cache / f"cpu_kernels-{key}.so"
    if not target.exists():
        _build(compiler, flags, target)
    return ctypes.CDLL(str(target))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels (their ctypes signatures: kernels.py), or None (turned off, or no compiler /
    a failed build: warned once)."""
    if os.environ.get("ATTNLAB_FUSED_CPU", "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    error: BaseException = OSError(f"no C compiler found ({os.environ.get('CC', 'cc')!r} is not on PATH)")
    lib = None
    for flags in _flag_sets() if compiler else []:
        try:
            lib = _load(compiler, flags)
            break
        except (OSError, subprocess.CalledProcessError) as exc:
            error = exc
    if lib is None:
        detail = getattr(error, "stderr", None) or error
        warnings.warn(
            f"attnlab: could not build the fused CPU passes of causal linear attention ({detail}); "
            "running their PyTorch versions instead (slower on CPU). ATTNLAB_FUSED_CPU=0 skips the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return lib
