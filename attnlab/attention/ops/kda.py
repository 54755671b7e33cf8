"""The delta rule with a decay per key dimension (Kimi Delta Attention's op):

    S' = diag(e^{g_t}) S_{t-1}        S_t = S' + β_t k_t (v_t - S'ᵀ k_t)ᵀ        o_t = (scale · q_t)ᵀ S_t

g (B, H, N, D) log decays <= 0, β (B, H, N) in (0, 1). Same recurrence as fla's `naive_recurrent_kda`.

The chunked form, in plain PyTorch (autograd differentiates it). Inside a chunk of C positions, with b the
inclusive cumulative log decay and u_t = β_t (v_t - S'ᵀ k_t) the value each step writes,

    S_t = e^{b_t} ⊙ S_0 + Σ_{j<=t} (e^{b_t - b_j} ⊙ k_j) u_jᵀ

so the writes solve one unit lower-triangular system per chunk, (I + L) u = β (V - (K ⊙ e^b) S_0) with
L_tj = β_t Σ_d k_td k_jd e^{b_td - b_jd} (j < t): u = U - W S_0 with U, W independent of S_0. Then the
state before each chunk is a linear recurrence, S_{c+1} = A_c S_c + B_c (one (D, D) x (D, Dv) product a
chunk: the only loop), and every output is batched over all chunks:
o = scale · ((Q ⊙ e^b - M W) S_c + M U), M_tj = Σ_d q_td k_jd e^{b_td - b_jd} (j <= t).
Every exponent is b_t - b_j <= 0 over pairs j <= t, or b <= 0: nothing overflows, whatever the gates.
The pairwise factors cost (C, C, D) per chunk, N·C·D numbers per head: C = 32 by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def recurrent_step_kda(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor, state: Tensor, *, scale: float
) -> tuple[Tensor, Tensor]:
    """One decoding step: q, k (B, H, 1, D), v (B, H, 1, Dv), beta (B, H, 1), g (B, H, 1, D), state (B, H, D, Dv)."""
    S = state * g.transpose(-2, -1).exp()  # (B, H, D, Dv): row d decays by e^{g_d}
    error = v - k @ S  # (B, H, 1, Dv)
    S = S + k.transpose(-2, -1) @ (beta[..., None] * error)
    return (q * scale) @ S, S  # (B, H, 1, Dv)


def naive_recurrent_kda(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    g: Tensor,
    *,
    scale: float,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The recurrence, one position at a time (the test oracle): -> output (B, H, N, Dv), final state."""
    B, H, N, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for t in range(N):
        window = slice(t, t + 1)
        out, S = recurrent_step_kda(
            q[:, :, window],
            k[:, :, window],
            v[:, :, window],
            beta[:, :, window],
            g[:, :, window],
            S,
            scale=scale,
        )
        outs.append(out)
    return torch.cat(outs, dim=2), S


def chunk_kda(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    g: Tensor,
    *,
    scale: float,
    chunk_size: int = 32,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The chunked form (module docstring): -> output (B, H, N, Dv), final state (B, H, D, Dv)."""
    B, H, N, D = q.shape
    Dv = v.shape[-1]
    C = min(chunk_size, N)
    pad = (-N) % C
    if pad:  # padded steps come last and are identities (k = 0 writes nothing, g = 0 decays nothing)
        q, k, v, g = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v, g))
        beta = F.pad(beta, (0, pad))
    nc = (N + pad) // C
    qc, kc, gc = (t.reshape(B, H, nc, C, D) for t in (q, k, g))  # (B, H, nc, C, D)
    vc = v.reshape(B, H, nc, C, Dv)
    betac = beta.reshape(B, H, nc, C, 1)
    b = gc.cumsum(3)  # (B, H, nc, C, D) inclusive cumulative log decay
    seen = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()  # (C, C) j <= t
    pair = (b[..., :, None, :] - b[..., None, :, :]).masked_fill(~seen[..., None], float("-inf")).exp()
    # pair (B, H, nc, C, C, D): e^{b_t - b_j} for j <= t, else 0
    M = (qc[..., :, None, :] * pair * kc[..., None, :, :]).sum(-1)  # (B, H, nc, C, C) j <= t
    KK = (kc[..., :, None, :] * pair * kc[..., None, :, :]).sum(-1)  # (B, H, nc, C, C)
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    system = eye + (betac * KK).tril(-1)  # (I + L), unit lower triangular
    U = torch.linalg.solve_triangular(system, betac * vc, upper=False, unitriangular=True)  # (…, C, Dv)
    decay_in = b.exp()  # (B, H, nc, C, D) from the chunk start through t
    W = torch.linalg.solve_triangular(system, betac * kc * decay_in, upper=False, unitriangular=True)
    b_last = b[..., -1:, :]  # (B, H, nc, 1, D)
    k_to_end = kc * (b_last - b).exp()  # (B, H, nc, C, D): decay from j (exclusive) to the chunk end
    carry = torch.diag_embed(b_last.squeeze(-2).exp()) - k_to_end.transpose(-2, -1) @ W  # (…, D, D)
    writes = k_to_end.transpose(-2, -1) @ U  # (B, H, nc, D, Dv)
    S = q.new_zeros(B, H, D, Dv) if initial_state is None else initial_state
    states = []
    for c in range(nc):  # the state before each chunk: S_{c+1} = A_c S_c + B_c
        states.append(S)
        S = torch.baddbmm(
            writes[:, :, c].reshape(B * H, D, Dv),
            carry[:, :, c].reshape(B * H, D, D),
            S.reshape(B * H, D, Dv),
        ).reshape(B, H, D, Dv)
    before = torch.stack(states, dim=2)  # (B, H, nc, D, Dv)
    out = (qc * decay_in - M @ W) @ before + M @ U  # (B, H, nc, C, Dv)
    return (out * scale).reshape(B, H, nc * C, Dv)[:, :, :N], S
