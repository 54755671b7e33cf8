"""Texts -> truncated id lists -> padded batches with padding masks."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from attnlab.errors import DataError

log = logging.getLogger(__name__)


def encode_texts(
    texts: Sequence[str],
    tokenizer,
    max_len: int,
    *,
    add_bos: bool = False,
    add_eos: bool = False,
    add_cls: bool = False,
    what: str = "text",
) -> tuple[list[list[int]], int]:
    """Encode and truncate to `max_len` ids, special tokens included: [cls] [bos] text… [eos].

    Returns (ids, n_truncated); logs a warning naming the count and the longest length when any
    sequence was cut. The end of a text is cut, never its special tokens.
    """
    prefix = ([tokenizer.cls_id] if add_cls else []) + ([tokenizer.bos_id] if add_bos else [])
    suffix = [tokenizer.eos_id] if add_eos else []
    budget = max_len - len(prefix) - len(suffix)
    if budget < 1:
        raise DataError(
            f"max_len={max_len} leaves no room for {what} tokens after {len(prefix) + len(suffix)} special token(s); raise model.max_len"
        )
    bodies = (
        tokenizer.encode_batch(texts)
        if hasattr(tokenizer, "encode_batch")
        else [tokenizer.encode(t) for t in texts]
    )
    ids, n_truncated, longest = [], 0, 0
    for body in bodies:
        longest = max(longest, len(body) + len(prefix) + len(suffix))
        if len(body) > budget:
            n_truncated += 1
            body = body[:budget]
        ids.append(prefix + list(body) + suffix)
    if n_truncated:
        log.warning(
            "truncated %d of %d %s sequences to max_len=%d tokens (longest was %d); raise model.max_len to keep them",
            n_truncated, len(ids), what, max_len, longest,
        )  # fmt: skip
    return ids, n_truncated


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, N) long and padding_mask (B, N) bool, True where padded; N = longest (at least 1)."""
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    n = max(1, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), n), pad_id, dtype=torch.long)  # (B, N)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences])  # (B,)
    padding_mask = torch.arange(n)[None, :] >= lengths[:, None]  # (B, N)
    return ids, padding_mask
