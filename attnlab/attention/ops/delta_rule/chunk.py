"""The (gated) delta rule: the state is corrected towards v_t along k_t, instead of only added to.

    S_t = e^{g_t} S_{t-1}                     (gated DeltaNet; DeltaNet: g = 0)
    S_t = S_t + β_t k_t (v_t - S_tᵀ k_t)ᵀ      o_t = (scale · q_t)ᵀ S_t

β (B, H, N) is the writing strength, g (B, H, N) a log decay. Same recurrence as fla's
`delta_rule_recurrence` and `naive_recurrent_gated_delta_rule`.

The chunked form (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length"): inside a chunk of C positions the C corrections compose into one WY/UT form,
T = (I + strict_lower(diag(β) K Kᵀ ⊙ Γ))⁻¹ with Γ_ij = e^{b_i - b_j} (b the cumulative log decay in
the chunk), one batched unit-triangular solve, then u = T diag(β) V and w = T diag(β) (K ⊙ e^b) in
one batched product. Chunk by chunk, the new values are u - w S = T (diag(β) V - diag(β) (K ⊙ e^b) S),
written into the state with one product, and the output's part from earlier chunks, scale (Q ⊙ e^b) S,
is read off the state there too; its in-chunk part is one batched product afterwards. The backward
differentiates through r = diag(β) V - diag(β) (K ⊙ e^b) S rather than u and w (ChunkDeltaRule).
Exponents are all <= 0 (stable for any g).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention import cpu
from attnlab.attention.ops.decay import FLUSH_BELOW, flushed_exp


def scaled_bmm(a: Tensor, b: Tensor, alpha: float = 1.0) -> Tensor:
    """alpha · a @ b for (..., m, k) @ (..., k, n) batches of the same leading shape, the scale
    folded into the product (baddbmm with beta=0 reads no input): no extra pass over the result."""
    lead = a.shape[:-2]
    a3, b3 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    out = torch.baddbmm(a.new_zeros(()), a3, b3, beta=0.0, alpha=alpha)
    return out.view(*lead, a.shape[-2], b.shape[-1])


def add_bmm_(out: Tensor, a: Tensor, b: Tensor, alpha: float = 1.0) -> Tensor:
    """out += alpha · a @ b in place, for batches of the same leading shape (out's batch dims foldable)."""
    out.view(-1, *out.shape[-2:]).baddbmm_(
        a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), alpha=alpha
    )
    return out


# The elementwise steps below take `kernels`, ChunkDeltaRule's one decision for the C path (the C kernels
# or None); called on their own (tests, other ops) they ask the C door themselves (cpu.ASK).
def decay_matrix(b: Tensor, kernels=cpu.ASK) -> Tensor:
    """b (G, nc, C) cumulative log decays -> Γ (G, nc, C, C), Γ_ij = e^{b_i - b_j} for j <= i, else 0,
    flushed below FLUSH_BELOW (one pass in C for float32 on CPU; PyTorch: four)."""
    c = cpu.decided(kernels, b)
    if c is not None:
        return c.decay_matrix(b, FLUSH_BELOW)
    C = b.shape[-1]
    past = torch.ones(C, C, dtype=torch.bool, device=b.device).tril_()
    return flushed_exp((b[..., :, None] - b[..., None, :]).masked_fill_(~past, float("-inf")))


def flush_small_(x: Tensor, kernels=cpu.ASK) -> Tensor:
    """x with entries of magnitude below FLUSH_BELOW set to 0, in place (elementwise: a batch of
    column-major matrices, as torch.linalg.solve_triangular returns, is as good as a contiguous one)."""
    dense = x.mT if not x.is_contiguous() and x.mT.is_contiguous() else x
    c = cpu.decided(kernels, dense)
    if c is not None and dense.is_contiguous():  # (the C pass walks memory in order)
        c.flush_small_(dense, FLUSH_BELOW)
        return x
    return x.masked_fill_(x.abs() < FLUSH_BELOW, 0.0)


