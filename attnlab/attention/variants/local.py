"""`local`: sliding-window softmax attention (Child et al. 2019 "Sparse Transformers"; Beltagy et al.
2020 "Longformer" without the global tokens).

Each query attends, with an exact softmax, only to the keys inside a window around it:

    causal       query i sees keys i-window+1 .. i          (the `window` latest keys, itself included)
    non-causal   query i sees keys with |i - j| <= window//2

This is `full` with a band mask, but computed BLOCKED, never as a masked N x N matrix: the sequence is
cut into blocks of C positions (C = window causal, window//2 non-causal, rounded up to a multiple of 8)
and each block of queries attends to the keys of its own block and of its neighbouring block(s) (the
previous one; also the next one when non-causal), a (C, 2C) or (C, 3C) tile per block: on float32 CPU
tensors in C (cpu/functions.py BlockedWindowAttention: a block's scores masked to each query's band
and normalised in cache, the backward from the saved log-sum-exp), elsewhere through PyTorch's fused
scaled_dot_product_attention with a band mask. O(N·w·d) time, O(N·w) memory.

Incremental decoding keeps a rolling window: the last `window` keys and values (fewer while fewer
tokens have been seen) and a count of the tokens seen, so generation memory is O(w·d) whatever the
generated length, and a short generation pays for its own length only.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from attnlab.attention.alibi import alibi_bias
from attnlab.attention.base import Attention, Capabilities, Range, State, fp32_accumulation
from attnlab.attention.ops.window.chunk import sliding_window_attention
from attnlab.attention.registry import register_attention


@register_attention("local")
class LocalAttention(Attention):
    """Exact softmax attention restricted to a sliding window of keys, computed block by block."""

    complexity = "O(N·w·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=False, incremental=True, alibi=True)
    # A different model (`full` with a band mask), checked against the dense band-masked softmax instead.
    reference_tolerance = None

    def __init__(self, *, window: Annotated[int, Range(ge=1)] = 128):
        super().__init__()
        self.window = window

    @fp32_accumulation
    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        alibi: Tensor | None = None,
    ) -> Tensor:
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 accumulation for half inputs
        out = sliding_window_attention(
            q.to(acc),
            k.to(acc),
            v.to(acc),
            window=self.window,
            causal=causal,
            key_padding_mask=key_padding_mask,
            alibi=alibi,
        )
        return out.to(q.dtype)  # (B, H, N, Dv)

    # ---- incremental decoding: a rolling window of the last `window` keys and values ----------------
    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        empty = torch.zeros(batch, heads, 0, head_dim, device=device, dtype=dtype)  # (B, H, 0, D)
        return {
            "k": empty,
            "v": empty.clone(),
            "count": torch.zeros(batch, dtype=torch.long, device=device),  # (B,) tokens seen so far
        }

    @fp32_accumulation
    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: State, *, alibi: Tensor | None = None
    ) -> tuple[Tensor, State]:
        # The newest key last; past `window` keys the oldest falls out, so the state never exceeds it.
        held = state["k"].shape[2]
        drop = max(0, held + 1 - self.window)
        keys = torch.cat([state["k"][:, :, drop:], k.to(state["k"].dtype)], dim=2)  # (B, H, min(t, w), D)
        values = torch.cat([state["v"][:, :, drop:], v.to(state["v"].dtype)], dim=2)  # (B, H, min(t, w), Dv)
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 accumulation for half inputs
        scores = q.to(acc) @ keys.to(acc).transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, 1, min(t, w))
        if alibi is not None:  # the query is the newest position, the keys the latest min(t, w)
            scores = scores + alibi_bias(alibi, 1, keys.shape[2], dtype=acc)  # (H, 1, min(t, w))
        out = torch.softmax(scores, dim=-1) @ values.to(acc)  # (B, H, 1, Dv)
        return out.to(q.dtype), {"k": keys, "v": values, "count": state["count"] + 1}
