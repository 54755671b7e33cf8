"""Gated linear attention: a (D, Dv) state decayed by exp(g) and written with k vᵀ at each step.

    S_t = exp(g_t) ⊙ S_{t-1} + k_t v_tᵀ          o_t = (scale · q_t)ᵀ S_t

g is a log decay, either one per head and token ((B, H, N): retention's fixed γ, simple GLA) or one
per key dimension too ((B, H, N, D): GLA, the decay scales the state's rows). Same recurrence as
fla's `naive_recurrent_gla` / `naive_recurrent_simple_gla` (which take (B, N, H, D)).

The chunked form cuts the sequence into chunks of C positions. With b the cumulative log decay
inside a chunk (inclusive), between chunks the state is carried by one multiply-add per chunk, and
inside a chunk

    o_i = (q_i ⊙ e^{b_i}) S_chunk-start + Σ_{j<=i} (q_i ⊙ e^{b_i - b_j}) · k_j  v_j

Every exponent there is <= 0 (stable), except inside the diagonal sub-blocks of a per-dimension
gate, where the pair (i, j) is factored through the sub-block start; there the exponent is at most
sub·max|g|. The sub-block is the longest of 16, 32, ... positions (up to the chunk) that keeps
sub·max|g| <= 80, measured on the gates of the call: with gates >= -5 (the `gla` variant clamps
them) at least 16 positions, and the whole chunk for mild gates (one C x C product, as for a scalar
decay), with every factor within fp32's range either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention.ops.decay import flushed_exp, flushed_exp_
from attnlab.attention.ops.passes import inclusive_scan_

SUB_BLOCK = 16  # positions per diagonal sub-block of a per-dimension gate, at the least
MAX_EXPONENT = 80.0  # largest in-sub-block exponent sub·max|g| (e^80 ~ 5.5e34 < fp32's max 3.4e38)


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
    S0 = q.new_zeros(B, H, D, Dv) if initial_state is None else initial_state
    if per_dim:
        G = B * H
        out, S = ChunkPerDimGLA.apply(
            *(t.reshape(G, nc, C, t.shape[-1]).contiguous() for t in (q, k, v, g)),
            S0.reshape(G, D, Dv),
            scale,
            _sub_block(g, C),
        )  # (G, nc, C, Dv), (G, D, Dv)
        return out.reshape(B, H, nc * C, Dv)[:, :, :N], S.reshape(B, H, D, Dv)
    qc = q.reshape(B, H, nc, C, D) * scale  # (B, H, nc, C, D)
    kc = k.reshape(B, H, nc, C, D)
    vc = v.reshape(B, H, nc, C, Dv)
    b = g.reshape(B, H, nc, C, 1).cumsum(3)  # (B, H, nc, C, 1) inclusive
    b_last = b[:, :, :, -1:]  # (B, H, nc, 1, 1)
    q_decayed = qc * b.exp()  # decay from the chunk start to i
    k_decayed = kc * (b_last - b).exp()  # decay from j (exclusive) to the chunk end
    writes = k_decayed.transpose(-2, -1) @ vc  # (B, H, nc, D, Dv)
    carries = b_last.exp()  # (B, H, nc, 1, 1)
    states = ChunkStateScan.apply(writes, carries.contiguous(), S0)
    S = states[:, :, -1]  # (B, H, D, Dv) final
    out = q_decayed @ states[:, :, :-1]  # (B, H, nc, C, Dv) from earlier chunks
    out = out + _intra_scalar(qc, kc, vc, b)
    return out.reshape(B, H, nc * C, Dv)[:, :, :N], S


def _intra_scalar(qc: Tensor, kc: Tensor, vc: Tensor, b: Tensor) -> Tensor:
    """In-chunk part with one decay per token: (q kᵀ ⊙ e^{b_i - b_j} [j <= i]) v."""
    C = qc.shape[-2]
    future = torch.ones(C, C, dtype=torch.bool, device=qc.device).triu(1)  # (C, C) j > i
    decay = (b - b.transpose(-2, -1)).masked_fill(future, float("-inf")).exp()  # (B, H, nc, C, C)
    return ((qc @ kc.transpose(-2, -1)) * decay) @ vc  # (B, H, nc, C, Dv)


class ChunkPerDimGLA(torch.autograd.Function):
    """The chunked form with a per-dimension decay and a hand-written backward: q, k, g (G, nc, C, D),
    v (G, nc, C, Dv), S_0 (G, D, Dv) -> out (G, nc, C, Dv), final state (G, D, Dv).

    Between chunks: one fused multiply-add per chunk (the only loop over chunks). Inside a chunk, by
    query sub-blocks of `sub` positions, each batched over every chunk: the pair (i, j) is factored
    through r, the position just before i's sub-block, e^{b_i - b_j} = e^{b_i - b_r} e^{b_r - b_j}.
    Sub-block I sees keys 0 .. its own end only: both factors <= 1 for keys before it, the second
    <= e^{sub·|g|} inside it, so nothing overflows (see the module docstring). The backward recomputes
    the exponentials from b and reuses the forward's in-chunk scores and states; autograd through
    the same code records ~60 ops and sums each input's gradient contributions in fresh tensors."""

    @staticmethod
    def forward(ctx: FunctionCtx, q, k, v, g, S0, scale: float, sub: int):
        G, nc, C, D = q.shape
        b = _chunk_cumsum(g)  # (G, nc, C, D) inclusive cumulative log decay
        qs = q * scale
        b_last = b[:, :, -1:]  # (G, nc, 1, D)
        to_end = flushed_exp_(b_last - b)  # decay from j (exclusive) to the chunk end
        kd = k * to_end
        writes = torch.matmul(kd.transpose(-2, -1), v)  # (G, nc, D, Dv)
        carry = flushed_exp(b_last.transpose(-2, -1))  # (G, nc, D, 1)
        states, final = _carried_states(writes, carry, S0)  # (G, nc, D, Dv): slot c the state before chunk c
        # e^{b_i - b_r} >= e^-80, not flushed: it multiplies key factors up to e^80 in the sub-block
        q_factor = _from_sub_block_start(b, sub).exp_()  # (G, nc, C, D), <= 1
        q_hat = qs * q_factor
        if sub >= C:  # one sub-block: its reference is the chunk start, q_hat is the decayed query
            from_start, qd = q_factor, q_hat
        else:
            from_start = flushed_exp(b)  # decay from the chunk start to i
            qd = qs * from_start
        out = torch.matmul(qd, states)  # (G, nc, C, Dv) from the earlier chunks
        scores, factors = [], []
        for r0 in range(0, C, sub):
            r1 = min(r0 + sub, C)
            exponent = -b[:, :, :r1] if r0 == 0 else b[:, :, r0 - 1 : r0] - b[:, :, :r1]  # (G, nc, r1, D)
            factor = flushed_exp_(exponent)
            k_hat = k[:, :, :r1] * factor
            A = torch.matmul(q_hat[:, :, r0:r1], k_hat.transpose(-2, -1))  # (G, nc, r1-r0, r1)
            A.masked_fill_(_future(r0, r1, q.device), 0.0)
            out[:, :, r0:r1] += torch.matmul(A, v[:, :, :r1])
            scores.append(A)
            factors.append(factor)
        # Saved rather than recomputed: the decayed copies the backward reads (k_hat: recomputed).
        ctx.save_for_backward(k, v, carry, to_end, from_start, q_factor, kd, qd, q_hat, states)
        ctx.blocks = (scores, factors)  # lists of fresh tensors no one else holds
        ctx.scale, ctx.sub = scale, sub
        return out, final

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor, d_final: Tensor | None):
        k, v, carry, to_end, from_start, q_factor, kd, qd, q_hat, states = ctx.saved_tensors
        scores, factors = ctx.blocks
        scale, sub = ctx.scale, ctx.sub
        G, nc, C, D = kd.shape
        d_out = d_out.contiguous()
        # out = qd S_c: into qd and the state before each chunk
        d_qd = torch.matmul(d_out, states.transpose(-2, -1))  # (G, nc, C, D)
        dS_out = torch.matmul(qd.transpose(-2, -1), d_out)  # (G, nc, D, Dv) into S_c from chunk c's output
        # d loss / d S_{c+1} = d loss / d writes_c, from the end: S_{c+1} = carry_c ⊙ S_c + writes_c
        d_writes, dS0 = _carried_grads(dS_out, carry, d_final)
        d_carry = (states * d_writes).sum(-1)  # (G, nc, D)
        d_kd = torch.matmul(v, d_writes.transpose(-2, -1))  # (G, nc, C, D)
        dv = torch.matmul(kd, d_writes)  # (G, nc, C, Dv)
        d_qs = d_qd * from_start
        db = d_qd.mul_(qd)  # d loss / d b, through every e^{±b}
        dk = d_kd * to_end
        e_kd = d_kd.mul_(kd)
        db -= e_kd
        d_b_last = e_kd.sum(2) + d_carry * carry[..., 0]  # (G, nc, D)
        # in-chunk sub-blocks
        d_q_hat = torch.empty_like(q_hat)
        for block, r0 in enumerate(range(0, C, sub)):
            r1 = min(r0 + sub, C)
            A, factor = scores[block], factors[block]  # (G, nc, r1-r0, r1), (G, nc, r1, D)
            k_hat = k[:, :, :r1] * factor
            dA = torch.matmul(d_out[:, :, r0:r1], v[:, :, :r1].transpose(-2, -1))
            dA.masked_fill_(_future(r0, r1, kd.device), 0.0)
            dv[:, :, :r1] += torch.matmul(A.transpose(-2, -1), d_out[:, :, r0:r1])
            d_q_hat[:, :, r0:r1] = torch.matmul(dA, k_hat)
            d_k_hat = torch.matmul(dA.transpose(-2, -1), q_hat[:, :, r0:r1])  # (G, nc, r1, D)
            dk[:, :, :r1].addcmul_(d_k_hat, factor)
            e_k = d_k_hat.mul_(k_hat)  # k_hat = k e^{b_r - b_j}
            db[:, :, :r1] -= e_k
            if r0:
                db[:, :, r0 - 1] += e_k.sum(2)
        d_qs.addcmul_(d_q_hat, q_factor)
        e_q = d_q_hat.mul_(q_hat)  # q_hat = qs e^{b_i - b_r}
        db += e_q
        for r0 in range(sub, C, sub):
            db[:, :, r0 - 1] -= e_q[:, :, r0 : r0 + sub].sum(2)
        db[:, :, -1] += d_b_last
        dg = _chunk_cumsum(db, reverse=True)  # b = cumsum(g) within the chunk
        return d_qs.mul_(scale), dk, dv, dg, dS0, None, None


