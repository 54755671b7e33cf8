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
written into the state with one product, and the outputs of every chunk come from two batched
products afterwards. The backward differentiates through r = diag(β) V - diag(β) (K ⊙ e^b) S rather
than u and w (ChunkDeltaRule). Exponents are all <= 0 (stable for any g).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention import linear_passes as passes
from attnlab.attention.ops import c_loops
from attnlab.attention.ops.gated_linear import FLUSH_BELOW, flushed_exp


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


def decay_matrix(b: Tensor) -> Tensor:
    """b (G, nc, C) cumulative log decays -> Γ (G, nc, C, C), Γ_ij = e^{b_i - b_j} for j <= i, else 0,
    flushed below FLUSH_BELOW (one pass in C for float32 on CPU; PyTorch: four)."""
    C = b.shape[-1]
    lib = passes._fused(b)
    if lib is not None:
        gamma = b.new_empty(*b.shape, C)
        lib.decay_matrix(passes._ptr(b), passes._ptr(gamma), FLUSH_BELOW, b.numel() // C, C)
        return gamma
    past = torch.ones(C, C, dtype=torch.bool, device=b.device).tril_()
    return flushed_exp((b[..., :, None] - b[..., None, :]).masked_fill_(~past, float("-inf")))


def flush_small_(x: Tensor) -> Tensor:
    """x with entries of magnitude below FLUSH_BELOW set to 0, in place (elementwise: a batch of
    column-major matrices, as torch.linalg.solve_triangular returns, is as good as a contiguous one)."""
    dense = x.mT if not x.is_contiguous() and x.mT.is_contiguous() else x
    lib = passes._fused(dense)
    if lib is not None:
        lib.flush_small(passes._ptr(dense), FLUSH_BELOW, x.numel())
        return x
    return x.masked_fill_(x.abs() < FLUSH_BELOW, 0.0)


def delta_rule_factors(
    k: Tensor, q: Tensor, v: Tensor, beta: Tensor, b: Tensor | None, scale: float, *, want: tuple[str, ...]
) -> dict[str, Tensor]:
    """The per-position factors of ChunkDeltaRule named in `want`, in that order:
    rhs (G, nc, C, Dv + D) = [βV, β K ⊙ e^b], kb = β K, kd = K ⊙ e^{b_last - b}, qd = scale Q ⊙ e^b;
    b (G, nc, C) the cumulative log decay (None: ungated, only rhs and kb). One pass in C for float32
    on CPU (PyTorch: one or two per factor)."""
    G, nc, C, D = k.shape
    Dv = v.shape[-1]
    out = {n: (k.new_empty(G, nc, C, Dv + D) if n == "rhs" else torch.empty_like(k)) for n in want}
    lib = passes._fused(k, q, v, beta, b)
    if lib is not None:
        ptrs = [passes._ptr(t) for t in (k, q, v, beta, b)] + [
            passes._ptr(out.get(n)) for n in ("rhs", "kb", "kd", "qd")
        ]
        lib.delta_rule_factors(*ptrs, scale, FLUSH_BELOW, G * nc, C, D, Dv)
        return out
    eb = None if b is None else flushed_exp(b)[..., None]  # (G, nc, C, 1)
    if "kb" in out:
        torch.mul(k, beta[..., None], out=out["kb"])
    if "rhs" in out:
        torch.mul(v, beta[..., None], out=out["rhs"][..., :Dv])
        kb = out["kb"] if "kb" in out else k * beta[..., None]
        torch.mul(kb, 1.0 if eb is None else eb, out=out["rhs"][..., Dv:])
    if "kd" in out:
        torch.mul(k, flushed_exp(b[..., -1:] - b)[..., None], out=out["kd"])
    if "qd" in out:
        torch.mul(q, eb * scale, out=out["qd"])
    return out


def delta_rule_grad_epilogue_(
    dk: Tensor,
    d_kb: Tensor,
    d_q: Tensor,
    y: Tensor,
    v: Tensor,
    k: Tensor,
    beta: Tensor,
    *,
    scale: float,
    gated: tuple[Tensor, ...] | None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """ChunkDeltaRule's last elementwise step: -> dv, d_beta, and (gated) e_kd = Σ d kd ⊙ kd per position.
    Gated, with gated = (d_qd, d_kw, d_kd, qd, rhs, kd, b, db): first the gradients through e^b and
    e^{b_last - b} are added into d_q, d_kb and dk, and db gains Σ d_qd ⊙ qd + Σ d_kw ⊙ kw - e_kd
    (in place). Then dk += β d_kb, dv = β y, d_beta = Σ y ⊙ v + Σ d_kb ⊙ k. One pass in C for float32
    on CPU (PyTorch: about ten)."""
    G, nc, C, D = k.shape
    Dv = v.shape[-1]
    dv, d_beta = torch.empty_like(y), beta.new_empty(beta.shape)
    e_kd = None if gated is None else beta.new_empty(beta.shape)
    lib = passes._fused(dk, d_kb, d_q, y, v, k, beta, *(gated or ()))
    if lib is not None:
        d_qd, d_kw, d_kd, qd, rhs, kd, b, db = gated or (None,) * 8
        tensors = (dk, d_kb, d_q, dv, d_beta, db, e_kd, y, v, k, beta, d_qd, d_kw, d_kd, qd, rhs, kd, b)
        lib.delta_rule_grad_epilogue(
            *(passes._ptr(t) for t in tensors), scale, FLUSH_BELOW, G * nc * C, C, D, Dv
        )
        return dv, d_beta, e_kd
    if gated is not None:
        d_qd, d_kw, d_kd, qd, rhs, kd, b, db = gated
        eb = flushed_exp(b)[..., None]  # (G, nc, C, 1)
        d_q.addcmul_(d_qd, eb, value=scale)
        d_kb.addcmul_(d_kw, eb)
        dk.addcmul_(d_kd, flushed_exp(b[..., -1:] - b)[..., None])
        torch.linalg.vecdot(d_kd, kd, out=e_kd)
        db += torch.linalg.vecdot(d_qd, qd) + torch.linalg.vecdot(d_kw, rhs[..., Dv:]) - e_kd
    dk.addcmul_(d_kb, beta[..., None])
    torch.mul(y, beta[..., None], out=dv)
    torch.linalg.vecdot(y, v, out=d_beta).add_(torch.linalg.vecdot(d_kb, k))
    return dv, d_beta, e_kd


def decay_scores_backward_(dM: Tensor, dP: Tensor, M: Tensor, P: Tensor, gamma: Tensor) -> Tensor:
    """Through M = M_raw ⊙ Γ and P = P_raw ⊙ Γ (G, nc, C, C): dM, dP become the gradients of M_raw,
    P_raw in place; returns d loss / d b (G, nc, C) through Γ_ij = e^{b_i - b_j}: the row sums minus
    the column sums of E = dM ⊙ M + dP ⊙ P (one pass in C; PyTorch: seven)."""
    lib = passes._fused(dM, dP, M, P, gamma)
    if lib is not None:
        G, nc, C = M.shape[:3]
        db = M.new_empty(G, nc, C)
        lib.decay_scores_backward(*(passes._ptr(t) for t in (dM, dP, M, P, gamma, db)), G * nc, C)
        return db
    E = (dM * M).addcmul_(dP, P)
    db = E.sum(-1) - E.sum(-2)
    dM.mul_(gamma)
    dP.mul_(gamma)
    return db


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
    products where differentiating u and w separately takes five. Every product that needs no
    recurrence is one batched product over all chunks (G·nc matrices); only the state's
    chunk-to-chunk update is a loop (two products per chunk each way). T = A⁻¹ is one batched
    triangular solve. Exponents are all <= 0."""

    @staticmethod
    def forward(ctx: FunctionCtx, q, k, v, beta, g, S0, scale: float):
        G, nc, C, D = q.shape
        Dv = v.shape[-1]
        if g is None:  # Γ is the causal mask: applied by tril_ in place, no Γ tensor
            gamma = None
            (rhs,) = delta_rule_factors(k, q, v, beta, None, scale, want=("rhs",)).values()  # [βV, βK]
            kb, kd, carry = rhs[..., Dv:], k, None  # (G, nc, C, D)
        else:
            b = g.cumsum(-1)  # (G, nc, C) inclusive cumulative log decay
            gamma = decay_matrix(b)  # (G, nc, C, C)
            # kd: decayed from j (exclusive) to the chunk end; qd: from the chunk start to i
            rhs, kb, kd, qd = delta_rule_factors(
                k, q, v, beta, b, scale, want=("rhs", "kb", "kd", "qd")
            ).values()
            carry = flushed_exp(b[..., -1])[..., None, None]  # (G, nc, 1, 1)
        # Unit lower-triangular A = I + strict_lower(diag(β) K Kᵀ ⊙ Γ) (the diagonal is not read).
        P = torch.matmul(kb, k.transpose(-2, -1))  # (G, nc, C, C)
        if g is not None:  # (ungated: the solve reads the strict lower triangle only)
            P.mul_(gamma)
        eye = torch.eye(C, dtype=q.dtype, device=q.device).expand(G, nc, C, C)
        T = torch.linalg.solve_triangular(P, eye, upper=False, unitriangular=True)  # (G, nc, C, C)
        if g is not None:  # T_ij carries the decay Γ_ij: flushed like it (ops.gated_linear.flushed_exp)
            flush_small_(T)
        uw = torch.matmul(T, rhs)  # (G, nc, C, Dv + D) [u w] = T [βV, Kw]
        new, w = uw[..., :Dv], uw[..., Dv:]  # u, overwritten chunk by chunk with new = u - w S
        kdt = kd.transpose(-2, -1)  # (G, nc, D, C)
        states = q.new_empty(G, nc, D, Dv)  # slot c: the state before chunk c (the final one: S)
        if passes._fused(uw, kd, S0, carry) is not None:  # the loop in C: no library call per small product
            S = S0.clone(memory_format=torch.contiguous_format)
            c_loops.delta_rule_forward_loop(uw, kd, states, S, None if carry is None else carry.view(G, nc))
        else:
            S = S0
            per_chunk = zip(states.unbind(1), new.unbind(1), w.unbind(1), kdt.unbind(1), strict=True)
            for c, (state_c, new_c, w_c, kdt_c) in enumerate(per_chunk):  # views of chunk c
                state_c.copy_(S)
                new_c.baddbmm_(w_c, S, alpha=-1.0)  # (G, C, Dv) in place of u_c
                S = torch.baddbmm(S if carry is None else S * carry[:, c], kdt_c, new_c)  # (G, D, Dv)
        M = scaled_bmm(q, k.transpose(-2, -1), scale)  # (G, nc, C, C) in-chunk scores, made causal:
        M.mul_(gamma) if g is not None else M.tril_()
        out = scaled_bmm(q, states, scale) if g is None else torch.matmul(qd, states)  # from earlier chunks
        add_bmm_(out, M, new)
        ctx.save_for_backward(q, k, v, beta, g, gamma, None if g is None else P, T, rhs, uw, states, M)
        ctx.scale = scale
        return out, S

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor, d_final: Tensor):
        q, k, v, beta, g, gamma, P, T, rhs, uw, states, M = ctx.saved_tensors
        scale = ctx.scale
        G, nc, C, D = q.shape
        Dv = v.shape[-1]
        new, w = uw[..., :Dv], uw[..., Dv:]
        gated = g is not None
        d_out = d_out.contiguous()
        kw = rhs[..., Dv:]  # diag(β) (K ⊙ e^b)
        if gated:
            b = g.cumsum(-1)  # (G, nc, C)
            kb, kd, qd = delta_rule_factors(k, q, v, beta, b, scale, want=("kb", "kd", "qd")).values()
            carry = flushed_exp(b[..., -1])[..., None, None]  # (G, nc, 1, 1)
            dS_out = torch.matmul(qd.transpose(-2, -1), d_out)  # (G, nc, D, Dv) into the state before c
        else:
            kd, kb, carry = k, kw, None
            dS_out = scaled_bmm(q.transpose(-2, -1), d_out, scale)
        # out = scale (Q ⊙ e^b) S_c + M new
        dM = torch.matmul(d_out, new.transpose(-2, -1))  # (G, nc, C, C)
        d_new = torch.matmul(M.transpose(-2, -1), d_out)  # (G, nc, C, Dv)
        # The chunk-to-chunk recurrence, backwards: S_{c+1} = a_c S_c + kdᵀ new_c, new_c = u_c - w_c S_c.
        # d new and dS_out are ours: the carried terms are added into their slots in place.
        dS_next = torch.empty_like(states)  # slot c: d loss / d S_{c+1}
        dS = (
            torch.zeros(G, D, Dv, dtype=q.dtype, device=q.device)
            if d_final is None
            else d_final.clone(memory_format=torch.contiguous_format)
        )  # d loss / d S, from the final state back to S_0, in place
        if passes._fused(d_new, kd, uw, dS_out, dS, carry) is not None:  # the loop in C
            carry_c = None if carry is None else carry.view(G, nc)
            c_loops.delta_rule_backward_loop(d_new, kd, uw, dS_out, dS_next, dS, carry_c)
        else:
            per_chunk = list(zip(*(t.unbind(1) for t in (dS_next, d_new, dS_out, kd, w.transpose(-2, -1)))))
            for c in range(nc - 1, -1, -1):
                dS_next_c, d_new_c, dS_c, kd_c, wt_c = per_chunk[c]  # views of chunk c
                dS_next_c.copy_(dS)
                d_new_c.baddbmm_(kd_c, dS)  # (G, C, Dv)
                dS_c.baddbmm_(wt_c, d_new_c, alpha=-1.0)  # (G, D, Dv)
                dS = dS_c.add_(dS) if carry is None else dS_c.addcmul_(dS, carry[:, c])
        y = torch.matmul(T.transpose(-2, -1), d_new)  # (G, nc, C, Dv) d loss / d r, r = βV - Kw S
        dP = torch.matmul(y, new.transpose(-2, -1)).neg_().tril_(-1)  # (G, nc, C, C) dA = -y newᵀ
        # M = scale (Q Kᵀ) ⊙ Γ and P = (diag(β) K Kᵀ) ⊙ Γ; d Kw = -y Sᵀ, d kd = new dS_nextᵀ
        if gated:  # d loss / d b through Γ; dM, dP become the gradients of the undecayed scores
            db = decay_scores_backward_(dM, dP, M, P, gamma)
        else:  # Γ is the causal mask (dP is masked already)
            dM.tril_()
        d_q = scaled_bmm(dM, k, scale)  # (G, nc, C, D)
        dk = scaled_bmm(dM.transpose(-2, -1), q, scale)
        add_bmm_(dk, dP.transpose(-2, -1), kb)
        d_kb = torch.matmul(dP, k)  # (G, nc, C, D)
        if gated:
            d_qd = torch.matmul(d_out, states.transpose(-2, -1))  # (G, nc, C, D) d loss / d (scale Q ⊙ e^b)
            d_kw = torch.matmul(y, states.transpose(-2, -1)).neg_()  # (G, nc, C, D)
            d_kd = torch.matmul(new, dS_next.transpose(-2, -1))  # (G, nc, C, D)
            # through e^b (in Q and Kw) and kd; then the carry and cumsum(g)
            dv, d_beta, e_kd = delta_rule_grad_epilogue_(
                dk, d_kb, d_q, y, v, k, beta, scale=scale, gated=(d_qd, d_kw, d_kd, qd, rhs, kd, b, db)
            )
            through_carry = torch.linalg.vecdot(states.flatten(-2), dS_next.flatten(-2)) * carry[..., 0, 0]
            db[..., -1] += e_kd.sum(-1) + through_carry
            dg = db.flip(-1).cumsum(-1).flip(-1)  # b = cumsum(g) within the chunk
        else:  # the same terms, accumulated by the products themselves
            add_bmm_(d_q, d_out, states.transpose(-2, -1), alpha=scale)
            add_bmm_(d_kb, y, states.transpose(-2, -1), alpha=-1.0)
            add_bmm_(dk, new, dS_next.transpose(-2, -1))
            dg = None
            dv, d_beta, _ = delta_rule_grad_epilogue_(dk, d_kb, d_q, y, v, k, beta, scale=scale, gated=None)
        return d_q, dk, dv, d_beta, dg, dS, None


def naive_recurrent_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    g: Tensor | None = None,
    *,
    scale: float,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The recurrence, one position at a time: -> output (B, H, N, Dv), final state (B, H, D, Dv)."""
    B, H, N, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for t in range(N):
        if g is not None:
            S = S * g[:, :, t, None, None].exp()
        k_t = k[:, :, t]  # (B, H, D)
        error = v[:, :, t] - (S * k_t[..., None]).sum(-2)  # (B, H, Dv) what the state gets wrong
        S = S + k_t[..., None] * (beta[:, :, t, None] * error)[..., None, :]  # (B, H, D, Dv)
        outs.append((q[:, :, t, None, :] * scale) @ S)  # (B, H, 1, Dv)
    return torch.cat(outs, dim=2), S


def recurrent_step_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None, state: Tensor, *, scale: float
) -> tuple[Tensor, Tensor]:
    """One decoding step: q, k (B, H, 1, D), v (B, H, 1, Dv), beta, g (B, H, 1), state (B, H, D, Dv)."""
    S = state if g is None else state * g[..., None].exp()  # (B, H, D, Dv)
    error = v - k @ S  # (B, H, 1, Dv)
    S = S + k.transpose(-2, -1) @ (beta[..., None] * error)
    return (q * scale) @ S, S  # (B, H, 1, Dv)


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
