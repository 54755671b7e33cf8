"""`mamba2`: Mamba-2's state-space dual (SSD) layer as an attention kernel (Dao and Gu 2024,
"Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality").

SSD is linear attention whose (D, Dv) state decays by one scalar per head and token, and whose writes are
scaled by the step size: with C = q, B = k, x = v (the layer's projections, as fla's Mamba2 layer maps
them),

    Δ_t = softplus(dt_t + dt_bias_h)      log a_t = -exp(A_log_h) · Δ_t
    S_t = a_t S_{t-1} + Δ_t k_t v_tᵀ       o_t = q_tᵀ S_t / √d + D_h v_t

dt_t is a gate the layer projects from the token (one per head); A_log, dt_bias and the skip D are
learned per head and initialised as Mamba-2 (A ~ U(1, 16), Δ log-uniform in [dt_min, dt_max], D = 1).
The op is fla's `simple_gla` (scalar decay): with skip=false and output_norm=false this kernel is
exactly `naive_recurrent_simple_gla(q, Δ·k, v, log a)` (tests/attention/test_fla_reference.py).
Differences from the Mamba-2 block: q·k is scaled by 1/√d as in every attnlab kernel (Mamba-2 does not
scale C·B; its gated RMSNorm after the mixer plays that part, here output_norm=true), and the short
convolution and the output gate belong to the layer (model.short_conv, model.output_gate), not the
kernel. Forms: chunked (ops/gated_linear/chunk.py chunk_gla, scalar decay), recurrent step on a (D, Dv) fp32
state, naive loop (ops/gated_linear/reference.py, tests).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import GateSpec, Range, State
from attnlab.attention.ops.gated_linear import chunk_gla, recurrent_step_gla
from attnlab.attention.recurrent import RecurrentAttention, step_size_bias
from attnlab.attention.registry import register_attention


@register_attention("mamba2")
class Mamba2(RecurrentAttention):
    """Mamba-2's SSD: linear attention with a scalar data-dependent decay per head and step-scaled writes."""

    complexity = "O(N·d²)"
    gates = {"dt": GateSpec()}

    def __init__(
        self,
        *,
        heads: int,
        dt_min: Annotated[float, Range(gt=0)] = 0.001,
        dt_max: Annotated[float, Range(gt=0)] = 0.1,
        skip: bool = True,
        output_norm: bool = True,
        chunk_size: Annotated[int, Range(ge=1)] = 64,
    ):
        super().__init__()
        self.dt_min, self.dt_max, self.skip = dt_min, dt_max, skip
        self.output_norm, self.chunk_size = output_norm, chunk_size
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(1, 16).log())  # (H,): A = -exp(A_log)
        self.dt_bias = nn.Parameter(step_size_bias(heads, dt_min, dt_max))
        self.D = nn.Parameter(torch.ones(heads)) if skip else None  # (H,) the skip connection x -> y

    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        dt = F.softplus(gates["dt"] + self.dt_bias.to(q.dtype)[:, None])  # (B, H, N) step size Δ > 0
        g = -self.A_log.to(q.dtype).exp()[:, None] * dt  # (B, H, N) log decay <= 0
        return q, k * dt[..., None], {"g": g}  # Δ scales the write: S += Δ k vᵀ

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        out = chunk_gla(q, k, v, gates["g"], scale=q.shape[-1] ** -0.5, chunk_size=self.chunk_size)[0]
        return out  # (B, H, N, Dv)

    def recurrent_step(self, q, k, v, gates, S):
        return recurrent_step_gla(q, k, v, gates["g"], S, scale=q.shape[-1] ** -0.5)

    def with_skip(self, out: Tensor, v: Tensor) -> Tensor:
        """+ D_h v_t: Mamba-2's skip, added after the kernel's normalisation (it is a residual path)."""
        if self.D is None:
            return out
        return out + (self.D.to(v.dtype)[:, None, None] * v).to(out.dtype)  # (B, H, N, Dv)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
        return self.with_skip(super().forward(q, k, v, **kwargs), v)  # the gates checked by the base

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: State, **gates: Tensor) -> tuple[Tensor, State]:
        out, state = super().step(q, k, v, state, **gates)
        return self.with_skip(out, v), state
