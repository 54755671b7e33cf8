"""The chunked delta rule's chunk-to-chunk loops in C (attention/linear_passes.c), as PyTorch ops.

Each loop runs the small matrix products of a chunk that read or write its carried state (D, C ~
32-64: three per chunk forward, seven backward), which a library call apiece would cost more than
they compute; in C the whole loop is one call, each state is read while it is in cache (not once per
batched product), and the decays are applied to the chunk's rows there (not written out as decayed
copies of q and k). Registered as custom ops (torch.library) so that what watches the dispatcher
still sees them: attnlab/flops.py counts their
products (LOOP_FLOPS; the conformance suite's flop-coverage check finds them by the "mm" in their
names) and the bench's live-tensor memory sees the tensors they write. Called only with the plain
contiguous float32 CPU tensors linear_passes._fused accepts; their arguments are ChunkDeltaRule's.

(No `from __future__ import annotations` here: torch.library reads the signatures' types.)
"""

import torch
from torch import Tensor

from attnlab.attention import linear_passes as passes
from attnlab.attention.ops.gated_linear import FLUSH_BELOW


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


LOOP_FLOPS = {
    torch.ops.attnlab.delta_rule_forward_loop_mm: _forward_flops,
    torch.ops.attnlab.delta_rule_backward_loop_mm: _backward_flops,
}
