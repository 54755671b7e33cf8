"""Gated linear attention: a (D, Dv) state decayed by exp(g) and written with k vᵀ at each step.

    S_t = exp(g_t) ⊙ S_{t-1} + k_t v_tᵀ          o_t = (scale · q_t)ᵀ S_t

g is a log decay, either one per head and token ((B, H, N): retention's fixed γ, simple GLA) or one
per key dimension too ((B, H, N, D): GLA, the decay scales the state's rows). Same recurrence as
fla's `naive_recurrent_gla` / `naive_recurrent_simple_gla` (which take (B, N, H, D)).

The chunked form cuts the sequence into chunks of C positions. With b the cumulative log decay
inside a chunk (inclusive), between chunks the state is carried by one multiply-add per chunk, and
inside a chunk

    o_i = (q_i ⊙ e^{b_i}) S_chunk-start + Σ_{j<=i} (q_i ⊙ e^{b_i - b_j}) · k_j  v_j

Every exponent there is <= 0 (stable), except inside the diagonal sub-blocks of 16 positions of a
per-dimension gate, where the pair (i, j) is factored through the sub-block start; there the
exponent is at most 16·|g|, so per-dimension log decays must be >= -5 (the `gla` variant clamps
them) to stay within fp32's range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

SUB_BLOCK = 16  # positions per diagonal sub-block of a per-dimension gate


class ChunkStateScan(torch.autograd.Function):
    """The states between chunks, S_{c+1} = a_c ⊙ S_c + U_c from S_0: U (B, H, nc, D, Dv), a
    (B, H, nc, D|1, 1), S_0 (B, H, D, Dv) -> (B, H, nc + 1, D, Dv), slot c the state before chunk c
    (slot nc the final one). One fused multiply-add per chunk each way, written in place: autograd's
    version records ~4 ops per chunk and sums gradient copies."""

    @staticmethod
    def forward(ctx: FunctionCtx, U: Tensor, a: Tensor, S0: Tensor) -> Tensor:
        B, H, nc, D, Dv = U.shape
        states = U.new_empty(B, H, nc + 1, D, Dv)
        states[:, :, 0] = S0
        for c in range(nc):
            torch.addcmul(U[:, :, c], states[:, :, c], a[:, :, c], out=states[:, :, c + 1])
        ctx.save_for_backward(a, states)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, states = ctx.saved_tensors
        nc = a.shape[2]
        d_states = grad.clone(memory_format=torch.contiguous_format)  # becomes d loss / d S_c, in place
        for c in range(nc - 1, -1, -1):  # S_c reaches S_{c+1} through a_c
            d_states[:, :, c].addcmul_(d_states[:, :, c + 1], a[:, :, c])
        d_next = d_states[:, :, 1:]  # (B, H, nc, D, Dv) = d loss / d U_c
        d_a = (states[:, :, :-1] * d_next).sum(-1, keepdim=True)  # (B, H, nc, D, 1)
        if a.shape[-2] == 1:
            d_a = d_a.sum(-2, keepdim=True)
        return d_next, d_a, d_states[:, :, 0]


def _decay_rows(g: Tensor) -> Tensor:
    """(B, H, ·) or (B, H, ·, D) log decays -> (B, H, ·, D|1, 1) multipliers of the state's rows."""
    return (g if g.dim() == 4 else g[..., None]).exp()[..., None]


