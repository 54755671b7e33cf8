"""The one door to attnlab's C: everything that knows C lives in this package.

    build.py      compile, cache and load the .c files (and the no-compiler / ATTNLAB_FUSED_CPU=0 fallbacks)
    kernels.py    the ctypes signatures, one Python call per C function, the chunk loops as custom ops
    *.c, *.h      the kernels, one file per method: gla's log decay gate, the GEMM micro-kernel, the
                  delta rule's passes and chunk loops, the sliding-window softmax, Based's chunk loops.
                  Only C that is at least 1.3x faster than the best PyTorch form measured stays
                  (docs/c-passes.md, which also lists what was deleted and why)
    functions.py  the autograd Functions that exist only for the C (window attention, based's kernel)
    libc.py       glibc's allocator knobs (the bench keeps freed memory; runs hand it back)

A caller asks once, at the top of its fast path, whether the C applies to its tensors:

    c = cpu.kernels_for(q, k, v)      # the kernels, or None: not plain contiguous float32 CPU tensors,
    if c is not None:                 # a call autograd records, no compiler, or ATTNLAB_FUSED_CPU=0
        ...                           # then the readable PyTorch form beside it runs instead

and hands that decision to the steps it calls (their `kernels=` argument); a step called on its own
(kernels=ASK, the default) asks for itself.

Nothing outside this package imports ctypes or touches the library: callers get Python functions on
tensors (kernels.py), and only through kernels_for.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from torch import Tensor

from attnlab.attention.cpu.libc import keep_freed_heap, trim_heap

__all__ = ["ASK", "available", "decided", "keep_freed_heap", "kernels_for", "loop_flops", "trim_heap"]

# The default of a step's `kernels` argument: a step called on its own asks the door itself; a Function
# that decided once at its top passes its decision (the kernels, or None for the PyTorch form) down.
ASK: Any = object()


def available() -> bool:
    """Whether the C kernels are built and on (False: no compiler, a failed build, ATTNLAB_FUSED_CPU=0)."""
    from attnlab.attention.cpu.build import library

    return library() is not None


def kernels_for(*tensors: Tensor | None) -> ModuleType | None:
    """The C kernels (attnlab.attention.cpu.kernels) if they may take every one of these tensors (plain
    contiguous float32 CPU tensors that autograd is not recording; None entries are skipped) and the
    library is built, else None."""
    from attnlab.attention.cpu import kernels

    return kernels if kernels.plain(*tensors) and available() else None


def decided(kernels: ModuleType | None, *tensors: Tensor | None) -> ModuleType | None:
    """`kernels` as a caller decided it, or, where it passed ASK, kernels_for(*tensors)."""
    return kernels_for(*tensors) if kernels is ASK else kernels


def loop_flops() -> dict[Any, Any]:
    """{custom op: FLOP formula} of the C loops that do matrix products, for torch.utils.flop_counter."""
    from attnlab.attention.cpu.kernels import LOOP_FLOPS

    return LOOP_FLOPS
