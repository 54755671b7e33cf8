"""Measure one point: FLOPs and peak memory on the first (warm-up) call, then timed repeats.

FLOPs come from torch.utils.flop_counter.FlopCounterMode (via attnlab.flops) on that one call.

Wall time uses time.perf_counter around each call, with torch.cuda.synchronize before and after on
GPU. Repeats stop early once the point has used its time budget (at least one timed call is kept).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from attnlab.bench.memory import peak_memory
from attnlab.bench.workload import Workload
from attnlab.flops import count_flops  # FlopCounterMode, with PyTorch's CPU SDPA kernel counted


@dataclass
class Measurement:
    status: str  # "ok" | "time_budget" (measured, but the point used up its budget)
    times_ms: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None
    memory_method: str = ""
    flops: int | None = None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def iqr_ms(self) -> float | None:
        if len(self.times_ms) < 2:
            return 0.0 if self.times_ms else None
        q1, _, q3 = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return q3 - q1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(workload: Workload, repeats: int, device: torch.device, deadline: float) -> list[float]:
    """Wall time in ms of up to `repeats` calls; stops after the call that passes `deadline`."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        workload.fn()
        _sync(device)
        end = time.perf_counter()
        times.append((end - start) * 1e3)
        if end > deadline:
            break
    return times


def paired_times(
    first: Callable[[], object], second: Callable[[], object], pairs: int
) -> tuple[float, float, list[float]]:
    """Median ms of each and the per-pair ratios first/second, the two called alternately (which one
    goes first alternates too), so a machine that speeds up or slows down mid-run moves both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    ratios = []
    for i in range(pairs):
        pair = [0.0, 0.0]
        for slot in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            (first, second)[slot]()
            pair[slot] = time.perf_counter() - start
            times[slot].append(pair[slot] * 1e3)
        ratios.append(pair[0] / pair[1])
    return statistics.median(times[0]), statistics.median(times[1]), ratios


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text
    )


def measure_point(
    workload: Workload, *, repeats: int, warmup: int, device: torch.device, budget_s: float
) -> Measurement:
    start = time.perf_counter()
    deadline = start + budget_s
    memory: list[tuple[float, str]] = []  # the first warm-up call is the instrumented one
    flops = count_flops(lambda: memory.append(peak_memory(workload.fn, device)))
    ((peak_mb, method),) = memory
    result = Measurement("ok", peak_mem_mb=peak_mb, memory_method=method, flops=flops)
    if time.perf_counter() > deadline:  # one honest timed call, then give up on this variant's larger N
        result.times_ms = time_calls(workload, 1, device, deadline)
        result.status = "time_budget"
        return result
    for _ in range(max(warmup - 1, 0)):
        workload.fn()
    result.times_ms = time_calls(workload, repeats, device, deadline)
    if time.perf_counter() > deadline:
        result.status = "time_budget"
    return result