def _carried_states(writes: Tensor, carry: Tensor, S0: Tensor) -> tuple[Tensor, Tensor]:
    """Slot c: the state before chunk c, S_c = carry_{c-1} ⊙ S_{c-1} + writes_{c-1}; and the final state.
    writes (G, nc, D, Dv), carry (G, nc, D, 1), S0 (G, D, Dv). (No slot for the final state: products
    with the states then read them in place, no batch copies.)"""
    states = torch.cat([S0[:, None], writes[:, :-1]], dim=1)  # (G, nc, D, Dv)
    for c in range(1, states.shape[1]):
        states[:, c].addcmul_(states[:, c - 1], carry[:, c - 1])
    return states, torch.addcmul(writes[:, -1], states[:, -1], carry[:, -1])


def _carried_grads(dS_out: Tensor, carry: Tensor, d_final: Tensor | None) -> tuple[Tensor, Tensor]:
    """Backward of _carried_states: -> d loss / d writes (G, nc, D, Dv), d loss / d S0."""
    nc = dS_out.shape[1]
    d_writes = torch.empty_like(dS_out)
    d_writes[:, -1] = 0.0 if d_final is None else d_final
    for c in range(nc - 1, 0, -1):
        torch.addcmul(dS_out[:, c], d_writes[:, c], carry[:, c], out=d_writes[:, c - 1])
    return d_writes, torch.addcmul(dS_out[:, 0], d_writes[:, 0], carry[:, 0])  # (G, D, Dv)