def naive_recurrent_gla(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, *, scale: float, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The recurrence, one position at a time: -> output (B, H, N, Dv), final state (B, H, D, Dv)."""
    B, H, N, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1]) if initial_state is None else initial_state
    decay = _decay_rows(g)  # (B, H, N, D|1, 1)
    outs = []
    for t in range(N):
        S = S * decay[:, :, t] + k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, D, Dv)
        outs.append((q[:, :, t, None, :] * scale) @ S)  # (B, H, 1, Dv)
    return torch.cat(outs, dim=2), S


def recurrent_step_gla(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, state: Tensor, *, scale: float
) -> tuple[Tensor, Tensor]:
    """One decoding step: q, k (B, H, 1, D), v (B, H, 1, Dv), g (B, H, 1[, D]), state (B, H, D, Dv)."""
    S = state * _decay_rows(g)[:, :, 0] + k.transpose(-2, -1) @ v  # (B, H, D, Dv)
    return (q * scale) @ S, S  # (B, H, 1, Dv)


def chunk_gla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    *,
    scale: float,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The chunked parallel form: -> output (B, H, N, Dv), final state (B, H, D, Dv)."""
    B, H, N, D = q.shape
    Dv = v.shape[-1]
    per_dim = g.dim() == 4
    C = min(chunk_size, N)
    pad = (-N) % C
    if pad:  # padded steps come last and are identities (no decay, nothing written)
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        g = F.pad(g, (0, 0, 0, pad) if per_dim else (0, pad))
    nc = (N + pad) // C
    qc = q.reshape(B, H, nc, C, D) * scale  # (B, H, nc, C, D)
    kc = k.reshape(B, H, nc, C, D)
    vc = v.reshape(B, H, nc, C, Dv)
    b = g.reshape(B, H, nc, C, D if per_dim else 1).cumsum(3)  # (B, H, nc, C, D|1) inclusive
    b_last = b[:, :, :, -1:]  # (B, H, nc, 1, D|1)
    q_decayed = qc * b.exp()  # decay from the chunk start to i
    k_decayed = kc * (b_last - b).exp()  # decay from j (exclusive) to the chunk end
    writes = k_decayed.transpose(-2, -1) @ vc  # (B, H, nc, D, Dv)
    carries = b_last.transpose(-2, -1).exp()  # (B, H, nc, D|1, 1)
    S0 = q.new_zeros(B, H, D, Dv) if initial_state is None else initial_state
    states = ChunkStateScan.apply(writes, carries.expand(B, H, nc, carries.shape[-2], 1).contiguous(), S0)
    S = states[:, :, -1]  # (B, H, D, Dv) final
    out = q_decayed @ states[:, :, :-1]  # (B, H, nc, C, Dv) from earlier chunks
    out = out + (_intra_per_dim(qc, kc, vc, b) if per_dim else _intra_scalar(qc, kc, vc, b))
    return out.reshape(B, H, nc * C, Dv)[:, :, :N], S


def _intra_scalar(qc: Tensor, kc: Tensor, vc: Tensor, b: Tensor) -> Tensor:
    """In-chunk part with one decay per token: (q kᵀ ⊙ e^{b_i - b_j} [j <= i]) v."""
    C = qc.shape[-2]
    future = torch.ones(C, C, dtype=torch.bool, device=qc.device).triu(1)  # (C, C) j > i
    decay = (b - b.transpose(-2, -1)).masked_fill(future, float("-inf")).exp()  # (B, H, nc, C, C)
    return ((qc @ kc.transpose(-2, -1)) * decay) @ vc  # (B, H, nc, C, Dv)


def _intra_per_dim(qc: Tensor, kc: Tensor, vc: Tensor, b: Tensor) -> Tensor:
    """In-chunk part with one decay per key dimension, by query sub-blocks of SUB_BLOCK positions:
    the pair (i, j) is factored through r, the position just before i's sub-block,
    e^{b_i - b_j} = e^{b_i - b_r} e^{b_r - b_j}: both factors <= 1 for keys before the sub-block, the
    second <= e^{16·|g|} inside it, and keys after it are zeroed in the exponent (-inf), so nothing
    overflows forward or backward. All sub-blocks at once (no slices: their backward fills zeros)."""
    B, H, nc, C, D = qc.shape
    c = min(SUB_BLOCK, C)
    pad = (-C) % c
    if pad:  # a ragged chunk: pad the positions (zero keys and decays add nothing)
        qc, kc, vc, b = (F.pad(t, (0, 0, 0, pad)) for t in (qc, kc, vc, b))
    ns, L = (C + pad) // c, C + pad
    b_sub = b.view(B, H, nc, ns, c, D)  # (B, H, nc, ns, c, D)
    ref = F.pad(b_sub[:, :, :, :-1, -1:], (0, 0, 0, 0, 1, 0))  # (B, H, nc, ns, 1, D) b_r, 0 for the first
    q_hat = qc.view(B, H, nc, ns, c, D) * (b_sub - ref).exp()  # <= 1
    later = torch.arange(L, device=qc.device)[None, :] // c > torch.arange(ns, device=qc.device)[:, None]
    exponent = (ref - b[:, :, :, None]).masked_fill(later[:, :, None], float("-inf"))  # (B, H, nc, ns, L, D)
    k_hat = kc[:, :, :, None] * exponent.exp()  # (B, H, nc, ns, L, D)
    scores = q_hat @ k_hat.transpose(-2, -1)  # (B, H, nc, ns, c, L)
    rows = torch.arange(L, device=qc.device).view(ns, c, 1)
    future = torch.arange(L, device=qc.device).view(1, 1, L) > rows  # (ns, c, L)
    out = scores.masked_fill(future, 0.0) @ vc[:, :, :, None]  # (B, H, nc, ns, c, Dv)
    return out.reshape(B, H, nc, L, -1)[:, :, :, :C]
