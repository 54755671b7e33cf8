"""Gated linear attention, the readable form (the test oracle): the recurrence one position at a time,
and one decoding step.

    S_t = exp(g_t) ⊙ S_{t-1} + k_t v_tᵀ          o_t = (scale · q_t)ᵀ S_t

g (B, H, N) one log decay per head and token, or (B, H, N, D) one per key dimension too. Same recurrence
as fla's `naive_recurrent_gla` / `naive_recurrent_simple_gla`. The chunked form: chunk.py."""

from __future__ import annotations

import torch
from torch import Tensor


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
