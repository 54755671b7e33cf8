"""What keeping packed documents apart costs: a CausalLM step with and without segment ids.

How to run (not part of the test suite; about a minute on a 2-core CPU):

    python benchmarks/packed_documents.py
    python benchmarks/packed_documents.py --variants multihead,gla --length 512

Setting: CausalLM, d_model 128, 4 heads, 2 layers, model.positional=rope, random weights (seed 0),
one thread; a batch of 8 rows of --length tokens, each row packing documents of 16-96 tokens
(seeded). Timed: forward + backward of a square loss on the hidden states, median of 6. `full` and
`multihead` mask across documents natively (Capabilities.segments); the other variants run through
the layer's unpacking (attnlab/nn/segments.py: one document per row, right-padded to the longest).

Printed per variant: milliseconds per step packed and leaking (no segments), with boundaries, and
their ratio, as a Markdown table row.
"""

from __future__ import annotations

import argparse
import time

import torch

from attnlab.nn import AttentionSpec, CausalLM, ModelConfig


def packed_segments(batch: int, length: int, *, seed: int = 0) -> torch.Tensor:
    """(batch, length) segment ids of rows packing documents of 16..96 tokens."""
    generator = torch.Generator().manual_seed(seed)
    segments = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        start, document = 0, 0
        while start < length:
            size = int(torch.randint(16, 97, (1,), generator=generator))
            segments[row, start : start + size] = document
            start, document = start + size, document + 1
    return segments


def step_ms(model: CausalLM, ids: torch.Tensor, segments: torch.Tensor | None, repeats: int = 6) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.hidden(ids, segments).square().mean().backward()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="multihead,gla,linear,local")
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    ids = torch.randint(3, 500, (8, args.length))  # (B, N)
    segments = packed_segments(8, args.length)  # (B, N)
    print("| variant | packed, leaking (ms) | boundaries (ms) | ratio |\n|---|---|---|---|")
    for name in args.variants.split(","):
        cfg = ModelConfig(
            d_model=128, heads=4, decoder_layers=2, max_len=args.length, dropout=0.0, positional="rope"
        )
        model = CausalLM(500, cfg, AttentionSpec.from_config(name))
        leaking, apart = step_ms(model, ids, None), step_ms(model, ids, segments)
        print(f"| {name} | {leaking:.0f} | {apart:.0f} | {apart / leaking:.2f}x |")


if __name__ == "__main__":
    main()