def delta_rule_rhs(k: Tensor, v: Tensor, beta: Tensor, b: Tensor | None, kernels=cpu.ASK) -> Tensor:
    """ChunkDeltaRule's right-hand sides [βV, Kw] (G, nc, C, Dv + D), Kw = β K ⊙ e^b (b (G, nc, C) the
    cumulative log decay, flushed as flushed_exp; None: ungated, Kw = β K). One pass in C for float32
    on CPU (PyTorch: two or three)."""
    G, nc, C, D = k.shape
    Dv = v.shape[-1]
    rhs = k.new_empty(G, nc, C, Dv + D)
    c = cpu.decided(kernels, k, v, beta, b)
    if c is not None:
        return c.delta_rule_rhs(k, v, beta, b, rhs, FLUSH_BELOW)
    torch.mul(v, beta[..., None], out=rhs[..., :Dv])
    torch.mul(
        k, beta[..., None] if b is None else beta[..., None] * flushed_exp(b)[..., None], out=rhs[..., Dv:]
    )
    return rhs


def _decayed_qk(k: Tensor, q: Tensor, b: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """The PyTorch loops' kd = K ⊙ e^{b_last - b} and qd = scale Q ⊙ e^b (the C loops apply the decays
    in place of writing these)."""
    return k * flushed_exp(b[..., -1:] - b)[..., None], q * (flushed_exp(b)[..., None] * scale)


def delta_rule_grad_epilogue_(
    dk: Tensor, d_kb: Tensor, d_beta: Tensor, y: Tensor, v: Tensor, k: Tensor, beta: Tensor, kernels=cpu.ASK
) -> Tensor:
    """ChunkDeltaRule's last elementwise step, through r = diag(β) V - diag(β) (K ⊙ e^b) S and the
    in-chunk βK: dk += β d_kb, d_beta += Σ y ⊙ v + Σ d_kb ⊙ k (in place); -> dv = β y. One pass in C
    for float32 on CPU (PyTorch: about five)."""
    dv = torch.empty_like(y)
    c = cpu.decided(kernels, dk, d_kb, d_beta, y, v, k, beta)
    if c is not None:
        return c.delta_rule_grad_epilogue_(dk, d_kb, dv, d_beta, y, v, k, beta)
    dk.addcmul_(d_kb, beta[..., None])
    torch.mul(y, beta[..., None], out=dv)
    d_beta += torch.linalg.vecdot(y, v) + torch.linalg.vecdot(d_kb, k)
    return dv


def delta_scores_backward_(
    dM: Tensor, dP: Tensor, M: Tensor, P_raw: Tensor, gamma: Tensor | None, beta: Tensor, kernels=cpu.ASK
) -> tuple[Tensor, Tensor | None]:
    """Through the in-chunk scores (G, nc, C, C) M = M_raw ⊙ Γ (causal) and P = diag(β) K Kᵀ ⊙ Γ
    (strictly lower), P_raw = K Kᵀ ⊙ Γ as saved; gamma None: Γ is the causal mask. In place, dM
    becomes the gradient of M_raw and dP (strictly lower on entry) that of K Kᵀ, G + Gᵀ with
    G = diag(β) dP ⊙ Γ (so dK gains one product, dP K, for both of Kᵀ's factors). Returns d_beta
    (G, nc, C) = the rows of dP ⊙ P_raw, and, gated, d loss / d b through Γ_ij = e^{b_i - b_j}: the row
    sums minus the column sums of E = dM ⊙ M + dP ⊙ P (one pass in C; PyTorch: about eight)."""
    G, nc, C = M.shape[:3]
    d_beta = beta.new_empty(beta.shape)
    db = None if gamma is None else beta.new_empty(beta.shape)
    c = cpu.decided(kernels, dM, dP, M, P_raw, gamma, beta)
    if c is not None:
        c.delta_scores_backward_(dM, dP, M, P_raw, gamma, beta, db, d_beta)
        return d_beta, db
    torch.linalg.vecdot(dP, P_raw, out=d_beta)
    dP.mul_(beta[..., None])  # G (before Γ)
    if gamma is None:
        dM.tril_()
    else:
        E = (dM * M).addcmul_(dP, P_raw)
        torch.sub(E.sum(-1), E.sum(-2), out=db)
        dM.mul_(gamma)
        dP.mul_(gamma)
    dP.add_(dP.mT.clone())  # G + Gᵀ: G is strictly lower
    return d_beta, db


class ChunkDeltaRule(torch.autograd.Function):
    """The chunked delta rule with a hand-written backward: q, k (G, nc, C, D), v (G, nc, C, Dv),
    beta (G, nc, C), g (G, nc, C) or None, S_0 (G, D, Dv) -> out (G, nc, C, Dv), final state (G, D, Dv).

    Per chunk, with Kw = diag(β) (K ⊙ e^b) and A = T⁻¹ = I + strict_lower(diag(β) K Kᵀ ⊙ Γ):

        r = diag(β) V - Kw S        what the state gets wrong, β-weighted      (C, Dv)
        new = T r                   the corrections the chunk writes           (C, Dv)
        S' = e^{b_C} S + (K ⊙ e^{b_C - b})ᵀ new
        out = scale (Q ⊙ e^b) S + M new,   M = scale (Q Kᵀ) ⊙ Γ (causal)

    computed as u - w S with [u w] = T [diag(β) V, Kw] batched over all chunks. Backward, with
    y = Tᵀ d new = d r: d(Kw) = -y Sᵀ and dA = -y newᵀ (dA = -A⁻ᵀ d new newᵀ), three C x C x Dv-sized
    products where differentiating u and w separately takes five; and the gradient of K Kᵀ taken
    symmetric, so both of its factors come from one product. Every product that needs no recurrence
    is one batched product over all chunks (G·nc matrices); the chunk-to-chunk recurrence is a loop
    that also does every product reading a state (three per chunk forward, seven backward), with the
    decays applied there (in C on CPU: cpu/delta_rule.c). T = A⁻¹ is one batched triangular solve.
    Exponents are all <= 0."""

    @staticmethod
    def forward(ctx: FunctionCtx, q, k, v, beta, g, S0, scale: float):
        G, nc, C, D = q.shape
        Dv = v.shape[-1]
        # The fast path, decided once for every step below: in C when the inputs are plain contiguous
        # float32 CPU tensors (then so is every intermediate: fresh, contiguous, of their dtype).
        c = cpu.kernels_for(q, k, v, beta, g, S0)
        b = None if g is None else g.cumsum(-1)  # (G, nc, C) inclusive cumulative log decay
        gamma = None if b is None else decay_matrix(b, c)  # (G, nc, C, C); ungated: the causal mask, by tril_
        rhs = delta_rule_rhs(k, v, beta, b, c)  # (G, nc, C, Dv + D) [βV, Kw]
        # Unit lower-triangular A = I + strict_lower(P), P = diag(β) P_raw, P_raw = K Kᵀ ⊙ Γ (saved); the
        # solve reads the strict lower triangle only (ungated: no mask needed).
        P_raw = torch.matmul(k, k.transpose(-2, -1))  # (G, nc, C, C)
        if gamma is not None:
            P_raw.mul_(gamma)
        P = P_raw * beta[..., None]
        eye = torch.eye(C, dtype=q.dtype, device=q.device).expand(G, nc, C, C)
        T = torch.linalg.solve_triangular(P, eye, upper=False, unitriangular=True)  # (G, nc, C, C)
        if gamma is not None:  # T_ij carries the decay Γ_ij: flushed like it (ops/decay.py flushed_exp)
            flush_small_(T, c)
        uw = torch.matmul(T, rhs)  # (G, nc, C, Dv + D) [u w] = T [βV, Kw]
        states = q.new_empty(G, nc, D, Dv)  # slot c: the state before chunk c
        # The chunk-to-chunk loop: u becomes new = u - w S; out = scale (Q ⊙ e^b) S_c (the earlier chunks')
        if c is not None:  # in C, each state's products while in cache
            S = S0.clone(memory_format=torch.contiguous_format)  # the final state, in place
            out = torch.empty_like(v)
            c.delta_rule_forward_loop(uw, k, q, b, scale, FLUSH_BELOW, out, states, S)
        else:
            S, out = _recurrence_forward(uw, k, q, b, scale, states, S0)
        M = scaled_bmm(q, k.transpose(-2, -1), scale)  # (G, nc, C, C) in-chunk scores, made causal:
        M.mul_(gamma) if gamma is not None else M.tril_()
        add_bmm_(out, M, uw[..., :Dv])
        ctx.save_for_backward(q, k, v, beta, b, gamma, P_raw, T, uw, states, M)
        ctx.scale, ctx.kernels = scale, c
        return out, S

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor, d_final: Tensor):
        q, k, v, beta, b, gamma, P_raw, T, uw, states, M = ctx.saved_tensors
        scale = ctx.scale
        G, nc, C, D = q.shape
        Dv = v.shape[-1]
        new = uw[..., :Dv]
        d_out = d_out.contiguous()
        # out = scale (Q ⊙ e^b) S_c + M new
        dM = torch.matmul(d_out, new.transpose(-2, -1))  # (G, nc, C, C)
        d_new = torch.matmul(M.transpose(-2, -1), d_out)  # (G, nc, C, Dv): the in-chunk part
        dS = (
            torch.zeros(G, D, Dv, dtype=q.dtype, device=q.device)
            if d_final is None
            else d_final.clone(memory_format=torch.contiguous_format)
        )  # d loss / d S, from the final state back to S_0, in place
        # The chunk-to-chunk recurrence backwards (cpu kernels' delta_rule_backward_loop's contract): d_new
        # gains its carried part; y = Tᵀ d new = d loss / d r; d_q, d_kb, dk get the state's terms; gated,
        # db_rows and db_last the terms of d loss / d b that go through the state.
        y, (d_q, d_kb, dk) = torch.empty_like(d_new), (torch.empty_like(k) for _ in range(3))
        db_rows, db_last = (None, None) if b is None else (torch.empty_like(b), b.new_empty(G, nc))
        grads = (y, d_q, d_kb, dk, db_rows, db_last)
        T_lies = T if T.is_contiguous() else T.mT  # solve_triangular's T is column-major
        # The forward's decision, if the gradients coming in are plain float32 CPU tensors too.
        c = ctx.kernels and cpu.kernels_for(d_out, dS, T_lies)
        if c is not None:
            c.delta_rule_backward_loop(
                d_new, k, q, uw, T, b, beta, scale, FLUSH_BELOW, d_out, states, *grads, dS
            )
        else:
            dS = _recurrence_backward(d_new, k, q, uw, T, b, beta, scale, d_out, states, grads, dS)
        dP = torch.matmul(y, new.transpose(-2, -1)).neg_().tril_(-1)  # (G, nc, C, C) dA = -y newᵀ
        # M = scale (Q Kᵀ) ⊙ Γ and P = diag(β) K Kᵀ ⊙ Γ: dM, dP become the gradients of Q Kᵀ and K Kᵀ
        d_beta, db = delta_scores_backward_(dM, dP, M, P_raw, gamma, beta, c)
        add_bmm_(d_q, dM, k, scale)
        add_bmm_(dk, dM.transpose(-2, -1), q, scale)
        add_bmm_(dk, dP, k)
        dv = delta_rule_grad_epilogue_(dk, d_kb, d_beta, y, v, k, beta, c)
        dg = None
        if db is not None:
            db += db_rows
            db[..., -1] += db_last
            dg = db.flip(-1).cumsum(-1).flip(-1)  # b = cumsum(g) within the chunk
        return d_q, dk, dv, d_beta, dg, dS, None


