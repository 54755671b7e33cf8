"""The C kernels that do matrix products (attention/linear_passes.c), as PyTorch ops.

- The chunked delta rule's chunk-to-chunk loops (ops/delta_rule.py ChunkDeltaRule). Each loop runs
  the small matrix products of a chunk that read or write its carried state (D, C ~ 32-64: three per
  chunk forward, seven backward), which a library call apiece would cost more than they compute; in
  C the whole loop is one call, each state is read while it is in cache (not once per batched
  product), and the decays are applied to the chunk's rows there (not written out as decayed copies
  of q and k).
- `local`'s blocked sliding-window softmax, forward and backward (attention/local.py
  BlockedWindowAttention).
- Based's chunked Taylor linear attention, forward and backward (ops/based.py ChunkBased): each
  chunk's Taylor features are formed in cache and never written out, and the running sums stay there.

Registered as custom ops (torch.library) so that what watches the dispatcher still sees them:
attnlab/flops.py counts their products (LOOP_FLOPS; the conformance suite's flop-coverage check finds
them by the "mm" in their names) and the bench's live-tensor memory sees the tensors they write.
Called only with the plain contiguous float32 CPU tensors linear_passes._fused accepts.

(No `from __future__ import annotations` here: torch.library reads the signatures' types.)
"""

import torch
from torch import Tensor

from attnlab.attention.cpu import passes
from attnlab.attention.ops.gated_linear.chunk import FLUSH_BELOW


@torch.library.custom_op("attnlab::delta_rule_forward_loop_mm", mutates_args=("uw", "out", "states", "S"))
def delta_rule_forward_loop(
    uw: Tensor, k: Tensor, q: Tensor, b: Tensor | None, scale: float, out: Tensor, states: Tensor, S: Tensor
) -> None:
    """uw (G, nc, C, Dv + D) [u w]: u becomes new = u - w S chunk by chunk; out (G, nc, C, Dv) receives
    scale (q ⊙ e^b) S_c; states (G, nc, D, Dv) the state before each chunk; S (G, D, Dv): the initial
    state in, the final one out, S' = e^{b_last} S + (k ⊙ e^{b_last - b})ᵀ new; b (G, nc, C) the
    cumulative log decay in each chunk, None ungated."""
    G, nc, C, D = k.shape
    Dv = S.shape[-1]
    ptrs = [passes._ptr(t) for t in (uw, k, q, b)] + [scale, FLUSH_BELOW]
    scratch = _scratch(k, C, D, Dv)  # held here: the call only sees its address
    ptrs += [passes._ptr(t) for t in (out, states, S, scratch)]
    passes.library().delta_rule_forward_loop(*ptrs, G, nc, C, D, Dv)


@torch.library.custom_op(
    "attnlab::delta_rule_backward_loop_mm",
    mutates_args=("d_new", "y", "d_q", "d_kb", "dk", "db_rows", "db_last", "dS"),
)
def delta_rule_backward_loop(
    d_new: Tensor,
    k: Tensor,
    q: Tensor,
    uw: Tensor,
    T: Tensor,
    b: Tensor | None,
    beta: Tensor,
    scale: float,
    d_out: Tensor,
    states: Tensor,
    y: Tensor,
    d_q: Tensor,
    d_kb: Tensor,
    dk: Tensor,
    db_rows: Tensor | None,
    db_last: Tensor | None,
    dS: Tensor,
) -> None:
    """Its backward: d_new (G, nc, C, Dv) the in-chunk part in, the whole gradient out; y = Tᵀ d_new;
    the state's terms of the gradients, d_q = scale e^b ⊙ d_out Sᵀ, d_kb = e^b ⊙ (-y Sᵀ) (over β),
    dk = e^{b_last - b} ⊙ new dS_nextᵀ (G, nc, C, D), overwritten; gated, the terms of d loss / d b
    through the state, per position db_rows (G, nc, C) and through b_last db_last (G, nc); dS
    (G, D, Dv): d loss / d (final state) in, d / d S_0 out. T (G, nc, C, C) row- or column-major."""
    G, nc, C, D = k.shape
    Dv = dS.shape[-1]
    ptrs = [passes._ptr(t) for t in (d_new, k, q, uw, T)] + [T.stride(-2), T.stride(-1)]
    ptrs += [passes._ptr(b), passes._ptr(beta), scale, FLUSH_BELOW]
    ptrs += [passes._ptr(t) for t in (d_out, states, y, d_q, d_kb, dk, db_rows, db_last, dS)]
    scratch = _scratch(k, C, D, Dv)  # held here: the call only sees its address
    passes.library().delta_rule_backward_loop(*ptrs, passes._ptr(scratch), G, nc, C, D, Dv)


def _scratch(k: Tensor, C: int, D: int, Dv: int) -> Tensor:
    """The loops' working memory, one row per sequence (linear_passes.c DELTA_RULE_SCRATCH): two
    factors per position, a (C, max(D, Dv)) block and a (Dv, D) transposed state."""
    return k.new_empty(k.shape[0], 2 * C + C * max(D, Dv) + D * Dv)


