"""How far causal `linear` can get ahead of causal `multihead` with this machine's matmuls.

How to run (not part of the test suite; about a minute at N=16K on a 2-core CPU):

    python benchmarks/causal_linear_ceiling.py                 # N=16K, as in the speed targets
    python benchmarks/causal_linear_ceiling.py --n 4096 --rounds 5 --threads 1

The speed target "causal linear >= 40x faster than causal multihead at N=16K" sits near what the
hardware allows on a small CPU. This script measures, on the targets' setting (CPU, B=1, H=4, head
dim 64, fp32, causal, forward+backward) and with the bench's own workloads:

  1. the ratio itself, in rounds: causal linear --block times in a row after one call left out of
     the ratio (as the bench measures a point: warm-up, then repeats), then causal multihead once;
     the ratio of each round, and their median. The left-out call, the first after a multihead
     call, is printed too, to show what starting cold after seconds of SDPA costs.
  2. where causal linear's time goes: its batched matrix products (aten::bmm / baddbmm: their share
     of the operators' self time under torch.profiler, applied to the unprofiled time) and
     everything else, and the products' rate (FLOPs from FlopCounterMode);
  3. the ceiling: multihead's time over the products' time alone, i.e. the ratio causal linear
     would reach if everything but its matrix products took no time at all;
  4. for reference, one-thread rates on one batched 64x64x64 product (the kernel's shape): torch's
     BLAS next to numpy's (their libraries differ; attnlab's kernels and PyTorch's SDPA both use
     torch's, so a faster library elsewhere says nothing about the ratio).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from attnlab.bench.config import Setting, parse
from attnlab.bench.workload import build_workload
from attnlab.flops import count_flops
from attnlab.host.allocator import keep_freed_memory

MATMULS = {"aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::mm", "aten::addmm", "aten::matmul"}
SETTING = Setting("forward+backward", causal=True)


def workloads(n: int, chunk: int):
    cfg = parse(
        {
            "variants": ["multihead", "linear"], "lengths": [n], "batch": 1, "heads": 4, "head_dim": 64,
            "dtype": "float32", "device": "cpu", "causal": True, "mode": "forward+backward",
            "target": "attention", "repeats": 1, "warmup": 0, "time_budget_s": 600.0,
            "params": {"linear": {"chunk_size": chunk}},
        }
    )  # fmt: skip
    return build_workload(cfg, "multihead", n, SETTING), build_workload(cfg, "linear", n, SETTING)


def rounds_of_blocks(linear, multihead, rounds: int, block: int) -> tuple[float, float, float, list[float]]:
    """Median ms of linear, of its first call after multihead, and of multihead, and the ratio
    multihead / linear of each round; see the module docstring."""
    linear_ms, first_ms, multihead_ms, ratios = [], [], [], []

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    for _ in range(rounds):
        first_ms.append(timed(linear.fn))  # left out of the ratio: the first call after multihead's
        times = [timed(linear.fn) for _ in range(block)]
        linear_ms += times
        multihead_ms.append(timed(multihead.fn))
        ratios.append(multihead_ms[-1] / statistics.median(times))
    return statistics.median(linear_ms), statistics.median(first_ms), statistics.median(multihead_ms), ratios


def matmul_fraction(step, rounds: int) -> float:
    """The share of a call's operator time spent in matrix products, from torch.profiler's self
    times over `rounds` calls (a share, because the profiler's own overhead inflates absolute times)."""
    for _ in range(2):  # the first profiled session also pays the profiler's start-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(rounds):
                step()
    events = prof.key_averages()
    return sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / sum(
        e.self_cpu_time_total for e in events
    )


def blas_rates(groups: int, repeats: int = 20) -> list[tuple[str, float]]:
    """One-thread GFLOP/s of a (groups, 64, 64) @ (groups, 64, 64) product: torch, then numpy."""
    flop = 2 * groups * 64**3
    a, b = torch.randn(groups, 64, 64), torch.randn(groups, 64, 64)
    out = torch.empty(groups, 64, 64)

    def rate(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flop / statistics.median(times) / 1e9

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        blas = "MKL" if torch.backends.mkl.is_available() else "its BLAS"
        rates = [(f"torch.bmm ({blas})", rate(lambda: torch.bmm(a, b, out=out)))]
    finally:
        torch.set_num_threads(threads)
    try:
        import numpy as np
    except ImportError:
        return rates
    an, bn, on = a.numpy(), b.numpy(), out.numpy()
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    # numpy multiplies a stack one matrix at a time, and its BLAS does not split a 64^3 product
    rates.append((f"numpy.matmul ({blas})", rate(lambda: np.matmul(an, bn, out=on))))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16384, help="sequence length (default 16384)")
    parser.add_argument("--chunk", type=int, default=64, help="causal linear's chunk_size (default 64)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of linear x block, multihead x 1 (default 5)"
    )
    parser.add_argument("--block", type=int, default=5, help="timed linear calls per round (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--system-allocator", action="store_true", help="glibc's default allocation (host/allocator.py)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    multihead, linear = workloads(args.n, args.chunk)
    with keep_freed_memory(not args.system_allocator) as allocation:
        print(
            f"N={args.n}, B=1, H=4, head dim 64, fp32, causal, forward+backward, "
            f"{torch.get_num_threads()} threads\nhost memory: {allocation}"
        )
        multihead.fn()  # warm-up (linear's is in every round)
        linear_ms, first_ms, multihead_ms, ratios = rounds_of_blocks(
            linear, multihead, args.rounds, args.block
        )
        products_ms = linear_ms * matmul_fraction(linear.fn, rounds=5)
    flops = count_flops(linear.fn)  # FlopCounterMode counts matrix products only
    ratio = statistics.median(ratios)
    print(
        f"causal multihead  {multihead_ms:9.1f} ms\n"
        f"causal linear     {linear_ms:9.1f} ms   {ratio:.1f}x faster (median of {args.rounds} rounds, "
        f"{min(ratios):.1f}-{max(ratios):.1f}x; target >= 40x)\n"
        f"  (its first call after a multihead call, left out: {first_ms:.1f} ms)\n"
        f"  matrix products {products_ms:6.1f} ms ({products_ms / linear_ms:.0%}; {flops / 1e9:.2f} GFLOP at "
        f"{flops / products_ms / 1e6:.0f} GFLOP/s)\n"
        f"  everything else {linear_ms - products_ms:6.1f} ms\n"
        f"ceiling, if everything but the matrix products took no time: {multihead_ms / products_ms:.1f}x"
    )
    groups = 4 * args.n // args.chunk
    for name, gflops in blas_rates(groups):
        print(f"one thread, {groups} x 64^3 products: {name} {gflops:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
