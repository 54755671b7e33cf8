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


class UnitLowerInverse(torch.autograd.Function):
    """T = A⁻¹ for unit lower-triangular A (..., C, C), by forward substitution, one row per step
    (T_i,:i = -A_i,:i T_:i,:i), each a product batched over every chunk: on CPU, batched
    torch.linalg.solve_triangular of many small systems was ~100x slower. The backward is two
    products, dA = -strict_lower(Tᵀ dT Tᵀ)."""

    @staticmethod
    def forward(ctx: FunctionCtx, A: Tensor) -> Tensor:
        C = A.shape[-1]
        A3 = A.reshape(-1, C, C)  # (G, C, C)
        T = torch.eye(C, dtype=A.dtype, device=A.device).repeat(A3.shape[0], 1, 1)  # (G, C, C)
        for i in range(1, C):
            T[:, i, :i] = torch.bmm(A3[:, i : i + 1, :i], T[:, :i, :i]).squeeze(1).neg_()
        T = T.view(A.shape)
        ctx.save_for_backward(T)
        return T

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        (T,) = ctx.saved_tensors
        Tt = T.transpose(-2, -1)
        return (Tt @ grad @ Tt).neg_().tril_(-1)  # A's diagonal and upper part are constants


class DeltaChunkScan(torch.autograd.Function):
    """The chunk-by-chunk part of the chunked delta rule, chunks first: u (nc, G, C, Dv), w, k
    (nc, G, C, D), a (nc, G, 1, 1) or None, S_0 (G, D, Dv) -> the corrections written by each chunk
    new_c = u_c - w_c S_c (nc, G, C, Dv) and the states (nc + 1, G, D, Dv), slot c the state before
    chunk c, S_{c+1} = a_c S_c + k_cᵀ new_c. Two products per chunk each way, into preallocated
    memory; the products that need no recurrence (dk, dw, da) are batched after the backward loop."""

    @staticmethod
    def forward(ctx: FunctionCtx, u: Tensor, w: Tensor, k: Tensor, a: Tensor | None, S0: Tensor):
        nc, G, C, Dv = u.shape
        new = torch.empty_like(u)
        states = u.new_empty(nc + 1, G, k.shape[-1], Dv)
        states[0] = S0
        kt = k.transpose(-2, -1)  # (nc, G, D, C)
        for c in range(nc):
            torch.baddbmm(u[c], w[c], states[c], alpha=-1.0, out=new[c])
            carried = states[c] if a is None else states[c] * a[c]
            torch.baddbmm(carried, kt[c], new[c], out=states[c + 1])
        ctx.save_for_backward(w, k, a, new, states)
        return new, states

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_new: Tensor, d_states: Tensor):
        w, k, a, new, states = ctx.saved_tensors
        nc = w.shape[0]
        d_new = d_new.clone(memory_format=torch.contiguous_format)  # completed in place, chunk by chunk
        dS = d_states.clone(memory_format=torch.contiguous_format)
        wt = w.transpose(-2, -1)  # (nc, G, D, C)
        for c in range(nc - 1, -1, -1):
            d_new[c].baddbmm_(k[c], dS[c + 1])  # S_{c+1} = a S_c + kᵀ new_c
            if a is None:
                dS[c].add_(dS[c + 1])
            else:
                dS[c].addcmul_(dS[c + 1], a[c])
            dS[c].baddbmm_(wt[c], d_new[c], alpha=-1.0)  # new_c = u_c - w_c S_c
        d_u = d_new
        d_w = -(d_new @ states[:-1].transpose(-2, -1))  # (nc, G, C, D)
        d_k = new @ dS[1:].transpose(-2, -1)  # (nc, G, C, D)
        d_a = None if a is None else (states[:-1] * dS[1:]).sum((-2, -1), keepdim=True)
        return d_u, d_w, d_k, d_a, dS[0]


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
    qc = q.reshape(B, H, nc, C, D) * scale  # (B, H, nc, C, D)
    kc = k.reshape(B, H, nc, C, D)
    vc = v.reshape(B, H, nc, C, Dv)
    bc = beta.reshape(B, H, nc, C, 1)
    k_beta = kc * bc  # (B, H, nc, C, D)
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    past = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()  # (C, C) j <= i
    if g is None:
        decay = past.to(q.dtype)  # (C, C)
        k_write, carries = kc, None
        w_rhs, q_inter = k_beta, qc
    else:
        b = g.reshape(B, H, nc, C, 1).cumsum(3)  # (B, H, nc, C, 1) inclusive
        decay = (b - b.transpose(-2, -1)).masked_fill(~past, float("-inf")).exp()  # (B, H, nc, C, C)
        b_last = b[:, :, :, -1:]  # (B, H, nc, 1, 1)
        k_write = kc * (b_last - b).exp()  # decay from j (exclusive) to the chunk end
        carries = b_last.exp()  # (B, H, nc, 1, 1)
        w_rhs = k_beta * b.exp()
        q_inter = qc * b.exp()  # the carried state decays from the chunk start to i
    # Unit lower-triangular system: (I + strict_lower(diag(β) K Kᵀ ⊙ Γ)) [u w] = [diag(β) V, w_rhs].
    system = eye + ((k_beta @ kc.transpose(-2, -1)) * decay).tril(-1)  # (B, H, nc, C, C)
    T = UnitLowerInverse.apply(system)  # (B, H, nc, C, C)
    u, w = T @ (vc * bc), T @ w_rhs  # (B, H, nc, C, Dv), (B, H, nc, C, D)
    S0 = q.new_zeros(B, H, D, Dv) if initial_state is None else initial_state

    def chunks_first(x: Tensor) -> Tensor:  # (B, H, nc, ...) -> (nc, B·H, ...), contiguous
        return x.flatten(0, 1).transpose(0, 1).contiguous()

    new, states = DeltaChunkScan.apply(
        chunks_first(u),
        chunks_first(w),
        chunks_first(k_write),
        None if carries is None else chunks_first(carries),
        S0.reshape(B * H, D, Dv),
    )  # (nc, B·H, C, Dv), (nc + 1, B·H, D, Dv)
    new = new.transpose(0, 1).reshape(B, H, nc, C, Dv)
    S = states[-1].view(B, H, D, Dv)
    starts = states[:-1].transpose(0, 1).reshape(B, H, nc, D, Dv)
    scores = (qc @ kc.transpose(-2, -1)) * decay  # (B, H, nc, C, C)
    out = q_inter @ starts + scores @ new  # (B, H, nc, C, Dv)
    return out.reshape(B, H, nc * C, Dv)[:, :, :N], S
