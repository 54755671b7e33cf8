"""Our variants against the well-known pure-PyTorch implementations of the same methods.

How to run (not part of the test suite; a few minutes on CPU):

    pip install --no-deps performer-pytorch linformer nystrom-attention local-attention einops \
        hyper-connections axial-positional-embedding   # --no-deps: never let them swap torch
    python benchmarks/compare_reference.py                       # N = 1024, 4096; forward+backward
    python benchmarks/compare_reference.py --lengths 1024 2048 8192 --mode forward --threads 2

Pairs, on the same shapes (B=1, H=4, head dim 64, fp32) and the same method hyperparameters:

    performer  build_attention("performer")     vs performer_pytorch.FastAttention        (kernel only)
    local      build_attention("local")         vs local_attention.LocalAttention         (kernel only;
               exact window: blocks of w (causal) or w/2 (non-causal), one block back / forward)
    nystrom    attnlab.nn.MultiHeadAttention    vs nystrom_attention.NystromAttention     (with projections,
               residual conv off on both sides)
    lowrank    attnlab.nn.MultiHeadAttention    vs linformer.LinformerSelfAttention       (with projections)

A package that is not installed is reported and its pair skipped. After one warm-up call each (which
also measures peak memory), ours and the reference are called alternately --repeats times; the times
are medians and the time ratio is the median of the per-pair ratios, so a machine that drifts
mid-run moves both sides alike. ratio = ours / reference (below 1: ours is faster / smaller).
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from attnlab.attention import build_attention, registry_entry
from attnlab.bench.config import Setting
from attnlab.bench.measure import measure_point, paired_times
from attnlab.bench.workload import Workload
from attnlab.host.allocator import keep_freed_memory
from attnlab.nn import AttentionSpec, MultiHeadAttention

B, H, D = 1, 4, 64
C = H * D


@dataclass
class Pair:
    name: str  # our variant
    package: str  # the reference's import name
    causal_ok: bool
    make: Callable[[int, bool, dict], tuple[nn.Module, nn.Module, str]]  # -> ours, reference, input kind


def _default(variant: str, param: str):
    return registry_entry(variant).hyperparameters[param].default


def make_performer(n: int, causal: bool, p: dict):
    from performer_pytorch import FastAttention

    features = p.get("features", _default("performer", "features"))
    ours = build_attention("performer", features=features, head_dim=D)
    return ours, FastAttention(dim_heads=D, nb_features=features, causal=causal), "qkv"


def make_local(n: int, causal: bool, p: dict):
    from local_attention import LocalAttention

    window = p.get("window", _default("local", "window"))
    block = window if causal else window // 2
    ref = LocalAttention(window_size=block, causal=causal, look_backward=1, look_forward=0 if causal else 1,
                         autopad=True, exact_windowsize=True)  # fmt: skip
    return build_attention("local", window=window), ref, "qkv"


def make_nystrom(n: int, causal: bool, p: dict):
    from nystrom_attention import NystromAttention

    landmarks = p.get("landmarks", _default("nystrom", "landmarks"))
    ours = MultiHeadAttention(C, H, AttentionSpec("nystrom", {"landmarks": landmarks}), max_len=n)
    ref = NystromAttention(
        dim=C, dim_head=D, heads=H, num_landmarks=landmarks, pinv_iterations=6, residual=False
    )
    return ours, ref, "x"


def make_lowrank(n: int, causal: bool, p: dict):
    from linformer import LinformerSelfAttention

    k = p.get("k", _default("lowrank", "k"))
    ours = MultiHeadAttention(C, H, AttentionSpec("lowrank", {"k": k}), max_len=n)
    return ours, LinformerSelfAttention(dim=C, seq_len=n, k=k, heads=H, dim_head=D), "x"


PAIRS = [
    Pair("performer", "performer_pytorch", True, make_performer),
    Pair("local", "local_attention", True, make_local),
    Pair("nystrom", "nystrom_attention", False, make_nystrom),
    Pair("lowrank", "linformer", False, make_lowrank),
]


def workload(
    module: nn.Module, kind: str, n: int, mode: str, causal: bool, label: str, *, ours: bool
) -> Workload:
    grad = mode == "forward+backward"
    shape = (B, H, n, D) if kind == "qkv" else (B, n, C)
    inputs = [torch.randn(*shape, requires_grad=grad) for _ in range(3 if kind == "qkv" else 1)]
    params = [p for p in module.parameters() if p.requires_grad]

    def forward():
        if kind == "x":
            return module(inputs[0], causal=causal) if ours and causal else module(inputs[0])
        return module(*inputs, causal=causal) if ours else module(*inputs)

    def call():
        if not grad:
            with torch.no_grad():
                return forward()
        for t in inputs + params:
            t.grad = None
        out = forward()
        out.backward(torch.ones_like(out))

    return Workload(label, n, Setting(mode, causal), call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--mode", choices=["forward", "forward+backward"], default="forward+backward")
    parser.add_argument("--repeats", type=int, default=11, help="timed pairs per point")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", nargs="+", default=None, help="variant names to compare")
    parser.add_argument(
        "--system-allocator", action="store_true", help="glibc's default allocation (host/allocator.py)"
    )
    args = parser.parse_args()
    with keep_freed_memory(not args.system_allocator) as allocation:
        compare(args, allocation)


def compare(args: argparse.Namespace, allocation: str) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    header = f"{'variant':<10} {'causal':<6} {'N':>6} | {'ours ms':>9} {'ref ms':>9} {'time ratio':>10} | {'ours MB':>9} {'ref MB':>9} {'mem ratio':>9}"
    print(
        f"{args.mode}, B={B}, H={H}, head dim={D}, fp32, {torch.get_num_threads()} threads; ratio = ours / reference"
        f"\nhost memory: {allocation}"
    )
    print(header)
    print("-" * len(header))
    for pair in PAIRS:
        if args.only and pair.name not in args.only:
            continue
        try:
            importlib.import_module(pair.package)
        except ImportError as exc:
            print(f"{pair.name:<10} skipped: reference package '{pair.package}' not installed ({exc})")
            continue
        for causal in [False, True] if pair.causal_ok else [False]:
            for n in args.lengths:
                ours, ref, kind = pair.make(n, causal, {})
                workloads = [
                    workload(module.eval() if args.mode == "forward" else module, kind, n, args.mode, causal,
                             pair.name, ours=is_ours)
                    for module, is_ours in ((ours, True), (ref, False))
                ]  # fmt: skip
                # Peak memory from one instrumented (warm-up) call each, then the timing interleaved.
                mine, theirs = (
                    measure_point(w, repeats=1, warmup=1, device=torch.device("cpu"), budget_s=120)
                    for w in workloads
                )
                ours_ms, ref_ms, ratios = paired_times(workloads[0].fn, workloads[1].fn, args.repeats)
                m_ratio = mine.peak_mem_mb / theirs.peak_mem_mb if theirs.peak_mem_mb else math.nan
                print(
                    f"{pair.name:<10} {'yes' if causal else 'no':<6} {n:>6} | {ours_ms:>9.2f} {ref_ms:>9.2f} "
                    f"{statistics.median(ratios):>10.2f} | {mine.peak_mem_mb:>9.1f} {theirs.peak_mem_mb:>9.1f} "
                    f"{m_ratio:>9.2f}"
                )


if __name__ == "__main__":
    main()
