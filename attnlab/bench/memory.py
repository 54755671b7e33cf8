"""Peak memory of one call: the CUDA allocator's peak on GPU, the peak of live tensor bytes on CPU.

On CPU there is no allocator statistic, so `LiveTensorPeak` watches every op through a
TorchDispatchMode: each storage an op *creates* (an output whose storage is not one of the op's
inputs, so views and in-place ops are not counted twice) adds its bytes while it is alive; a weak
reference on the storage takes them off when it is freed. The peak of that running total is the
memory the call needed beyond the tensors that existed before it (inputs and parameters) — the
same quantity as `max_memory_allocated() - memory_allocated()` measured around a CUDA call.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

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
