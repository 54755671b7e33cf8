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
        carries = b_last.exp().unbind(2)  # nc x (B, H, 1, 1)
        w_rhs = k_beta * b.exp()
        q_inter = qc * b.exp()  # the carried state decays from the chunk start to i
    # Unit lower-triangular system: (I + strict_lower(diag(β) K Kᵀ ⊙ Γ)) [u w] = [diag(β) V, w_rhs].
    system = eye + ((k_beta @ kc.transpose(-2, -1)) * decay).tril(-1)  # (B, H, nc, C, C)
    uw = torch.linalg.solve_triangular(
        system, torch.cat([vc * bc, w_rhs], dim=-1), upper=False, unitriangular=True
    )  # (B, H, nc, C, Dv + D)
    u, w = uw.split([Dv, D], dim=-1)
    S = q.new_zeros(B, H, D, Dv) if initial_state is None else initial_state
    starts, news = [], []
    for c, (u_c, w_c, k_c) in enumerate(zip(u.unbind(2), w.unbind(2), k_write.unbind(2), strict=True)):
        new = u_c - w_c @ S  # (B, H, C, Dv) the corrections this chunk writes
        starts.append(S)
        news.append(new)
        S = (S if carries is None else S * carries[c]) + k_c.transpose(-2, -1) @ new
    new = torch.stack(news, dim=2)  # (B, H, nc, C, Dv)
    scores = (qc @ kc.transpose(-2, -1)) * decay  # (B, H, nc, C, C)
    out = q_inter @ torch.stack(starts, dim=2) + scores @ new  # (B, H, nc, C, Dv)
    return out.reshape(B, H, nc * C, Dv)[:, :, :N], S