def _recurrence_forward(
    uw: Tensor, k: Tensor, q: Tensor, b: Tensor | None, scale: float, states: Tensor, S: Tensor
) -> tuple[Tensor, Tensor]:
    """ChunkDeltaRule's chunk-to-chunk recurrence in PyTorch (the C loop's fallback, same contract:
    cpu kernels' delta_rule_forward_loop): u in uw becomes new = u - w S, states receives the state before
    each chunk; -> the final state, and scale (Q ⊙ e^b) S_c for every chunk."""
    Dv = states.shape[-1]
    new, w = uw[..., :Dv], uw[..., Dv:]
    if b is None:
        kd, qd, carry = k, q, None
    else:
        kd, qd = _decayed_qk(k, q, b, scale)
        carry = flushed_exp(b[..., -1])  # (G, nc) the state's decay over each chunk
    per_chunk = zip(states.unbind(1), new.unbind(1), w.unbind(1), kd.transpose(-2, -1).unbind(1), strict=True)
    for c, (state_c, new_c, w_c, kdt_c) in enumerate(per_chunk):  # views of chunk c
        state_c.copy_(S)
        new_c.baddbmm_(w_c, S, alpha=-1.0)  # (G, C, Dv) in place of u_c
        S = torch.baddbmm(S if carry is None else S * carry[:, c, None, None], kdt_c, new_c)  # (G, D, Dv)
    return S, scaled_bmm(qd, states, scale if b is None else 1.0)


