"""The (gated) delta rule: the state is corrected towards v_t along k_t, instead of only added to.

    S_t = e^{g_t} S_{t-1}                     (gated DeltaNet; DeltaNet: g = 0)
    S_t = S_t + β_t k_t (v_t - S_tᵀ k_t)ᵀ      o_t = (scale · q_t)ᵀ S_t

β (B, H, N) is the writing strength, g (B, H, N) a log decay. Same recurrence as fla's
`delta_rule_recurrence` and `naive_recurrent_gated_delta_rule`.

The chunked form (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length"): inside a chunk of C positions the C corrections compose into one WY/UT form,
T = (I + strict_lower(diag(β) K Kᵀ ⊙ Γ))⁻¹ with Γ_ij = e^{b_i - b_j} (b the cumulative log decay in
the chunk), solved as a unit-triangular system for u = T diag(β) V and w = T diag(β) (K ⊙ e^b). Then,
chunk by chunk, the new values are u - w S, written into the state with one product, and the outputs
of every chunk come from two batched products afterwards. Exponents are all <= 0 (stable for any g).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention.ops.gated_linear import FLUSH_BELOW, flushed_exp


class ChunkDeltaRule(torch.autograd.Function):
    """The chunked delta rule with a hand-written backward: q, k (G, nc, C, D), v (G, nc, C, Dv),
    beta (G, nc, C), g (G, nc, C) or None, S_0 (G, D, Dv) -> out (G, nc, C, Dv), final state (G, D, Dv).

    Every product that needs no recurrence is one batched product over all chunks (G·nc matrices);
    only the state's chunk-to-chunk update is a loop (two products per chunk each way). T = A⁻¹ is one
    batched triangular solve. The backward reuses T, [u w], the corrections and the states of the
    forward: autograd through the same code records ~50 ops plus a copy per chunk and sums each
    input's gradient contributions in fresh tensors."""

    @staticmethod
    def forward(ctx: FunctionCtx, q, k, v, beta, g, S0, scale: float):
        G, nc, C, D = q.shape
        Dv = v.shape[-1]
        qs = q * scale
        kb = k * beta[..., None]  # (G, nc, C, D)
        if g is None:
            gamma = torch.ones(C, C, dtype=q.dtype, device=q.device).tril_()  # (C, C) j <= i
            kd, rhs_w, qd, carry = k, kb, qs, None
        else:
            b = g.cumsum(-1)  # (G, nc, C) inclusive cumulative log decay
            past = torch.ones(C, C, dtype=torch.bool, device=q.device).tril_()
            gamma = flushed_exp(
                (b[..., :, None] - b[..., None, :]).masked_fill_(~past, float("-inf"))
            )  # (G, nc, C, C)
            eb = flushed_exp(b)[..., None]  # (G, nc, C, 1) decay from the chunk start to i
            kd = k * flushed_exp(b[..., -1:] - b)[..., None]  # decay from j (exclusive) to the chunk end
            rhs_w, qd = kb * eb, qs * eb
            carry = flushed_exp(b[..., -1])[..., None, None]  # (G, nc, 1, 1)
        # Unit lower-triangular A = I + strict_lower(diag(β) K Kᵀ ⊙ Γ) (the diagonal is not read).
        P = torch.matmul(kb, k.transpose(-2, -1)).mul_(gamma)  # (G, nc, C, C)
        eye = torch.eye(C, dtype=q.dtype, device=q.device).expand(G, nc, C, C)
        T = torch.linalg.solve_triangular(P, eye, upper=False, unitriangular=True)  # (G, nc, C, C)
        if g is not None:  # T_ij carries the decay Γ_ij: flushed like it (ops.gated_linear.flushed_exp)
            T.masked_fill_(T.abs() < FLUSH_BELOW, 0.0)
        uw = torch.matmul(T, torch.cat([v * beta[..., None], rhs_w], dim=-1))  # (G, nc, C, Dv + D) [u w]
        u, w = uw[..., :Dv], uw[..., Dv:]
        kdt = kd.transpose(-2, -1)  # (G, nc, D, C)
        new = q.new_empty(G, nc, C, Dv)  # the corrections each chunk writes, u - w S
        states = q.new_empty(G, nc, D, Dv)  # slot c: the state before chunk c (the final one: S)
        S = S0
        for c in range(nc):
            states[:, c] = S
            new_c = torch.baddbmm(u[:, c], w[:, c], S, alpha=-1.0)  # (G, C, Dv)
            new[:, c] = new_c
            S = torch.baddbmm(S if carry is None else S * carry[:, c], kdt[:, c], new_c)  # (G, D, Dv)
        M = torch.matmul(qs, k.transpose(-2, -1)).mul_(gamma)  # (G, nc, C, C) causal in-chunk scores
        out = torch.matmul(qd, states)  # (G, nc, C, Dv) from the earlier chunks
        out.view(-1, C, Dv).baddbmm_(M.view(-1, C, C), new.view(-1, C, Dv))
        ctx.save_for_backward(q, k, v, beta, g, gamma, None if g is None else P, T, uw, new, states, M)
        ctx.scale = scale
        return out, S

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor, d_final: Tensor):
        q, k, v, beta, g, gamma, P, T, uw, new, states, M = ctx.saved_tensors
        scale = ctx.scale
        G, nc, C, D = q.shape
        Dv = v.shape[-1]
        gated = g is not None
        d_out = d_out.contiguous()
        qs = q * scale
        kb = k * beta[..., None]
        if gated:
            b = g.cumsum(-1)  # (G, nc, C)
            eb = flushed_exp(b)[..., None]
            decay_to_end = flushed_exp(b[..., -1:] - b)[..., None]  # (G, nc, C, 1)
            kd, qd, carry = k * decay_to_end, qs * eb, flushed_exp(b[..., -1])[..., None, None]
        else:
            kd, qd, carry = k, qs, None
        w = uw[..., Dv:]
        # out = qd S_c + M new
        dM = torch.matmul(d_out, new.transpose(-2, -1))  # (G, nc, C, C)
        d_new = torch.matmul(M.transpose(-2, -1), d_out)  # (G, nc, C, Dv)
        d_qd = torch.matmul(d_out, states.transpose(-2, -1))  # (G, nc, C, D)
        dS_out = torch.matmul(qd.transpose(-2, -1), d_out)  # (G, nc, D, Dv) into the state before chunk c
        # The chunk-to-chunk recurrence, backwards: S_{c+1} = a_c S_c + kdᵀ new_c, new_c = u_c - w_c S_c.
        dS_next = q.new_empty(G, nc, D, Dv)  # slot c: d loss / d S_{c+1}
        dS = torch.zeros_like(states[:, 0]) if d_final is None else d_final.contiguous()
        wt = w.transpose(-2, -1)  # (G, nc, D, C)
        for c in range(nc - 1, -1, -1):
            dS_next[:, c] = dS
            d_new_c = torch.baddbmm(d_new[:, c], kd[:, c], dS)  # (G, C, Dv)
            d_new[:, c] = d_new_c
            carried = dS if carry is None else dS * carry[:, c]
            dS = torch.baddbmm(carried + dS_out[:, c], wt[:, c], d_new_c, alpha=-1.0)
        d_kd = torch.matmul(new, dS_next.transpose(-2, -1))  # (G, nc, C, D)
        d_w = torch.matmul(d_new, states.transpose(-2, -1)).neg_()  # (G, nc, C, D)
        # [u w] = T [βv, rhs_w]: d rhs = Tᵀ d[u w]; dA = -d rhs [u w]ᵀ, its strict lower part
        d_rhs = torch.matmul(T.transpose(-2, -1), torch.cat([d_new, d_w], dim=-1))  # (G, nc, C, Dv + D)
        dP = torch.matmul(d_rhs, uw.transpose(-2, -1)).neg_().tril_(-1)  # (G, nc, C, C)
        dv = d_rhs[..., :Dv] * beta[..., None]
        d_beta = (d_rhs[..., :Dv] * v).sum(-1)  # (G, nc, C)
        d_rhs_w = d_rhs[..., Dv:]
        # M = (qs kᵀ) ⊙ Γ and P = (kb kᵀ) ⊙ Γ
        dM_scores = dM * gamma
        dP_scores = dP * gamma
        d_qs = (
            torch.matmul(dM_scores, k).addcmul_(d_qd, eb) if gated else torch.matmul(dM_scores, k).add_(d_qd)
        )
        dk = torch.matmul(dM_scores.transpose(-2, -1), qs)
        dk.view(-1, C, D).baddbmm_(dP_scores.transpose(-2, -1).reshape(-1, C, C), kb.view(-1, C, D))
        d_kb = torch.matmul(dP_scores, k)  # (G, nc, C, D)
        if gated:
            d_kb.addcmul_(d_rhs_w, eb)
            dk.addcmul_(d_kd, decay_to_end)
            # d loss / d b, through every e^{±b}: Γ (in M and P), eb (in qd and rhs_w), kd, the carry
            E = (dM * M).addcmul_(dP, P)  # (G, nc, C, C) d loss / d (b_i - b_j) through Γ_ij
            db = E.sum(-1) - E.sum(-2)
            db += (d_qd * qd).sum(-1) + (d_rhs_w * (kb * eb)).sum(-1)
            e_kd = (d_kd * kd).sum(-1)  # (G, nc, C)
            db -= e_kd
            db[..., -1] += e_kd.sum(-1) + (states * dS_next).sum((-2, -1)) * carry[..., 0, 0]
            dg = db.flip(-1).cumsum(-1).flip(-1)  # b = cumsum(g) within the chunk
        else:
            d_kb.add_(d_rhs_w)
            dk.add_(d_kd)
            dg = None
        dk.addcmul_(d_kb, beta[..., None])
        d_beta += (d_kb * k).sum(-1)
        return d_qs.mul_(scale), dk, dv, d_beta, dg, dS, None


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
