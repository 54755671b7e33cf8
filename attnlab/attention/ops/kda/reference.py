"""The delta rule with a decay per key dimension (KDA) and its diagonal-plus-low-rank generalisation
(DPLR, RWKV-7), the readable forms (the test oracles): each recurrence one position at a time, and one
decoding step.

    S' = diag(e^{g_t}) S_{t-1}        S_t = S' + β_t k_t (v_t - S'ᵀ k_t)ᵀ        o_t = (scale · q_t)ᵀ S_t

Same recurrences as fla's `naive_recurrent_kda` and `dplr_recurrence`. The chunked forms: chunk.py."""

from __future__ import annotations

from collections.abc import Callable

import torch
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
    return run_steps(recurrent_step_kda, (q, k, v, beta, g), S, scale=scale)


def recurrent_step_dplr(
    q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor, g: Tensor, state: Tensor, *, scale: float
) -> tuple[Tensor, Tensor]:
    """S_t = diag(e^{g_t}) S_{t-1} + k_t v_tᵀ + β_t (α_tᵀ S_{t-1}), o_t = (scale q_t)ᵀ S_t: all of q, k, α, β,
    g (B, H, 1, D), v (B, H, 1, Dv), state (B, H, D, Dv). fla's `dplr_recurrence` (RWKV-7: α = -κ̂,
    β = κ̂ ⊙ a, so the state is first decayed, then its content at κ̂ replaced)."""
    read = alpha @ state  # (B, H, 1, Dv): α_tᵀ S_{t-1}, read before the decay
    S = state * g.transpose(-2, -1).exp() + k.transpose(-2, -1) @ v + beta.transpose(-2, -1) @ read
    return (q * scale) @ S, S


def naive_recurrent_dplr(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Tensor,
    beta: Tensor,
    g: Tensor,
    *,
    scale: float,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The DPLR recurrence one position at a time (the test oracle): -> (B, H, N, Dv), final state."""
    B, H, N, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1]) if initial_state is None else initial_state
    return run_steps(recurrent_step_dplr, (q, k, v, alpha, beta, g), S, scale=scale)


def run_steps(
    step: Callable[..., tuple[Tensor, Tensor]], inputs: tuple[Tensor, ...], state: Tensor, *, scale: float
) -> tuple[Tensor, Tensor]:
    """A recurrence run by its decoding step one position at a time, so the loop and the step cannot
    disagree: inputs (B, H, N, ·) each, sliced to (B, H, 1, ·) (β (B, H, N) to (B, H, 1)), state
    (B, H, D, Dv) -> outputs (B, H, N, Dv), final state."""
    outs = []
    for t in range(inputs[0].shape[2]):
        out, state = step(*(x[:, :, t : t + 1] for x in inputs), state, scale=scale)
        outs.append(out)
    return torch.cat(outs, dim=2), state