def _forward_flops(*args, out_val=None, **kwargs) -> int:
    """Three products per chunk and sequence, (C, D) x (D, Dv) twice and (D, C) x (C, Dv)."""
    G, nc, C, D = args[1].shape  # k
    Dv = args[7].shape[-1]  # S
    return 3 * 2 * G * nc * C * D * Dv


def _backward_flops(*args, out_val=None, **kwargs) -> int:
    """Six (C, D, Dv)-sized products per chunk and sequence, and y = Tᵀ d_new, (C, C) x (C, Dv)."""
    G, nc, C, D = args[1].shape  # k
    Dv = args[0].shape[-1]  # d_new
    return 6 * 2 * G * nc * C * D * Dv + 2 * G * nc * C * C * Dv


@torch.library.custom_op("attnlab::window_attention_forward_mm", mutates_args=("out", "lse"))
def window_attention_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    valid: Tensor | None,
    out: Tensor,
    lse: Tensor,
    scale: float,
    geometry: list[int],
) -> None:
    """`local`'s blocked sliding-window softmax (attention/local.py): q, k (B, H, L, D), v (B, H, L, Dv)
    (or with B and H as one axis, (BH, L, ·)); valid (B, L) 1 for a real key or None; out (B, H, L, Dv)
    and lse (B, H, L) written. geometry = [C, before, after, lowest, highest, heads] (local.py's block
    size, neighbour blocks and band)."""
    _call_window_kernel("window_attention_forward", (q, k, v, valid, out, lse), scale, geometry)


@torch.library.custom_op("attnlab::window_attention_backward_mm", mutates_args=("dq", "dk", "dv"))
def window_attention_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    valid: Tensor | None,
    out: Tensor,
    lse: Tensor,
    d_out: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    scale: float,
    geometry: list[int],
) -> None:
    """Its backward: dq, dk and dv accumulated into (zeros, or another part's gradients)."""
    tensors = (q, k, v, valid, out, lse, d_out, dq, dk, dv)
    _call_window_kernel("window_attention_backward", tensors, scale, geometry)


def _call_window_kernel(
    name: str, tensors: tuple[Tensor | None, ...], scale: float, geometry: list[int]
) -> None:
    """The C function `name` on tensors (q, k, v first), with its working memory and the geometry."""
    q, v = tensors[0], tensors[2]
    BH, L = _sequences(q)
    _check_layout(*tensors)
    scratch = window_scratch(q, geometry, v.shape[-1])  # held here: the call sees its address
    ptrs = [passes._ptr(t) for t in tensors] + [scale, passes._ptr(scratch)]
    C, before, after, lowest, highest, heads = geometry
    getattr(passes.library(), name)(
        *ptrs, BH, L // C, C, before, after, lowest, highest, q.shape[-1], v.shape[-1], heads
    )


def window_scratch_floats(geometry: list[int], D: int, Dv: int) -> int:
    """Floats of working memory per thread (linear_passes.c window_scratch): a transposed window of
    keys or values, a block's scores and their gradient."""
    C, before, after = geometry[:3]
    W = (before + 1 + after) * C
    return max(D, Dv) * W + 2 * C * W + 2 * C


def window_scratch(q: Tensor, geometry: list[int], Dv: int) -> Tensor:
    """The window kernels' working memory, one row per thread of the C library's parallel loops."""
    return q.new_empty(passes.library().parallel_threads(), window_scratch_floats(geometry, q.shape[-1], Dv))


