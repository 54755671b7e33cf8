"""Test-time decoding speed: beam search over a recipe-sized encoder-decoder, per attention variant.

How to run (not part of the test suite; about a minute per variant on a 2-core CPU):

    python benchmarks/decode_speed.py                                  # 3,000 sentences, beam 4
    python benchmarks/decode_speed.py --variants multihead,linear,local,gla --sentences 500
    python benchmarks/decode_speed.py --threads 1 --beam 1
    python benchmarks/decode_speed.py --system-allocator             # glibc's defaults (freed memory re-faulted)

Setting: an EncoderDecoder with random weights (seed 0, dropout off) sized like a real-data recipe:
d_model 256, 4 heads, 3 encoder + 3 decoder layers, vocabulary 8,000, tied embeddings. Sources are
random token ids, 10-30 tokens each (seeded), decoded in batches of --batch sentences in dataset
order, as the seq2seq task's test stage does (attnlab.tasks.seq2seq: the encoder, then
attnlab.tasks.generation.generate). An untrained model almost never picks EOS, so every
hypothesis runs to --max-new-tokens (25): the worst case, where no beam ends early. Freed memory
is kept for reuse, as a training run's test stage does (attnlab/host/allocator.py).

Printed per variant: wall time, the process's CPU time (steadier than wall time when others share the
machine), sentences/s, output tokens/s (tokens of the returned hypotheses, EOS
excluded: what the task records as cost.decode_tokens_per_s), and the time 3,000 sentences take at
that rate against the target (<= 180 s: issue 17). The load average is printed before and after:
timings on a shared machine move with it; the variants' ratios, measured side by side, move less.
"""

from __future__ import annotations

import argparse
import os
import time

# isort: off
import attnlab  # noqa: F401  before torch: OpenMP's threads then wait passively (docs/runs.md)
import torch
# isort: on

from attnlab.attention import get_attention_class
from attnlab.host.allocator import keep_freed_memory
from attnlab.nn import AttentionSpec, DecoderRoles, EncoderDecoder, ModelConfig
from attnlab.tasks.generation import generate

PAD, BOS, EOS = 0, 1, 2
TARGET_SENTENCES, TARGET_SECONDS = 3000, 180.0  # issue 17: beam-4 decoding of 3,000 sentences in <= 3 min


def build(name: str, vocab: int) -> EncoderDecoder:
    """The recipe-sized model with random weights; variants without cross attention use multihead there."""
    torch.manual_seed(0)
    cross = None if get_attention_class(name).capabilities.cross else "multihead"
    cfg = ModelConfig(
        d_model=256, heads=4, encoder_layers=3, decoder_layers=3, dropout=0.0, max_len=128,
        decoder=DecoderRoles(cross_attention=cross),
    )  # fmt: skip
    return EncoderDecoder(vocab, cfg, AttentionSpec.from_config(name)).eval()


def sources(count: int, vocab: int, lengths: tuple[int, int]) -> list[torch.Tensor]:
    """`count` random sentences of token ids (no special tokens), seeded."""
    gen = torch.Generator().manual_seed(1)
    sizes = torch.randint(lengths[0], lengths[1] + 1, (count,), generator=gen)
    return [torch.randint(3, vocab, (int(n),), generator=gen) for n in sizes]


def batches(sentences: list[torch.Tensor], size: int):
    """(src (B, N), padding mask (B, N)) per batch of `size` sentences, padded to the batch's longest."""
    for start in range(0, len(sentences), size):
        chunk = sentences[start : start + size]
        longest = max(len(s) for s in chunk)
        src = torch.full((len(chunk), longest), PAD)  # (B, N)
        for row, sentence in enumerate(chunk):
            src[row, : len(sentence)] = sentence
        yield src, src == PAD


@torch.no_grad()
def decode_all(
    model: EncoderDecoder, data: list[tuple[torch.Tensor, torch.Tensor]], args
) -> tuple[float, float, int]:
    """Wall seconds, process CPU seconds and output tokens to decode every batch (encoder included)."""
    tokens = 0
    start, cpu = time.perf_counter(), time.process_time()
    for src, mask in data:
        memory = model.encoder(src, mask)  # (B, N, C)
        out = generate(
            model.decoder, memory, mask, bos_id=BOS, eos_id=EOS, pad_id=PAD,
            max_new_tokens=args.max_new_tokens, beam=args.beam, length_penalty=1.0,
        )  # fmt: skip
        tokens += sum(len(row) for row in out)
    return time.perf_counter() - start, time.process_time() - cpu, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="multihead,linear,local", help="comma-separated variant names")
    parser.add_argument("--sentences", type=int, default=TARGET_SENTENCES)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="sentences per batch (the task's batch_size)")
    parser.add_argument("--max-new-tokens", type=int, default=25)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--system-allocator", action="store_true", help="glibc's defaults (a run keeps freed memory: runs.md)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = list(batches(sources(args.sentences, args.vocab, (10, 30)), args.batch))
    with keep_freed_memory(not args.system_allocator) as allocation:
        print(
            f"{args.sentences} sentences of 10-30 tokens, batches of {args.batch}, beam {args.beam}, "
            f"{args.max_new_tokens} new tokens at most, vocabulary {args.vocab}, {torch.get_num_threads()} "
            f"thread(s), memory: {allocation}; load average before: {load()}"
        )
        print(
            f"{'variant':<16}{'seconds':>9}{'CPU s':>8}{'sentences/s':>13}{'tokens/s':>10}"
            f"{'3,000 sentences':>17}  target"
        )
        for name in args.variants.split(","):
            model = build(name, args.vocab)
            decode_all(model, data[:1], args)  # warm-up: first-call allocations, kernel selection
            seconds, cpu, tokens = decode_all(model, data, args)
            projected = seconds * TARGET_SENTENCES / args.sentences
            verdict = "PASS" if projected <= TARGET_SECONDS else "FAIL"
            print(
                f"{name:<16}{seconds:>9.1f}{cpu:>8.1f}{args.sentences / seconds:>13.1f}{tokens / seconds:>10.0f}"
                f"{projected:>15.0f} s  {verdict} (<= {TARGET_SECONDS:.0f} s)"
            )
    print(f"load average after: {load()}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
