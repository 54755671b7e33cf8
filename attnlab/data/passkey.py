"""Passkey retrieval (a needle in a haystack; Mohtashami & Jaggi 2023), generated offline.

One example is a token stream of seq_len + 1 tokens (the model reads the first seq_len and predicts
the next token at each position):

    f f f … f  K v1 … vm  f f … f  K v1 … vm
               └ the fact, at `depth` ┘      └ the query: the key again, then its value (answered)

- the vocabulary is cut in three: keys [1, vocab_size // 4), filler [vocab_size // 4, vocab_size // 2),
  values [vocab_size // 2, vocab_size); the key K is one key, the value's `answer_tokens` tokens
  v1 … vm are drawn from the values;
- the filler f is uniform over its own range, so the key and the value appear only in the fact and
  at the end: the needle is the one thing in the haystack that is not hay, as in the passkey test of
  language models (a pass key among repeated sentences). A filler drawn from the whole vocabulary
  (zoology-style noise) was measured not to be learnt by multihead in 400 steps (docs/long-context.md);
- the fact starts at position round(depth · (seq_len − 2m − 1)): depth 0 is the first token, depth 1
  puts it right before the query; depth null draws a position uniformly per example;
- the value tokens after the query are the only ones the loss and the accuracy count (`loss_mask`).

`test_depth` sets the depth of the test split alone (null: `depth`), so a length × depth heat map
evaluates weights trained on one distribution. Each split draws from its own stream of the seed, so
the test rows do not depend on the training split's size or depth.

Rows are pre-tokenized: {"ids": list[int] (seq_len + 1), "loss_mask": list[bool] (seq_len + 1)}.
Chance accuracy is 1 / (vocab_size - vocab_size // 2).
"""

from __future__ import annotations

import numpy as np

from attnlab.errors import DataError

SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}


def passkey(
    *,
    n_train: int = 20000,
    n_validation: int = 250,
    n_test: int = 500,
    seq_len: int = 256,
    depth: float | None = None,
    test_depth: float | None = None,
    answer_tokens: int = 1,
    vocab_size: int = 128,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """{"train"/"validation"/"test": [{"ids", "loss_mask"}, ...]}, deterministic in `seed`."""
    _check(seq_len, depth, test_depth, answer_tokens, vocab_size)
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    depths = {"train": depth, "validation": depth, "test": depth if test_depth is None else test_depth}
    out = {}
    for split, n in sizes.items():
        rng = np.random.default_rng([seed, 0x5041_5353, SPLIT_STREAMS[split]])  # "PASS"
        out[split] = [_example(rng, seq_len, depths[split], answer_tokens, vocab_size) for _ in range(n)]
    return out


def fact_position(seq_len: int, depth: float, answer_tokens: int) -> int:
    """Where the fact's key sits: depth 0 -> 0, depth 1 -> right before the query."""
    return round(depth * last_fact_position(seq_len, answer_tokens))


def last_fact_position(seq_len: int, answer_tokens: int) -> int:
    """The last start of a fact (key + m values) that ends before the query (key at seq_len - m)."""
    return seq_len - 2 * answer_tokens - 1


def chance_accuracy(vocab_size: int) -> float:
    """Accuracy of a uniform guess among the values (the upper half of the vocabulary)."""
    return 1.0 / (vocab_size - vocab_size // 2)


def _example(rng: np.random.Generator, seq_len: int, depth: float | None, m: int, vocab_size: int) -> dict:
    quarter, half = vocab_size // 4, vocab_size // 2
    key = int(rng.integers(1, quarter))
    value = rng.integers(half, vocab_size, size=m)  # (m,)
    stream = rng.integers(quarter, half, size=seq_len + 1)  # (seq_len + 1,): the filler
    last = last_fact_position(seq_len, m)
    start = int(rng.integers(0, last + 1)) if depth is None else fact_position(seq_len, depth, m)
    query = seq_len - m
    stream[start], stream[start + 1 : start + 1 + m] = key, value
    stream[query], stream[query + 1 :] = key, value
    loss_mask = np.zeros(seq_len + 1, dtype=bool)
    loss_mask[query + 1 :] = True
    return {"ids": stream.tolist(), "loss_mask": loss_mask.tolist()}


def _check(
    seq_len: int, depth: float | None, test_depth: float | None, answer_tokens: int, vocab_size: int
) -> None:
    if answer_tokens < 1:
        raise DataError(
            f"passkey answer_tokens={answer_tokens} must be >= 1; set task.data.builtin.answer_tokens=1"
        )
    if last_fact_position(seq_len, answer_tokens) < 0:
        raise DataError(
            f"passkey seq_len={seq_len} cannot hold the fact and the query of {answer_tokens} answer token(s) "
            f"(needs seq_len >= {2 * answer_tokens + 1}); raise task.data.builtin.seq_len"
        )
    for name, value in (("depth", depth), ("test_depth", test_depth)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise DataError(
                f"passkey {name}={value} must be in [0, 1] (a fraction of the sequence) or null (uniform); "
                f"e.g. task.data.builtin.{name}=0.5"
            )
    if vocab_size < 8:
        raise DataError(
            f"passkey vocab_size={vocab_size} leaves no keys, filler or values (a quarter, a quarter, a half); "
            f"set task.data.builtin.vocab_size >= 8"
        )