def window_pairs(L: int, geometry: list[int]) -> int:
    """(query, key) pairs the window kernels compute per sequence: each block's C queries times the
    window's keys that lie inside the sequence (masked ones included: the products compute them)."""
    C, before, after = geometry[:3]
    W = (before + 1 + after) * C
    return sum(C * (min(L, (b - before) * C + W) - max(0, (b - before) * C)) for b in range(L // C))


def _sequences(q: Tensor) -> tuple[int, int]:
    """(sequences, positions) of q (..., L, D): every axis before the last two is one of sequences."""
    L = q.shape[-2]
    return q.numel() // (L * q.shape[-1]), L


def _window_forward_flops(q, k, v, *args, out_val=None, **kwargs) -> int:
    """Two products over the computed pairs: scores (D) and weights times values (Dv)."""
    (BH, L), D = _sequences(q), q.shape[-1]
    geometry = args[-1] if args else kwargs["geometry"]
    return 2 * BH * window_pairs(L, geometry) * (D + v.shape[-1])


def _window_backward_flops(q, k, v, *args, out_val=None, **kwargs) -> int:
    """Five: the scores again (D), d_out Vᵀ (Dv), dS K (D), dSᵀ Q (D), Pᵀ d_out (Dv)."""
    (BH, L), D = _sequences(q), q.shape[-1]
    geometry = args[-1] if args else kwargs["geometry"]
    return 2 * BH * window_pairs(L, geometry) * (3 * D + 2 * v.shape[-1])


@torch.library.custom_op("attnlab::based_forward_loop_mm", mutates_args=("out", "den", "states"))
def based_forward_loop(
    q: Tensor, k: Tensor, v: Tensor, keep: Tensor, eps: float, out: Tensor, den: Tensor, states: Tensor
) -> None:
    """Based's chunked form (ops/based.py ChunkBased): q (pre-scaled), k (G, nc, C, d) features, v
    (G, nc, C, Dv), keep (G, nc, C) 1 for a real key; out (G, nc, C, Dv), den (G, nc, C) its denominator
    + eps, and states (G, nc, F, Dv + 1), the sums [Z z] = Σ φ(k)ᵀ [v 1] over the chunks before each,
    written."""
    G, nc, C, d = q.shape
    _check_layout(q, k, v, keep, out, den, states)
    scratch = _based_scratch(q, v.shape[-1])  # held here: the call only sees its address
    ptrs = [passes._ptr(t) for t in (q, k, v, keep)] + [eps]
    ptrs += [passes._ptr(t) for t in (out, den, states, scratch)]
    passes.library().based_forward_loop(*ptrs, G, nc, C, d, v.shape[-1])


@torch.library.custom_op("attnlab::based_backward_loop_mm", mutates_args=("dq", "dk", "dv"))
def based_backward_loop(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    keep: Tensor,
    out: Tensor,
    den: Tensor,
    states: Tensor,
    d_out: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
) -> None:
    """Its backward, from d_out (G, nc, C, Dv) and the forward's out, den and states: dq, dk, dv
    overwritten."""
    G, nc, C, d = q.shape
    _check_layout(q, k, v, keep, out, den, states, d_out, dq, dk, dv)
    scratch = _based_scratch(q, v.shape[-1])  # held here: the call only sees its address
    ptrs = [passes._ptr(t) for t in (q, k, v, keep, out, den, states, d_out, dq, dk, dv, scratch)]
    passes.library().based_backward_loop(*ptrs, G, nc, C, d, v.shape[-1])


def _check_layout(*tensors: Tensor | None) -> None:
    """The C code reads and writes these by address, row after row: a strided view (an expanded mask,
    a transposed gradient) would be read as the wrong elements."""
    for t in tensors:
        if t is not None and not t.is_contiguous():
            raise ValueError(
                f"attnlab internal: a C kernel needs contiguous tensors, got strides {t.stride()}"
            )


def _based_scratch(q: Tensor, Dv: int) -> Tensor:
    """Based's loops' working memory, one row per sequence (its size from linear_passes.c)."""
    G, nc, C, d = q.shape
    return q.new_empty(G, passes.library().based_scratch_floats(C, d, Dv))


def _based_products(q: Tensor, carried: int, in_chunk: int) -> int:
    """FLOPs of products (C, F) x (F, `carried`) for every chunk but one of each sequence (the first
    chunk has no sums before it, the last no later chunk to feed) and C x C x `in_chunk` per chunk."""
    G, nc, C, d = q.shape
    return 2 * G * ((nc - 1) * C * passes.taylor_feature_count(d) * carried + nc * C * C * in_chunk)


def _based_forward_flops(q, k, v, *args, out_val=None, **kwargs) -> int:
    """Through the sums φ(q) [Z z] and [Z z] += φ(k)ᵀ [v 1]; in the chunk q kᵀ and κ [v 1]."""
    d, Dv = q.shape[-1], v.shape[-1]
    return _based_products(q, carried=2 * (Dv + 1), in_chunk=d + Dv + 1)


def _based_backward_flops(q, k, v, *args, out_val=None, **kwargs) -> int:
    """Through the sums dφ(q) = [dn dd] [Z z]ᵀ, dφ(k) = [v 1] [dW dw]ᵀ, dv += φ(k) dW and [dW dw] +=
    φ(q)ᵀ [dn dd]; in the chunk q kᵀ again, dκ = [dn dd] [v 1]ᵀ, κᵀ dn, ds k and dsᵀ q."""
    d, Dv = q.shape[-1], v.shape[-1]
    return _based_products(q, carried=4 * (Dv + 1) - 1, in_chunk=3 * d + 2 * Dv + 1)


LOOP_FLOPS = {
    torch.ops.attnlab.delta_rule_forward_loop_mm: _forward_flops,
    torch.ops.attnlab.delta_rule_backward_loop_mm: _backward_flops,
    torch.ops.attnlab.window_attention_forward_mm: _window_forward_flops,
    torch.ops.attnlab.window_attention_backward_mm: _window_backward_flops,
    torch.ops.attnlab.based_forward_loop_mm: _based_forward_flops,
    torch.ops.attnlab.based_backward_loop_mm: _based_backward_flops,
}
