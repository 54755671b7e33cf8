"""`full`: the textbook softmax attention, and the readable reference every test compares against.

One head spanning the model width (Vaswani et al. 2017 before the multi-head split), with the
N x N score matrix materialised, so its weights can be inspected. O(N²·d) time, O(N²) memory.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from attnlab.attention.alibi import alibi_bias
from attnlab.attention.base import (
    Attention,
    Capabilities,
    KVCacheDecoding,
    Range,
    allowed_keys,
    masked_softmax,
)
from attnlab.attention.registry import register_attention


@register_attention("full")
class FullAttention(KVCacheDecoding, Attention):
    """Single-head softmax attention with an explicit score matrix (the reference)."""

    complexity = "O(N²·d)"
    capabilities = Capabilities(
        causal=True, key_padding_mask=True, cross=True, incremental=True, alibi=True, segments=True
    )
    fixed_heads = 1
    exact = True
    reference_tolerance = 1e-5  # exact: differs from the reference only by fp32 round-off

    def __init__(self, *, dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0):
        super().__init__()
        self.dropout = dropout

    @classmethod
    def working_memory(cls, params, *, batch, heads, length, head_dim):
        return 2 * batch * length * length  # one head's scores and probabilities: (B, 1, N, N) each

    def attention_weights(
        self,
        q: Tensor,
        k: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        alibi: Tensor | None = None,
        segment_ids: Tensor | None = None,
    ) -> Tensor:
        """The attention probabilities (B, H, Nq, Nk); rows with no visible key are all zero.
        `alibi`: per-head slopes (H,) of an ALiBi distance bias added to the scores; `segment_ids` (B, N):
        packed documents, a query sees only keys of its own."""
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
        if alibi is not None:
            scores = scores + alibi_bias(alibi, q.shape[-2], k.shape[-2], dtype=scores.dtype)  # (H, Nq, Nk)
        allowed = allowed_keys(
            q.shape[-2],
            k.shape[-2],
            causal=causal,
            key_padding_mask=key_padding_mask,
            device=q.device,
            segment_ids=segment_ids,
        )
        return masked_softmax(scores, allowed)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        alibi: Tensor | None = None,
        segment_ids: Tensor | None = None,
    ) -> Tensor:
        weights = self.attention_weights(
            q, k, causal=causal, key_padding_mask=key_padding_mask, alibi=alibi, segment_ids=segment_ids
        )
        weights = torch.nn.functional.dropout(weights, self.dropout, self.training)
        return weights @ v  # (B, H, Nq, Dv)
