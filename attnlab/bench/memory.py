"""Peak memory of one call: the CUDA allocator's peak on GPU, the peak of live tensor bytes on CPU;
and on Linux the growth of the process's resident memory over a whole point.

On CPU there is no allocator statistic, so `LiveTensorPeak` watches every op through a
TorchDispatchMode: each storage an op *creates* (an output whose storage is not one of the op's
inputs, so views and in-place ops are not counted twice) adds its bytes while it is alive; a weak
reference on the storage takes them off when it is freed. The peak of that running total is the
memory the call needed beyond the tensors that existed before it (inputs and parameters) — the
same quantity as `max_memory_allocated() - memory_allocated()` measured around a CUDA call.

Live tensors are not what the kernel kills a process for: that is its resident memory, which also holds
what the allocator keeps (`keep_freed_memory`: freed heap stays mapped, and a heap fragmented by
earlier points grows past its live bytes) and buffers allocated inside kernels. `start_resident_peak`
and `resident_growth_mb` measure that around a point (Linux: VmRSS and VmHWM in /proc/self/status,
the high-water mark reset by writing "5" to /proc/self/clear_refs); the sweep's memory forecast reads it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from attnlab.attention.cpu import trim_heap
from attnlab.bench import config
from attnlab.host import resident

CPU_METHOD = "cpu_live_tensor_peak"  # TorchDispatchMode: peak bytes of tensors allocated in the call
CUDA_METHOD = "cuda_max_memory_allocated"  # allocator peak minus what was allocated before the call


def _storages(values: Any) -> list[torch.UntypedStorage]:
    return [t.untyped_storage() for t in tree_leaves(values) if isinstance(t, torch.Tensor)]


class LiveTensorPeak(TorchDispatchMode):
    """Tracks the bytes of storages created while active; `peak_bytes` is the high-water mark."""

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._tracked: dict[int, weakref.ref] = {}

    def _free(self, key: int, nbytes: int) -> None:
        if self._tracked.pop(key, None) is not None:
            self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {s.data_ptr() for s in _storages((args, kwargs)) if s.nbytes()}
        for storage in _storages(out):
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if not nbytes or key in inputs or key in self._tracked:
                continue
            self._tracked[key] = weakref.ref(
                storage, lambda _, key=key, nbytes=nbytes: self._free(key, nbytes)
            )
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[float, str]:
    """Run `fn` once; return (peak extra memory in MiB, method name)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return peak / 2**20, CUDA_METHOD
    with LiveTensorPeak() as tracker:
        result = fn()
        del result
    return tracker.peak_bytes / 2**20, CPU_METHOD


def start_resident_peak() -> int | None:
    """Start a point's resident high-water mark from the memory resident now (the heap kept from earlier
    points handed back first: else the point would reuse those pages unseen, and MemAvailable would leave
    them out): the bytes resident, or None where the platform cannot reset the mark (not Linux)."""
    return resident.status_bytes("VmRSS") if resident.reset_peak() else None


def resident_growth_mb(start: int | None) -> float | None:
    """How far the resident high-water mark rose above `start` (from start_resident_peak), in MiB."""
    peak = None if start is None else resident.status_bytes("VmHWM")
    return None if peak is None else max(peak - start, 0) / 2**20


def available_bytes(device: torch.device) -> int | None:
    """What a point on `device` may use (config.device_memory_bytes); on CPU after the heap this process
    keeps is handed back, so MemAvailable counts it."""
    if device.type == "cpu":
        trim_heap()
    return config.device_memory_bytes(device)
