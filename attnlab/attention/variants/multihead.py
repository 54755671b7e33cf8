"""`multihead`: exact softmax attention over H heads through `F.scaled_dot_product_attention`.

The fused path (flash / memory-efficient kernels where the device has them). Same result as `full`
per head; O(N²·d) time, and O(N) extra memory when a fused kernel is used.
"""

from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.alibi import alibi_bias
from attnlab.attention.base import Attention, Capabilities, KVCacheDecoding, Range, allowed_keys
from attnlab.attention.registry import register_attention


@register_attention("multihead")
class MultiheadAttention(KVCacheDecoding, Attention):
    """Exact multi-head softmax attention via PyTorch's fused SDPA kernels."""

    complexity = "O(N²·d)"
    capabilities = Capabilities(
        causal=True, key_padding_mask=True, cross=True, incremental=True, alibi=True, segments=True
    )
    exact = True
    reference_tolerance = 1e-5  # exact: differs from the reference only by fp32 round-off

    def __init__(self, *, dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0):
        super().__init__()
        self.dropout = dropout

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
        dropout = self.dropout if self.training else 0.0
        if (
            key_padding_mask is None and alibi is None and segment_ids is None
        ):  # the fast path: flash eligible
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
        allowed = allowed_keys(
            q.shape[-2],
            k.shape[-2],
            causal=causal,
            key_padding_mask=key_padding_mask,
            device=q.device,
            segment_ids=segment_ids,
        )
        if allowed is None:  # ALiBi alone: every key visible
            bias = alibi_bias(alibi, q.shape[-2], k.shape[-2], dtype=q.dtype)  # (H, Nq, Nk)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        empty_rows = ~allowed.any(dim=-1, keepdim=True)  # (B, 1, Nq, 1) queries that see no key
        # SDPA returns NaN for rows with no allowed key: let them see everything, then zero them.
        mask = allowed | empty_rows
        if alibi is not None:  # additive: the distance bias where allowed, -inf elsewhere
            bias = alibi_bias(alibi, q.shape[-2], k.shape[-2], dtype=q.dtype)  # (H, Nq, Nk)
            mask = bias.masked_fill(~mask, float("-inf"))  # (B|1, H, Nq, Nk)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return out.masked_fill(empty_rows, 0.0)  # (B, H, Nq, Dv)
