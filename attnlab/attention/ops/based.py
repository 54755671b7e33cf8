"""Based's linear part (Arora et al. 2024): causal linear attention whose kernel is the 2nd-order
Taylor expansion of exp,

    κ(q, k) = 1 + s + s²/2,  s = scale · q·k          o_i = Σ_{j<=i} κ(q_i, k_j) v_j / (Σ_{j<=i} κ + eps)

(fla's `naive_parallel_based`, normalised). κ is a dot product of explicit features
φ(x) = [1, x, x_a x_b · c_ab (a <= b)] with c_aa = 1/√2 and c_ab = 1 otherwise: 1 + d + d(d+1)/2
features, the symmetric half of the d² products fla writes out (the same κ at ~half the cost).
The chunked form is attnlab's causal linear kernel (attention/linear_kernels.py) over these features.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnlab.attention.linear_kernels import causal_linear_attention


def taylor_features(x: Tensor) -> Tensor:
    """x (..., d) -> φ(x) (..., 1 + d + d(d+1)/2), with φ(q)·φ(k) = 1 + q·k + (q·k)²/2."""
    d = x.shape[-1]
    a, b = torch.triu_indices(d, d, device=x.device)  # pairs a <= b
    weight = torch.where(a == b, math.sqrt(0.5), 1.0).to(x.dtype)  # (P,)
    second = x[..., a] * x[..., b] * weight  # (..., P)
    return torch.cat([torch.ones_like(x[..., :1]), x, second], dim=-1)


def naive_recurrent_based(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float, eps: float = 1e-6
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The recurrence on running sums of φ(k) vᵀ and φ(k): -> output (B, H, N, Dv), final sums."""
    fq, fk = taylor_features(q * scale), taylor_features(k)  # (B, H, N, F)
    B, H, N, F = fq.shape
    kv = q.new_zeros(B, H, F, v.shape[-1])  # (B, H, F, Dv)
    z = q.new_zeros(B, H, F)  # (B, H, F)
    outs = []
    for t in range(N):
        kv = kv + fk[:, :, t, :, None] * v[:, :, t, None, :]
        z = z + fk[:, :, t]
        numerator = (fq[:, :, t, None, :] @ kv).squeeze(2)  # (B, H, Dv)
        outs.append(numerator / ((fq[:, :, t] * z).sum(-1, keepdim=True) + eps))
    return torch.stack(outs, dim=2), (kv, z)


def recurrent_step_based(
    q: Tensor, k: Tensor, v: Tensor, state: tuple[Tensor, Tensor], *, scale: float, eps: float = 1e-6
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One decoding step: q, k (B, H, 1, d), v (B, H, 1, Dv); state (kv (B, H, F, Dv), z (B, H, F))."""
    fq, fk = taylor_features(q * scale), taylor_features(k)  # (B, H, 1, F)
    kv = state[0] + fk.transpose(-2, -1) @ v  # (B, H, F, Dv)
    z = state[1] + fk.squeeze(2)  # (B, H, F)
    denominator = (fq.squeeze(2) * z).sum(-1)[..., None, None]  # (B, H, 1, 1)
    return (fq @ kv) / (denominator + eps), (kv, z)


def chunk_based(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    eps: float = 1e-6,
    chunk_size: int = 64,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """The chunked parallel form: q, k (B, H, N, d), v (B, H, N, Dv) -> (B, H, N, Dv); padded keys
    (key_padding_mask (B, N), True = padding) count for nothing."""
    fq, fk = taylor_features(q * scale), taylor_features(k)  # (B, H, N, F)
    chunk = max(chunk_size, fq.shape[-1])  # C >= F keeps the chunk states within O(N·F)
    return causal_linear_attention(fq, fk, v, chunk, eps, None, key_padding_mask)
