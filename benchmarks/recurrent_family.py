"""Each chunked form against its own plain recurrent reference (the readable loop the tests trust).

    python benchmarks/recurrent_family.py                     # reference at N=1024, chunked at 1024 and 16K
    python benchmarks/recurrent_family.py --ref-length 2048 --threads 1
    python benchmarks/recurrent_family.py --length 8192 --variants mamba2 gated_deltaproduct
    python benchmarks/recurrent_family.py --length 8192 --variants rwkv7 --chunk-sizes 32 64   # paired

Setting: CPU, B=1, H=4, head dim 64, fp32, forward+backward, causal, the ops of attnlab.attention.ops
called directly (gates already in their domain). The reference loop costs the same per token at any
length (a fixed-size state), so its time at 16K is EXTRAPOLATED linearly from --ref-length (printed as
such); the chunked form is measured at both lengths. Reference and chunked form at --ref-length are
timed alternately (attnlab.bench.measure.paired_times), so a machine others share slows both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from attnlab.attention import ops
from attnlab.bench.measure import paired_times

B, H, D = 1, 4, 64
FAMILY = (
    "retention",
    "gla",
    "deltanet",
    "gated_deltanet",
    "based",
    "mamba2",
    "gated_deltaproduct",
    "kda",
    "rwkv7",
)
SCALE = D**-0.5


def inputs(name: str, n: int) -> list[torch.Tensor]:
    """q, k, v and the op's gates (in their domain), leaves with gradients (gated_deltaproduct: its
    2n interleaved delta-rule steps for n tokens)."""
    gen = torch.Generator().manual_seed(0)
    n = 2 * n if name == "gated_deltaproduct" else n
    q, k, v = (torch.randn(B, H, n, D, generator=gen) for _ in range(3))
    if name in ("deltanet", "gated_deltanet", "gated_deltaproduct", "kda"):
        k = F.normalize(k, dim=-1)
    if name == "based":
        q, k = q[..., :16], k[..., :16]  # feature_dim 16
    gates = {
        "retention": [torch.full((B, H, n), -0.03)],
        "gla": [F.logsigmoid(torch.randn(B, H, n, D, generator=gen)) / 16],
        "deltanet": [torch.sigmoid(torch.randn(B, H, n, generator=gen))],
        "gated_deltanet": [
            torch.sigmoid(torch.randn(B, H, n, generator=gen)),
            -torch.rand(B, H, n, generator=gen),
        ],
        "based": [],
        "kda": [
            torch.sigmoid(torch.randn(B, H, n, generator=gen)),
            F.logsigmoid(torch.randn(B, H, n, D, generator=gen)) / 16,  # a decay per key dimension
        ],
        "rwkv7": [  # α = -κ̂, β = κ̂ ⊙ a, log decay -e^-0.5 σ(w)
            -F.normalize(torch.randn(B, H, n, D, generator=gen), dim=-1),
            F.normalize(torch.randn(B, H, n, D, generator=gen), dim=-1)
            * torch.rand(B, H, n, D, generator=gen),
            -0.6065 * torch.sigmoid(torch.randn(B, H, n, D, generator=gen)),
        ],
        "mamba2": [-F.softplus(torch.randn(B, H, n, generator=gen)) * 0.1],  # data-dependent scalar decay
        # gated_deltaproduct: the delta rule over 2n interleaved steps (two Householder steps per token)
        "gated_deltaproduct": [
            torch.sigmoid(torch.randn(B, H, n, generator=gen)),
            -torch.rand(B, H, n, generator=gen) * (torch.arange(n) % 2 == 0),  # the decay on first steps
        ],
    }[name]
    return [t.contiguous().requires_grad_() for t in (q, k, v, *gates)]


def call(name: str, form: str, tensors: list[torch.Tensor], chunk_size: int | None = None) -> torch.Tensor:
    q, k, v, *gates = tensors
    if name in ("retention", "gla", "mamba2"):
        fn = ops.chunk_gla if form == "chunk" else ops.naive_recurrent_gla
        return fn(q, k, v, gates[0], scale=SCALE)[0]
    if name in ("deltanet", "gated_deltanet", "gated_deltaproduct"):
        fn = ops.chunk_delta_rule if form == "chunk" else ops.naive_recurrent_delta_rule
        return fn(q, k, v, gates[0], gates[1] if len(gates) > 1 else None, scale=SCALE)[0]
    if name == "rwkv7":
        fn = ops.chunk_dplr if form == "chunk" else ops.naive_recurrent_dplr
        extra = {"chunk_size": chunk_size or 32} if form == "chunk" else {}  # 32: the variant's default
        return fn(q, k, v, *gates, scale=SCALE, **extra)[0]
    if name == "kda":
        fn = ops.chunk_kda if form == "chunk" else ops.naive_recurrent_kda
        extra = {"chunk_size": chunk_size} if form == "chunk" and chunk_size else {}
        return fn(q, k, v, gates[0], gates[1], scale=SCALE, **extra)[0]
    if form == "chunk":
        return ops.chunk_based(q, k, v, scale=16**-0.5)
    return ops.naive_recurrent_based(q, k, v, scale=16**-0.5)[0]


def fwd_bwd(name: str, form: str, n: int, chunk_size: int | None = None) -> Callable[[], None]:
    tensors = inputs(name, n)
    grad = torch.randn(tensors[0].shape)

    def run() -> None:
        for t in tensors:
            t.grad = None
        call(name, form, tensors, chunk_size).backward(grad)

    run()  # warm-up
    return run


def median_ms(fn: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-length", type=int, default=1024)
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=list(FAMILY))
    parser.add_argument("--chunk-sizes", nargs=2, type=int, default=None, metavar=("A", "B"),
                        help="kda/rwkv7: time the chunked form at --length with chunks of A and of B, paired")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chunk_sizes:
        a, b = args.chunk_sizes
        for name in args.variants:
            ms_a, ms_b, _ = paired_times(
                fwd_bwd(name, "chunk", args.length, a), fwd_bwd(name, "chunk", args.length, b), args.repeats
            )
            print(
                f"{name} N={args.length}: chunks of {a} {ms_a:.0f} ms, of {b} {ms_b:.0f} ms ({ms_b / ms_a:.2f}x)"
            )
        return
    n0, n1 = args.ref_length, args.length
    print(f"threads={torch.get_num_threads()}  B={B} H={H} D={D} fp32 fwd+bwd causal  reference at N={n0}")
    print(f"{'variant':16}{'ref@' + str(n0):>12}{'chunk@' + str(n0):>12}{'x':>8}"
          f"{'ref@' + str(n1) + '*':>14}{'chunk@' + str(n1):>12}{'x':>8}")  # fmt: skip
    for name in args.variants:
        ref_ms, chunk_ms, _ = paired_times(
            fwd_bwd(name, "naive", n0), fwd_bwd(name, "chunk", n0), args.repeats
        )
        long_ms = median_ms(fwd_bwd(name, "chunk", n1), args.repeats)
        ref_long = ref_ms * n1 / n0
        print(f"{name:16}{ref_ms:12.0f}{chunk_ms:12.1f}{ref_ms / chunk_ms:8.1f}"
              f"{ref_long:14.0f}{long_ms:12.1f}{ref_long / long_ms:8.1f}", flush=True)  # fmt: skip
    print(f"* extrapolated linearly from N={n0} (the loop's cost per token does not depend on N)")


if __name__ == "__main__":
    main()
