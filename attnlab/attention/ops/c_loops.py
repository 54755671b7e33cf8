"""The chunked delta rule's chunk-to-chunk loops in C (attention/linear_passes.c), as PyTorch ops.

Each loop runs two small matrix products per chunk (D, C ~ 32-64), which a library call apiece would
cost more than they compute; in C the whole loop is one call. Registered as custom ops
(torch.library) so that what watches the dispatcher still sees them: attnlab/flops.py counts their
products (LOOP_FLOPS; the conformance suite's flop-coverage check finds them by the "mm" in their
names) and the bench's live-tensor memory sees the tensors they write. Called only with the plain
contiguous float32 CPU tensors linear_passes._fused accepts; their arguments are ChunkDeltaRule's.

(No `from __future__ import annotations` here: torch.library reads the signatures' types.)
"""

import torch
from torch import Tensor

from attnlab.attention import linear_passes as passes


@torch.library.custom_op("attnlab::delta_rule_forward_loop_mm", mutates_args=("uw", "states", "S"))
def delta_rule_forward_loop(uw: Tensor, kd: Tensor, states: Tensor, S: Tensor, carry: Tensor | None) -> None:
    """uw (G, nc, C, Dv + D) [u w]: u becomes new = u - w S chunk by chunk; states (G, nc, D, Dv) receives
    the state before each chunk; S (G, D, Dv): the initial state in, the final one out;
    S' = carry S + kdᵀ new, carry (G, nc) or None."""
    G, nc, C, D = kd.shape
    tensors = (uw, kd, states, S, carry)
    passes.library().delta_rule_forward_loop(*(passes._ptr(t) for t in tensors), G, nc, C, D, S.shape[-1])


@torch.library.custom_op(
    "attnlab::delta_rule_backward_loop_mm", mutates_args=("d_new", "dS_out", "dS_next", "dS")
)
def delta_rule_backward_loop(
    d_new: Tensor,
    kd: Tensor,
    uw: Tensor,
    dS_out: Tensor,
    dS_next: Tensor,
    dS: Tensor,
    carry: Tensor | None,
) -> None:
    """Its backward: d_new (G, nc, C, Dv) the direct part in, the whole gradient out; dS_out overwritten;
    dS_next (G, nc, D, Dv) receives d loss / d S_{c+1}; dS: d loss / d (final state) in, d / d S_0 out."""
    G, nc, C, D = kd.shape
    tensors = (d_new, kd, uw, dS_out, dS_next, dS, carry)
    passes.library().delta_rule_backward_loop(*(passes._ptr(t) for t in tensors), G, nc, C, D, dS.shape[-1])


def _loop_flops(*args, out_val=None, **kwargs) -> int:
    """Two products per chunk and sequence, (C, D) x (D, Dv) and (D, C) x (C, Dv): 2·2·C·D·Dv FLOPs."""
    kd = args[1]
    Dv = args[3].shape[-1]  # states (forward) or dS_out (backward)
    G, nc, C, D = kd.shape
    return 4 * G * nc * C * D * Dv


LOOP_FLOPS = {
    torch.ops.attnlab.delta_rule_forward_loop_mm: _loop_flops,
    torch.ops.attnlab.delta_rule_backward_loop_mm: _loop_flops,
}
