"""The C functions as PyTorch-facing calls: their ctypes signatures, one Python function per C function
(pointers and sizes from the tensors), and the loops that do matrix products registered as custom ops.

Everything here takes plain contiguous float32 CPU tensors only: callers reach these functions through
`attnlab.attention.cpu.kernels_for(*tensors)`, which returns this module only when every tensor passed
qualifies and the library is built (otherwise the caller's PyTorch form runs). Scratch sizes come from
the C (`*_scratch_floats`), never written twice.

The loops are custom ops (torch.library) so that what watches the dispatcher still sees them:
attnlab/flops.py counts their products (LOOP_FLOPS; the conformance suite's flop-coverage check finds
them by the "mm" in their names) and the bench's live-tensor memory sees the tensors they write.

(No `from __future__ import annotations` here: torch.library reads the signatures' types.)
"""

import ctypes

import torch
from torch import Tensor

from attnlab.attention.cpu.build import library

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
SIGNATURES = {
    # elementwise.c
    "log_decay_gate": [_P, _P, _F, _F, _I],
    "log_decay_gate_backward": [_P, _P, _P, _F, _F, _I],
    # delta_rule.c
    "decay_matrix": [_P, _P, _F, _I, _I],
    "flush_small": [_P, _F, _I],
    "delta_scores_backward": [_P] * 8 + [_I, _I],
    "delta_rule_scratch_floats": [_I] * 3,
    "delta_rule_forward_loop": [_P, _P, _P, _P, _F, _F, _P, _P, _P, _P] + [_I] * 5,
    "delta_rule_backward_loop": [_P] * 5 + [_I, _I, _P, _P, _F, _F] + [_P] * 10 + [_I] * 5,
    "delta_rule_rhs": [_P] * 5 + [_F, _I, _I, _I, _I],
    "delta_rule_grad_epilogue": [_P] * 8 + [_I, _I, _I],
    # window_softmax.c
    "parallel_threads": [],
    "window_scratch_floats": [_I] * 5,
    "window_attention_forward": [_P] * 6 + [_F, _P] + [_I] * 10,
    "window_attention_backward": [_P] * 10 + [_F, _P] + [_I] * 10,
    # based.c
    "taylor_feature_count": [_I],
    "based_scratch_floats": [_I] * 3,
    "based_forward_loop": [_P] * 4 + [_F] + [_P] * 4 + [_I] * 5,
    "based_backward_loop": [_P] * 12 + [_I] * 5,
}
RESULTS = {  # the rest return nothing
    "taylor_feature_count": _I,
    "parallel_threads": ctypes.c_int,
    "delta_rule_scratch_floats": _I,
    "window_scratch_floats": _I,
    "based_scratch_floats": _I,
}


def plain(*tensors: Tensor | None) -> bool:
    """Whether the C functions may take these: plain contiguous float32 CPU tensors that autograd is not
    recording (a C call is invisible to it). None entries are optional arguments left out."""
    recording = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if type(t) is not torch.Tensor or t.device.type != "cpu" or t.dtype != torch.float32:
            return False
        if not t.is_contiguous() or (recording and t.requires_grad):
            return False
    return True


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _lib() -> ctypes.CDLL:
    """The compiled library with its signatures set (on its first use here)."""
    lib = library()
    if lib is None:  # kernels_for never hands this module out then
        raise RuntimeError("attnlab internal: a C kernel was called without the compiled library")
    if "_attnlab_signed" not in vars(lib):
        for name, argtypes in SIGNATURES.items():
            getattr(lib, name).argtypes = argtypes
            getattr(lib, name).restype = RESULTS.get(name)
        lib._attnlab_signed = True
    return lib


# ---- elementwise.c: gla's log decay gate -----------------------------------------------------------------
def log_decay_gate(x: Tensor, temperature: float, floor: float) -> Tensor:
    y = torch.empty_like(x)
    _lib().log_decay_gate(_ptr(x), _ptr(y), temperature, floor, x.numel())
    return y


def log_decay_gate_backward(grad: Tensor, x: Tensor, temperature: float, floor: float) -> Tensor:
    dx = torch.empty_like(x)
    _lib().log_decay_gate_backward(_ptr(grad), _ptr(x), _ptr(dx), temperature, floor, x.numel())
    return dx


