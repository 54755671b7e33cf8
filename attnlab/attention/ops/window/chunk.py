"""Sliding-window softmax attention computed by blocks, never as a masked N x N matrix: the op behind
`local` (variants/local.py), also `nsa`'s sliding branch and `based`'s window.

The sequence is cut into blocks of C positions (C = window causal, window//2 non-causal, rounded up to
a multiple of 8) and each block of queries attends to the keys of its own block and of its neighbouring
block(s) (the previous one; also the next one when non-causal), a (C, 2C) or (C, 3C) tile per block: on
float32 CPU tensors in C (cpu/functions.py BlockedWindowAttention: a block's scores masked to each
query's band and normalised in cache, the backward from the saved log-sum-exp), elsewhere through PyTorch's fused
scaled_dot_product_attention with a band mask. O(N·w·d) time, O(N·w) memory. The readable reference is
`full` with a band mask (tests/attention/test_local.py `band_reference`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention.cpu.functions import BlockedWindowAttention, window_kernels_for


def band_offsets(causal: bool, window: int) -> tuple[int, int]:
    """The key offsets j - i a query may see: an inclusive range (lowest, highest)."""
    if causal:
        return -(window - 1), 0
    return -(window // 2), window // 2


def block_size(reach: int) -> int:
    """Blocks as long as the reach on either side (one neighbouring block then covers it), rounded up
    to a multiple of 8 from 8 on: 127 (a causal window of 128) -> 128, friendlier to the kernels."""
    return reach if reach < 8 else -(-reach // 8) * 8


def _window_span(slot: int, before: int, nb: int) -> tuple[int, int, int]:
    """Window slot `slot` of window b holds block b + shift; (shift, lo, hi): the windows lo..hi-1
    whose block exists."""
    shift = slot - before
    return shift, max(0, -shift), min(nb, nb - shift)


class NeighbourWindows(torch.autograd.Function):
    """x (B, H, nb·C, E) -> (B, H·nb, W, E), W = (before + 1 + after)·C: window b holds blocks
    b - before .. b + after (zeros beyond either end), written straight into the layout the fused
    kernel takes. The backward adds each slot back onto its block in place; autograd's version of
    pad + unfold + reshape re-scatters through zero-filled buffers (docs/measurements.md)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, C: int, before: int, after: int) -> Tensor:
        B, H, L, E = x.shape
        nb, slots = L // C, before + 1 + after
        blocks = x.reshape(B, H, nb, C, E)  # (B, H, nb, C, E)
        windows = x.new_empty(B, H, nb, slots, C, E)  # (B, H, nb, slots, C, E)
        for slot in range(slots):
            shift, lo, hi = _window_span(slot, before, nb)
            windows[:, :, lo:hi, slot] = blocks[:, :, lo + shift : hi + shift]
            windows[:, :, :lo, slot] = 0.0
            windows[:, :, hi:, slot] = 0.0
        ctx.sizes = (B, H, nb, C, E, before, slots)
        return windows.view(B, H * nb, slots * C, E)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        B, H, nb, C, E, before, slots = ctx.sizes
        windows = grad.reshape(B, H, nb, slots, C, E)  # (B, H, nb, slots, C, E)
        # (B, H, nb, C, E) own slot
        blocks = windows[:, :, :, before].clone(memory_format=torch.contiguous_format)
        for slot in range(slots):
            if slot != before:
                shift, lo, hi = _window_span(slot, before, nb)
                blocks[:, :, lo + shift : hi + shift] += windows[:, :, lo:hi, slot]
        return blocks.view(B, H, nb * C, E), None, None, None


def window_plan(N: int, heads: int, window: int, causal: bool) -> tuple[list[int], int]:
    """How a sequence of N positions is cut into blocks: the C kernel's geometry [C, before, after,
    lowest, highest, heads] (the block size C, the neighbour blocks on either side, the band of key
    offsets) and the padding that makes N a multiple of C."""
    lowest, highest = band_offsets(causal, window)
    reach_before, reach_after = min(-lowest, N - 1), min(highest, N - 1)
    C = max(1, block_size(max(reach_before, reach_after)))
    before, after = math.ceil(reach_before / C), math.ceil(reach_after / C)  # neighbour blocks: 0 or 1
    return [C, before, after, lowest, highest, heads], (-N) % C


