"""The linear-time family against causal `linear` at one length, each pair of calls side by side.

    python benchmarks/vs_linear.py --threads 1                # N = 16K, 11 pairs per variant
    python benchmarks/vs_linear.py --length 4096 --pairs 21 --variants gla deltanet
    python benchmarks/vs_linear.py --variants deltanet --param deltanet.chunk_size=32
    python benchmarks/vs_linear.py --variants local based --against sdpa-window --param local.window=64

--against sdpa-window pairs each variant with itself, its sliding window (`local`'s, based's) run
through PyTorch's SDPA path instead of the C kernel (attention/ops/window/chunk.py), in place of `linear`.

The workloads are the bench's own (attnlab.bench.workload.attention_workload, as
`python -m attnlab.bench ... target=attention mode=forward+backward causal=true`: the kernel, with
key-derived stand-in gates for a gated one), B=1, H=4, head dim 64, fp32, CPU, freed memory kept
(host/allocator.py). `python -m attnlab.bench` measures one variant's points after another, so a
machine whose speed drifts (other jobs, frequency) moves one variant's time and not its baseline's;
here `linear` and the variant are called alternately, --pairs times (which goes first alternates),
and the ratio reported is the median of the per-pair ratios variant / linear, with its quartiles.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from hydra import compose, initialize_config_module

from attnlab.attention.cpu import functions as local
from attnlab.bench.config import Setting, parse
from attnlab.bench.measure import paired_times
from attnlab.bench.workload import attention_workload
from attnlab.host.allocator import keep_freed_memory

FAMILY = ["retention", "gla", "deltanet", "gated_deltanet", "based"]


def through_sdpa(fn):
    """fn with `local`'s window on its PyTorch (SDPA) path: the C kernel's memory cap set to 0."""

    def run():
        cap, local.WINDOW_SCRATCH_FLOATS = local.WINDOW_SCRATCH_FLOATS, 0
        try:
            return fn()
        finally:
            local.WINDOW_SCRATCH_FLOATS = cap

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--pairs", type=int, default=11)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=FAMILY)
    parser.add_argument("--against", choices=["linear", "sdpa-window"], default="linear")
    parser.add_argument("--param", action="append", default=[], metavar="VARIANT.KEY=VALUE",
                        help="a hyperparameter, e.g. --param deltanet.chunk_size=32 (repeatable)")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"variants=[linear,{','.join(args.variants)}]", f"lengths=[{args.length}]", "device=cpu",
                 "mode=forward+backward", "causal=true", "baselines=[linear]", "crossover_baseline=linear",
                 *(f"+params.{p}" for p in args.param)]  # fmt: skip
    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        cfg = parse(compose(config_name="bench", overrides=overrides))
    setting = Setting("forward+backward", causal=True)
    with keep_freed_memory() as allocation:
        print(
            f"N={args.length} B={cfg.batch} H={cfg.heads} D={cfg.head_dim} fp32 forward+backward causal, "
            f"{torch.get_num_threads()} thread(s), {args.pairs} pairs; host memory: {allocation}"
        )
        for name in args.variants:  # the hyperparameters measured, defaults filled in
            print(f"  {name}: {cfg.params[name]}")
        against = "linear" if args.against == "linear" else "sdpa"
        print(f"{'variant':16}{against + ' ms':>11}{'variant ms':>12}{'ratio':>8}{'quartiles':>16}")
        linear = attention_workload(cfg, "linear", args.length, setting).fn
        for name in args.variants:
            variant = attention_workload(cfg, name, args.length, setting).fn
            baseline = linear if args.against == "linear" else through_sdpa(variant)
            baseline(), variant()  # warm-up
            # ratios: variant / baseline, per pair
            variant_ms, linear_ms, ratios = paired_times(variant, baseline, args.pairs)
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            print(
                f"{name:16}{linear_ms:11.1f}{variant_ms:12.1f}{statistics.median(ratios):8.2f}"
                f"{f'{q1:.2f}-{q3:.2f}':>16}",
                flush=True,
            )


if __name__ == "__main__":
    main()
