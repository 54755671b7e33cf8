"""`local`: sliding-window softmax attention (Child et al. 2019 "Sparse Transformers"; Beltagy et al.
2020 "Longformer" without the global tokens).

Each query attends, with an exact softmax, only to the keys inside a window around it:

    causal       query i sees keys i-window+1 .. i          (the `window` latest keys, itself included)
    non-causal   query i sees keys with |i - j| <= window//2

This is `full` with a band mask, but computed BLOCKED, never as a masked N x N matrix: the sequence is
cut into blocks of C positions (C = window causal, window//2 non-causal) and each block of queries
attends to the keys of its own block and of its neighbouring block(s) (the previous one; also the
next one when non-causal), a (C, 2C) or (C, 3C) score tile per block. O(N·w·d) time, O(N·w) memory.

Incremental decoding keeps a rolling window: the last `window` keys and values (fixed-size tensors)
and a count of the tokens seen, so generation memory is O(w·d) whatever the generated length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities, State, fp32_accumulation, masked_softmax
from attnlab.attention.registry import register_attention


def band_offsets(causal: bool, window: int) -> tuple[int, int]:
    """The key offsets j - i a query may see: an inclusive range (lowest, highest)."""
    if causal:
        return -(window - 1), 0
    return -(window // 2), window // 2


def blocks_with_neighbours(x: Tensor, before: int, after: int) -> Tensor:
    """x (..., nb, C, E) -> (..., nb, (before + 1 + after)·C, E): each block next to its neighbours.

    Out-of-range neighbours are zero blocks (their keys must be masked by the caller).
    """
    nb = x.shape[-3]
    padded = F.pad(x, (0, 0, 0, 0, before, after))  # (..., nb + before + after, C, E)
    return torch.cat([padded[..., i : i + nb, :, :] for i in range(before + 1 + after)], dim=-2)


def sliding_window_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool, key_padding_mask: Tensor | None
) -> Tensor:
    """Blocked sliding-window softmax attention. q, k (B, H, N, D), v (B, H, N, Dv) -> (B, H, N, Dv)."""
    B, H, N, D = q.shape
    Dv = v.shape[-1]
    lowest, highest = band_offsets(causal, window)
    # Block size C = the reach on either side (never more than N - 1), so one neighbouring block per
    # side covers the window.
    reach_before, reach_after = min(-lowest, N - 1), min(highest, N - 1)
    C = max(1, reach_before, reach_after)
    # Neighbour blocks on each side: 0 or 1.
    before, after = math.ceil(reach_before / C), math.ceil(reach_after / C)
    pad = (-N) % C
    nb = (N + pad) // C
    if key_padding_mask is None:
        real = torch.ones(B, N, dtype=torch.bool, device=q.device)  # (B, N)
    else:
        real = ~key_padding_mask  # (B, N) True = a key that may be attended to
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, nb·C, ·)
        real = F.pad(real, (0, pad), value=False)  # (B, nb·C)
    qb = q.reshape(B, H, nb, C, D)  # (B, H, nb, C, D)
    # W = (before + 1 + after)·C keys per block of queries.
    kw = blocks_with_neighbours(k.reshape(B, H, nb, C, D), before, after)  # (B, H, nb, W, D)
    vw = blocks_with_neighbours(v.reshape(B, H, nb, C, Dv), before, after)  # (B, H, nb, W, Dv)
    real_w = blocks_with_neighbours(real.reshape(B, nb, C, 1), before, after).squeeze(-1)  # (B, nb, W)
    # Query r of a block sits at b·C + r, key s of its window at (b - before)·C + s: the offset
    # j - i = s - before·C - r does not depend on the block, so the band is one (C, W) mask.
    r = torch.arange(C, device=q.device)[:, None]  # (C, 1)
    s = torch.arange(kw.shape[-2], device=q.device)[None, :]  # (1, W)
    offset = s - before * C - r  # (C, W)
    band = (offset >= lowest) & (offset <= highest)  # (C, W)
    allowed = band & real_w[:, None, :, None, :]  # (B, 1, nb, C, W)
    scores = qb @ kw.transpose(-2, -1) / math.sqrt(D)  # (B, H, nb, C, W)
    out = masked_softmax(scores, allowed) @ vw  # (B, H, nb, C, Dv)
    return out.reshape(B, H, nb * C, Dv)[:, :, :N]  # (B, H, N, Dv)


@register_attention("local")
class LocalAttention(Attention):
    """Exact softmax attention restricted to a sliding window of keys, computed block by block."""

    complexity = "O(N·w·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=False, incremental=True)
    # A different model (`full` with a band mask), checked against the dense band-masked softmax instead.
    reference_tolerance = None

    def __init__(self, *, window: int = 128):
        super().__init__()
        if window < 1:
            raise ValueError(f"attention.window must be >= 1, got {window}")
        self.window = window

    @fp32_accumulation
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        self.check_request(q, k, causal=causal, key_padding_mask=key_padding_mask)
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 accumulation for half inputs
        out = sliding_window_attention(
            q.to(acc),
            k.to(acc),
            v.to(acc),
            window=self.window,
            causal=causal,
            key_padding_mask=key_padding_mask,
        )
        return out.to(q.dtype)  # (B, H, N, Dv)

    # ---- incremental decoding: a rolling window of the last `window` keys and values ----------------
    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        empty = torch.zeros(batch, heads, self.window, head_dim, device=device, dtype=dtype)  # (B, H, w, D)
        return {
            "k": empty,
            "v": empty.clone(),
            "count": torch.zeros(batch, dtype=torch.long, device=device),  # (B,) tokens seen so far
        }

    @fp32_accumulation
    def step(self, q: Tensor, k: Tensor, v: Tensor, state: State) -> tuple[Tensor, State]:
        # Newest key in the last slot; the oldest falls out, so the state never grows.
        keys = torch.cat([state["k"][:, :, 1:], k.to(state["k"].dtype)], dim=2)  # (B, H, w, D)
        values = torch.cat([state["v"][:, :, 1:], v.to(state["v"].dtype)], dim=2)  # (B, H, w, Dv)
        count = state["count"] + 1  # (B,)
        slot = torch.arange(self.window, device=q.device)  # (w,)
        filled = slot[None, :] >= self.window - count[:, None]  # (B, w) slots holding a real token
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 accumulation for half inputs
        scores = q.to(acc) @ keys.to(acc).transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, 1, w)
        out = masked_softmax(scores, filled[:, None, None, :]) @ values.to(acc)  # (B, H, 1, Dv)
        return out.to(q.dtype), {"k": keys, "v": values, "count": count}
