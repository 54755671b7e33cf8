"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"), generated offline.

One example is a token stream of seq_len + 1 tokens (the model reads the first seq_len and predicts
the next token at each position):

    k1 v1 k2 v2 … kn vn | … q v … … q' v' …
    └ n key-value pairs ┘ └ queries: a key seen above, then its value ┘

- keys are drawn from the lower half of the vocabulary [1, vocab_size // 2), values from the upper
  half [vocab_size // 2, vocab_size), each without repetition inside an example (token 0 is never
  a key, as in zoology);
- every key is queried exactly once after the pairs, at slot 2·g of the query region, where the
  gaps g are drawn without replacement with probability ∝ g^(power_a - 1) (zoology's power law:
  with power_a = 0.01 most queries come soon after the pairs, a few far away; 1.0 is uniform);
- the token after each query is its value, and those value tokens are the only ones the loss and
  the accuracy count (`loss_mask`); every other slot is filler drawn uniformly from the vocabulary
  minus the example's keys (zoology's random_non_queries), so a key appears in a stream only as
  its pair and its query.

Rows are pre-tokenized: {"ids": list[int] (seq_len + 1), "loss_mask": list[bool] (seq_len + 1)},
loss_mask[i] True where token i is an answer. Chance accuracy is 1 / (vocab_size - vocab_size // 2).
"""

from __future__ import annotations

import numpy as np

from attnlab.errors import DataError

KV_PAIRS_PER_TOKENS = 16  # zoology's Figure 2: num_kv_pairs = seq_len / 16 when not given


def mqar(
    *,
    n_train: int = 20000,
    n_validation: int = 500,
    n_test: int = 1000,
    seq_len: int = 64,
    num_kv_pairs: int | None = None,
    vocab_size: int = 8192,
    power_a: float = 0.01,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """{"train"/"validation"/"test": [{"ids", "loss_mask"}, ...]}, deterministic in `seed`."""
    pairs = default_kv_pairs(seq_len) if num_kv_pairs is None else num_kv_pairs
    _check(seq_len, pairs, vocab_size, power_a)
    rng = np.random.default_rng([seed, 0x4D51_4152])  # "MQAR"
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    return {split: _examples(rng, n, seq_len, pairs, vocab_size, power_a) for split, n in sizes.items()}


def default_kv_pairs(seq_len: int) -> int:
    return max(1, seq_len // KV_PAIRS_PER_TOKENS)


def chance_accuracy(vocab_size: int) -> float:
    """Accuracy of a uniform guess among the values (the upper half of the vocabulary)."""
    return 1.0 / (vocab_size - vocab_size // 2)


def _examples(
    rng: np.random.Generator, n: int, seq_len: int, pairs: int, vocab_size: int, power_a: float
) -> list[dict]:
    half = vocab_size // 2
    context = 2 * pairs
    space = (seq_len - context) // 2  # (query, answer) slots after the pairs
    gap_p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    gap_p /= gap_p.sum()
    rows = []
    for _ in range(n):
        keys = rng.choice(np.arange(1, half), size=pairs, replace=False)
        values = rng.choice(np.arange(half, vocab_size), size=pairs, replace=False)
        gaps = rng.choice(space, size=pairs, replace=False, p=gap_p)
        stream = _filler(rng, seq_len + 1, vocab_size, keys)
        stream[0:context:2], stream[1:context:2] = keys, values
        stream[context + 2 * gaps], stream[context + 2 * gaps + 1] = keys, values
        loss_mask = np.zeros(seq_len + 1, dtype=bool)
        loss_mask[context + 2 * gaps + 1] = True
        rows.append({"ids": stream.tolist(), "loss_mask": loss_mask.tolist()})
    return rows


def _filler(rng: np.random.Generator, length: int, vocab_size: int, keys: np.ndarray) -> np.ndarray:
    """Uniform tokens from the vocabulary minus `keys` (so a key never appears by chance)."""
    drawn = rng.integers(0, vocab_size - len(keys), size=length)
    allowed = np.setdiff1d(np.arange(vocab_size), keys)  # sorted, vocab_size - len(keys) tokens
    return allowed[drawn]


def _check(seq_len: int, pairs: int, vocab_size: int, power_a: float) -> None:
    if pairs < 1:
        raise DataError(f"mqar num_kv_pairs={pairs} must be >= 1; set task.data.builtin.num_kv_pairs=<n>")
    if 4 * pairs > seq_len:
        raise DataError(
            f"mqar seq_len={seq_len} cannot hold num_kv_pairs={pairs} pairs and their queries (needs "
            f"seq_len >= 4 * num_kv_pairs = {4 * pairs}); raise task.data.builtin.seq_len or lower num_kv_pairs"
        )
    if vocab_size // 2 - 1 < pairs:
        raise DataError(
            f"mqar vocab_size={vocab_size} has too few keys for {pairs} pairs; set task.data.builtin.vocab_size "
            f">= {2 * pairs + 2}"
        )
    if not power_a > 0:
        raise DataError(
            f"mqar power_a={power_a} must be > 0 (1.0 = uniform query placement, 0.01 = zoology's)"
        )