def key_validity(
    key_padding_mask: Tensor | None, B: int, N: int, pad: int, dtype: torch.dtype
) -> Tensor | None:
    """(B, N + pad) 1 for a real key, 0 for a padded one or one past the end; None when every key is real."""
    if not pad and key_padding_mask is None:
        return None
    real = torch.ones(B, N, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask
    return F.pad(real, (0, pad), value=False).to(dtype)


def sliding_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    causal: bool,
    key_padding_mask: Tensor | None,
    alibi: Tensor | None = None,
) -> Tensor:
    """Blocked sliding-window softmax attention. q, k (B, H, N, D), v (B, H, N, Dv) -> (B, H, N, Dv).

    Each block of C queries attends to a window of W = (before + 1 + after)·C keys (its own block and
    its neighbours) through F.scaled_dot_product_attention with an additive (C, W) band mask (0 or
    -inf), which also masks keys beyond either end of the sequence and padded keys. The fused kernel
    never stores the (C, W) weights; rows with no allowed key come out as zeros (PyTorch >= 2.5).
    `alibi`: per-head slopes (H,) of an ALiBi bias -slope·|j - i| added to the band (PyTorch path only).
    """
    B, H, N, D = q.shape
    Dv = v.shape[-1]
    geometry, pad = window_plan(N, H, window, causal)
    C, before, after, lowest, highest = geometry[:5]
    nb = (N + pad) // C
    W = (before + 1 + after) * C
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, nb·C, ·)
    q, k, v = (t.contiguous() for t in (q, k, v))  # (both paths reshape them into blocks)
    # The fast path, decided once: float32 CPU tensors in C; an ALiBi bias only on the PyTorch path.
    kernels = None if alibi is not None else window_kernels_for(geometry, q, k, v)
    if kernels is not None:
        valid = key_validity(key_padding_mask, B, N, pad, q.dtype)  # keys past the end, and padded ones
        out = BlockedWindowAttention.apply(q, k, v, valid, geometry, D**-0.5, kernels)  # (B, H, nb·C, Dv)
        return out[:, :, :N]
    kw = NeighbourWindows.apply(k, C, before, after)  # (B, H·nb, W, D)
    vw = NeighbourWindows.apply(v, C, before, after)  # (B, H·nb, W, Dv)
    # Keys that exist and count: inside the sequence and not padded.
    real = (
        torch.ones(B, N, dtype=torch.bool, device=q.device) if key_padding_mask is None else ~key_padding_mask
    )
    real_w = F.pad(real, (before * C, pad + after * C), value=False).unfold(1, W, C)  # (B, nb, W)
    # Query r of block b sits at b·C + r, key s of its window at (b - before)·C + s: the offset
    # j - i = s - before·C - r does not depend on the block, so the band is one (C, W) mask.
    r = torch.arange(C, device=q.device)[:, None]  # (C, 1)
    s = torch.arange(W, device=q.device)[None, :]  # (1, W)
    offset = s - before * C - r  # (C, W)
    band = (offset >= lowest) & (offset <= highest)  # (C, W)
    allowed = band & real_w[:, None, :, None, :]  # (B, 1, nb, C, W)
    # Additive, in q's dtype: a boolean mask is converted by the kernel on every call, forward and backward.
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
    if alibi is not None:  # the distance |j - i| = |offset| is the same in every block
        distance = -alibi.to(q.dtype)[:, None, None] * offset.abs().to(q.dtype)  # (H, C, W)
        bias = bias + distance[None, :, None]  # (B, H, nb, C, W)
    out = F.scaled_dot_product_attention(
        q.reshape(B, H * nb, C, D),  # 4-D: 5-D inputs fall back to the unfused math kernel
        kw,
        vw,
        attn_mask=bias.expand(B, H, nb, C, W).reshape(B, H * nb, C, W),
    )  # (B, H·nb, C, Dv)
    return out.view(B, H, nb * C, Dv)[:, :, :N]  # (B, H, N, Dv)
