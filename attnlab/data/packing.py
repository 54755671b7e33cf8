"""Language-modelling windows: documents packed into one token stream, then cut into windows.

    pack([[5, 6, 7], [8, 9]], eos_id=2)        -> ids [5, 6, 7, 2, 8, 9, 2], loss mask all True
    windows(ids, mask, size=4)                 -> [5, 6, 7, 2], [2, 8, 9, 2]

Why packing (rather than one chunk per document): documents are of every length, from a line to
tens of thousands of tokens. Chunking each document alone leaves its last chunk, and every short
document, mostly padding: compute spent on nothing and batches whose real length varies. Packing
(GPT-2/nanoGPT style) fills every window with real tokens, so every position is a training target
and tokens/s means the same for every variant. The price is that a window may span a document
boundary: the EOS token between documents marks it, and the model learns that what follows is
unrelated.

A window holds `size` = model.max_len + 1 tokens: the model reads the first max_len and predicts the
last max_len. Consecutive windows overlap by one token, so every token of the stream except the
first is predicted exactly once. A per-token loss mask travels with the ids: mask[i] True when token
i counts as a target (a data source such as MQAR counts only its answers).
"""

from __future__ import annotations

from collections.abc import Sequence

from attnlab.errors import DataError

Window = tuple[list[int], list[bool]]  # (ids, loss mask), both of length <= size


def pack(documents: Sequence[Sequence[int]], *, eos_id: int) -> tuple[list[int], list[bool]]:
    """Documents' ids joined into one stream, each followed by `eos_id`; every token counts."""
    ids: list[int] = []
    for document in documents:
        ids.extend(document)
        ids.append(eos_id)
    return ids, [True] * len(ids)


def windows(ids: Sequence[int], loss_mask: Sequence[bool], *, size: int) -> list[Window]:
    """Cut a stream into windows of `size` tokens overlapping by one; a last, shorter window is kept
    when it holds at least one target. Token 0 of the stream is never a target (nothing precedes it)."""
    if size < 2:
        raise DataError(f"a language-model window needs at least 2 tokens (model.max_len >= 1), got {size}")
    if len(ids) != len(loss_mask):
        raise DataError(f"ids ({len(ids)}) and loss_mask ({len(loss_mask)}) differ in length")
    out = []
    for start in range(0, max(1, len(ids) - 1), size - 1):
        window_ids = list(ids[start : start + size])
        window_mask = [False, *loss_mask[start + 1 : start + size]]  # the first token is context only
        if len(window_ids) >= 2 and any(window_mask):
            out.append((window_ids, window_mask))
    return out
