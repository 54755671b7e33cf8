"""The (gated) delta rule, the readable form (the test oracle): the recurrence one position at a time,
and one decoding step.

    S_t = e^{g_t} S_{t-1}                     (gated DeltaNet; DeltaNet: g = 0)
    S_t = S_t + β_t k_t (v_t - S_tᵀ k_t)ᵀ      o_t = (scale · q_t)ᵀ S_t

Same recurrence as fla's `delta_rule_recurrence` and `naive_recurrent_gated_delta_rule`. The chunked
(WY/UT) form: chunk.py."""

from __future__ import annotations

import torch
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