# ---- delta_rule.c: the chunked delta rule's elementwise steps -----------------------------------------
def decay_matrix(b: Tensor, flush: float) -> Tensor:
    C = b.shape[-1]
    gamma = b.new_empty(*b.shape, C)
    _lib().decay_matrix(_ptr(b), _ptr(gamma), flush, b.numel() // C, C)
    return gamma


def flush_small_(dense: Tensor, flush: float) -> Tensor:
    _lib().flush_small(_ptr(dense), flush, dense.numel())
    return dense


def delta_rule_rhs(k: Tensor, v: Tensor, beta: Tensor, b: Tensor | None, rhs: Tensor, flush: float) -> Tensor:
    G, nc, C, D = k.shape
    _lib().delta_rule_rhs(*(_ptr(t) for t in (k, v, beta, b, rhs)), flush, G * nc, C, D, v.shape[-1])
    return rhs


def delta_rule_grad_epilogue_(dk, d_kb, dv, d_beta, y, v, k, beta) -> Tensor:
    tensors = (dk, d_kb, dv, d_beta, y, v, k, beta)
    _lib().delta_rule_grad_epilogue(*(_ptr(t) for t in tensors), beta.numel(), k.shape[-1], v.shape[-1])
    return dv


def delta_scores_backward_(dM, dP, M, P_raw, gamma, beta, db, d_beta) -> None:
    G, nc, C = M.shape[:3]
    _lib().delta_scores_backward(*(_ptr(t) for t in (dM, dP, M, P_raw, gamma, beta, db, d_beta)), G * nc, C)


# ---- delta_rule.c: the chunk loops (custom ops) -------------------------------------------------------
@torch.library.custom_op("attnlab::delta_rule_forward_loop_mm", mutates_args=("uw", "out", "states", "S"))
def delta_rule_forward_loop(
    uw: Tensor,
    k: Tensor,
    q: Tensor,
    b: Tensor | None,
    scale: float,
    flush: float,
    out: Tensor,
    states: Tensor,
    S: Tensor,
) -> None:
    """uw (G, nc, C, Dv + D) [u w]: u becomes new = u - w S chunk by chunk; out (G, nc, C, Dv) receives
    scale (q ⊙ e^b) S_c; states (G, nc, D, Dv) the state before each chunk; S (G, D, Dv): the initial
    state in, the final one out, S' = e^{b_last} S + (k ⊙ e^{b_last - b})ᵀ new; b (G, nc, C) the
    cumulative log decay in each chunk, None ungated; decays below `flush` count as 0 (ops/decay.py)."""
    G, nc, C, D = k.shape
    Dv = S.shape[-1]
    ptrs = [_ptr(t) for t in (uw, k, q, b)] + [scale, flush]
    scratch = _delta_rule_scratch(k, C, D, Dv)  # held here: the call only sees its address
    ptrs += [_ptr(t) for t in (out, states, S, scratch)]
    _lib().delta_rule_forward_loop(*ptrs, G, nc, C, D, Dv)


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
    flush: float,
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
    ptrs = [_ptr(t) for t in (d_new, k, q, uw, T)] + [T.stride(-2), T.stride(-1)]
    ptrs += [_ptr(b), _ptr(beta), scale, flush]
    ptrs += [_ptr(t) for t in (d_out, states, y, d_q, d_kb, dk, db_rows, db_last, dS)]
    scratch = _delta_rule_scratch(k, C, D, Dv)  # held here: the call only sees its address
    _lib().delta_rule_backward_loop(*ptrs, _ptr(scratch), G, nc, C, D, Dv)


def _delta_rule_scratch(k: Tensor, C: int, D: int, Dv: int) -> Tensor:
    """The loops' working memory, one row per sequence, of the size delta_rule.c asks for."""
    return k.new_empty(k.shape[0], _lib().delta_rule_scratch_floats(C, D, Dv))


def _forward_flops(*args, out_val=None, **kwargs) -> int:
    """Three products per chunk and sequence, (C, D) x (D, Dv) twice and (D, C) x (C, Dv)."""
    G, nc, C, D = args[1].shape  # k
    Dv = args[8].shape[-1]  # S
    return 3 * 2 * G * nc * C * D * Dv


def _backward_flops(*args, out_val=None, **kwargs) -> int:
    """Six (C, D, Dv)-sized products per chunk and sequence, and y = Tᵀ d_new, (C, C) x (C, Dv)."""
    G, nc, C, D = args[1].shape  # k
    Dv = args[0].shape[-1]  # d_new
    return 6 * 2 * G * nc * C * D * Dv + 2 * G * nc * C * C * Dv


# ---- window_softmax.c (custom ops) ---------------------------------------------------------------------
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
    """`local`'s blocked sliding-window softmax (ops/window/chunk.py): q, k (B, H, L, D), v (B, H, L, Dv)
    (or with B and H as one axis, (BH, L, ·)); valid (B, L) 1 for a real key or None; out (B, H, L, Dv)
    and lse (B, H, L) written. geometry = [C, before, after, lowest, highest, heads] (ops/window/chunk.py's block
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
    ptrs = [_ptr(t) for t in tensors] + [scale, _ptr(scratch)]
    C, before, after, lowest, highest, heads = geometry
    getattr(_lib(), name)(
        *ptrs, BH, L // C, C, before, after, lowest, highest, q.shape[-1], v.shape[-1], heads
    )


def window_scratch_floats(geometry: list[int], D: int, Dv: int) -> int:
    """Floats of working memory per thread the window kernels take (window_softmax.c says how many)."""
    C, before, after = geometry[:3]
    return _lib().window_scratch_floats(C, before, after, D, Dv)


def window_scratch(q: Tensor, geometry: list[int], Dv: int) -> Tensor:
    """The window kernels' working memory, one row per thread of the C library's parallel loops."""
    return q.new_empty(_lib().parallel_threads(), window_scratch_floats(geometry, q.shape[-1], Dv))


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


# ---- based.c (custom ops) ------------------------------------------------------------------------------
def taylor_feature_count(d: int) -> int:
    """F = 1 + d + d(d+1)/2, the Taylor features of d dimensions, as the C counts them."""
    return _lib().taylor_feature_count(d)


def based_chunks_forward(
    q: Tensor, k: Tensor, v: Tensor, keep: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Based's chunked form in C: q (pre-scaled), k (G, nc, C, d), v (G, nc, C, Dv), keep (G, nc, C) -> the
    output (G, nc, C, Dv), its denominator (G, nc, C) and the sums [Z z] before each chunk
    (G, nc, F, Dv + 1), which based_backward_loop takes."""
    G, nc, C, d = q.shape
    Dv = v.shape[-1]
    out, den = q.new_empty(G, nc, C, Dv), q.new_empty(G, nc, C)
    states = q.new_empty(G, nc, taylor_feature_count(d), Dv + 1)
    based_forward_loop(q, k, v, keep, eps, out, den, states)
    return out, den, states


@torch.library.custom_op("attnlab::based_forward_loop_mm", mutates_args=("out", "den", "states"))
def based_forward_loop(
    q: Tensor, k: Tensor, v: Tensor, keep: Tensor, eps: float, out: Tensor, den: Tensor, states: Tensor
) -> None:
    """Based's chunked form (ops/based/chunk.py ChunkBased): q (pre-scaled), k (G, nc, C, d) features, v
    (G, nc, C, Dv), keep (G, nc, C) 1 for a real key; out (G, nc, C, Dv), den (G, nc, C) its denominator
    + eps, and states (G, nc, F, Dv + 1), the sums [Z z] = Σ φ(k)ᵀ [v 1] over the chunks before each,
    written."""
    G, nc, C, d = q.shape
    _check_layout(q, k, v, keep, out, den, states)
    scratch = _based_scratch(q, v.shape[-1])  # held here: the call only sees its address
    ptrs = [_ptr(t) for t in (q, k, v, keep)] + [eps]
    ptrs += [_ptr(t) for t in (out, den, states, scratch)]
    _lib().based_forward_loop(*ptrs, G, nc, C, d, v.shape[-1])


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
    ptrs = [_ptr(t) for t in (q, k, v, keep, out, den, states, d_out, dq, dk, dv, scratch)]
    _lib().based_backward_loop(*ptrs, G, nc, C, d, v.shape[-1])


def _check_layout(*tensors: Tensor | None) -> None:
    """The C code reads and writes these by address, row after row: a strided view (an expanded mask,
    a transposed gradient) would be read as the wrong elements."""
    for t in tensors:
        if t is not None and not t.is_contiguous():
            raise ValueError(
                f"attnlab internal: a C kernel needs contiguous tensors, got strides {t.stride()}"
            )


def _based_scratch(q: Tensor, Dv: int) -> Tensor:
    """Based's loops' working memory, one row per sequence (its size from based.c)."""
    G, nc, C, d = q.shape
    return q.new_empty(G, _lib().based_scratch_floats(C, d, Dv))


def _based_products(q: Tensor, carried: int, in_chunk: int) -> int:
    """FLOPs of products (C, F) x (F, `carried`) for every chunk but one of each sequence (the first
    chunk has no sums before it, the last no later chunk to feed) and C x C x `in_chunk` per chunk."""
    G, nc, C, d = q.shape
    return 2 * G * ((nc - 1) * C * taylor_feature_count(d) * carried + nc * C * C * in_chunk)


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