def _recurrence_backward(
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
    grads: tuple[Tensor, ...],
    dS: Tensor,
) -> Tensor:
    """Its backward in PyTorch, with the C loop's contract (cpu kernels' delta_rule_backward_loop): fills
    grads = (y, d_q, d_kb, dk, db_rows, db_last) and d_new's carried part; -> d loss / d S_0."""
    y, d_q, d_kb, dk, db_rows, db_last = grads
    Dv = d_new.shape[-1]
    new, w = uw[..., :Dv], uw[..., Dv:]
    if b is None:
        kd, qd, carry, eb = k, q * scale, None, None
    else:
        kd, qd = _decayed_qk(k, q, b, scale)
        carry, eb = flushed_exp(b[..., -1]), flushed_exp(b)[..., None]  # (G, nc), (G, nc, C, 1)
    dS_own = torch.matmul(qd.transpose(-2, -1), d_out)  # (G, nc, D, Dv) from chunk c's outputs
    dS_next = torch.empty_like(states)  # slot c: d loss / d S_{c+1}
    per_chunk = list(zip(*(t.unbind(1) for t in (dS_next, d_new, dS_own, kd, w.transpose(-2, -1)))))
    for c in range(len(per_chunk) - 1, -1, -1):
        dS_next_c, d_new_c, dS_c, kd_c, wt_c = per_chunk[c]  # views of chunk c
        dS_next_c.copy_(dS)
        d_new_c.baddbmm_(kd_c, dS)  # (G, C, Dv)
        dS_c.baddbmm_(wt_c, d_new_c, alpha=-1.0)  # (G, D, Dv)
        dS = dS_c.add_(dS) if carry is None else dS_c.addcmul_(dS, carry[:, c, None, None])
    torch.matmul(T.transpose(-2, -1), d_new, out=y)
    torch.matmul(d_out, states.transpose(-2, -1), out=d_q)  # (G, nc, C, D) d loss / d qd, for now
    torch.matmul(y, states.transpose(-2, -1), out=d_kb).neg_()  # d loss / d Kw, for now
    torch.matmul(new, dS_next.transpose(-2, -1), out=dk)  # d loss / d kd, for now
    if b is None:
        d_q.mul_(scale)
        return dS
    e_kd = torch.linalg.vecdot(dk, kd)  # (G, nc, C)
    kw = k * (beta[..., None] * eb)
    torch.sub(torch.linalg.vecdot(d_q, qd) + torch.linalg.vecdot(d_kb, kw), e_kd, out=db_rows)
    through_carry = torch.linalg.vecdot(states.flatten(-2), dS_next.flatten(-2)) * carry  # (G, nc)
    torch.add(e_kd.sum(-1), through_carry, out=db_last)
    d_q.mul_(eb * scale)
    d_kb.mul_(eb)
    dk.mul_(flushed_exp(b[..., -1:] - b)[..., None])
    return dS