def _chunk_cumsum(x: Tensor, *, reverse: bool = False) -> Tensor:
    """x (G, nc, C, D) -> its sums along each chunk, inclusive (reverse: from the chunk end), as a new
    tensor: ops/passes.py's in-place scan (torch.cumsum along a middle dim strides across memory and
    allocates its result)."""
    G, nc, C, D = x.shape
    return inclusive_scan_(x.reshape(G * nc, C, D).clone(), reverse=reverse).view(G, nc, C, D)


def _sub_block(g: Tensor, C: int) -> int:
    """The sub-block for gates g: the whole chunk when C·max|g| <= MAX_EXPONENT, else the longest of
    16, 32, ... positions (below C) within it, and 16 at the least."""
    steepest = max(-float(g.detach().min()), 0.0)
    if C * steepest <= MAX_EXPONENT:
        return C
    sub = min(SUB_BLOCK, C)
    while 2 * sub < C and 2 * sub * steepest <= MAX_EXPONENT:
        sub *= 2
    return sub


def _from_sub_block_start(b: Tensor, sub: int) -> Tensor:
    """b (G, nc, C, D) -> b minus b just before each position's sub-block (b itself in the first)."""
    out = b.clone()
    for r0 in range(sub, b.shape[2], sub):
        out[:, :, r0 : r0 + sub] -= b[:, :, r0 - 1 : r0]
    return out


def _future(r0: int, r1: int, device: torch.device) -> Tensor:
    """(r1 - r0, r1) True where key j comes after query r0 + i."""
    return torch.arange(r1, device=device)[None, :] > torch.arange(r0, r1, device=device)[:, None]
