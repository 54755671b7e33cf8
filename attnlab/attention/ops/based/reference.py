"""Based's linear part, the readable form (the test oracle): running sums of φ(k) vᵀ and φ(k), one
position at a time, and one decoding step, with φ the 2nd-order Taylor features (chunk.py
`taylor_features`; κ(q, k) = φ(q)·φ(k) = 1 + s + s²/2, s = scale · q·k). The chunked form: chunk.py."""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.attention.ops.based.chunk import taylor_features


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
