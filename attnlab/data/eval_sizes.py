"""Sizes of a test set regenerated at another length (task.eval_lengths; the data module's
test_dataloader_at): bounded in tokens, so memory and time grow linearly with the length for a
linear-time variant. A length-L test set has at most EVAL_TEST_TOKENS / L rows (never fewer than
EVAL_MIN_ROWS, never more than the generator's n_test or task.data.limit.test), in batches of at
most EVAL_BATCH_TOKENS / L rows (never more than task.data.batch_size, never fewer than one).
"""

from __future__ import annotations

import math

EVAL_TEST_TOKENS = 2**18  # tokens in one length's test set: MQAR's 1,000 test rows at N = 256
EVAL_MIN_ROWS = 64  # a floor that keeps an accuracy's resolution at 1/64 however long the rows
EVAL_BATCH_TOKENS = 2**14  # tokens per evaluation batch: MQAR's training batch (64 x 256)


def eval_rows(n_test: int | None, length: int, limit: int | None = None) -> int | None:
    """Rows of a length-`length` test set: None keeps a generator's own count (one without n_test)."""
    if n_test is None:
        return None
    rows = max(EVAL_MIN_ROWS, math.ceil(EVAL_TEST_TOKENS / length))
    return min(n_test, rows, limit or n_test)


def eval_batch_size(batch_size: int, length: int) -> int:
    """Rows per evaluation batch at `length` tokens: tokens per batch stay <= EVAL_BATCH_TOKENS."""
    return max(1, min(batch_size, EVAL_BATCH_TOKENS // length))