def chunk_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    g: Tensor | None = None,
    *,
    scale: float,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The chunked parallel form: -> output (B, H, N, Dv), final state (B, H, D, Dv)."""
    B, H, N, D = q.shape
    Dv = v.shape[-1]
    C = min(chunk_size, N)
    pad = (-N) % C
    if pad:  # padded steps come last: k = 0 writes nothing, g = 0 decays nothing
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        beta = F.pad(beta, (0, pad))
        g = None if g is None else F.pad(g, (0, pad))
    nc = (N + pad) // C
    G = B * H

    def chunked(x: Tensor) -> Tensor:  # (B, H, nc·C, ·) -> (G, nc, C, ·), a view when contiguous
        return x.reshape(G, nc, C, *x.shape[3:])

    S0 = q.new_zeros(B, H, D, Dv) if initial_state is None else initial_state
    out, S = ChunkDeltaRule.apply(
        chunked(q).contiguous(),
        chunked(k).contiguous(),
        chunked(v).contiguous(),
        beta.reshape(G, nc, C).contiguous(),
        None if g is None else g.reshape(G, nc, C).contiguous(),
        S0.reshape(G, D, Dv),
        scale,
    )  # (G, nc, C, Dv), (G, D, Dv)
    return out.reshape(B, H, nc * C, Dv)[:, :, :N], S.view(B, H, D, Dv)
