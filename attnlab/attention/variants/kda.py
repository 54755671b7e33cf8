"""`kda`: Kimi Delta Attention (Kimi Team 2025, "Kimi Linear: An Expressive, Efficient Attention
Architecture").

Gated DeltaNet with a decay per key dimension instead of one per head (GLA's fine-grained gate on the
delta rule): S' = diag(α_t) S_{t-1}, S_t = S' + β_t k_t (v_t - S'ᵀ k_t)ᵀ, o_t = q_tᵀ S_t / √d. Both gates
come from the token through the layer: β_t = sigmoid(beta_t) per head, and per key dimension
log α_t = -exp(A_log_h) · softplus(g_t + dt_bias), g from a low-rank projection (rank `gate_rank`, as
Kimi Linear's f_proj), A_log per head and dt_bias per head and dimension, initialised as gated_deltanet's.
q and k: SiLU then L2 normalisation. Same recurrence as fla's `naive_recurrent_kda`; differences:
output_norm=true (default) RMS-normalises each head's output (Kimi Linear: a gated RMSNorm in the
layer; output_norm=false is exactly the op). Forms: chunked (ops/kda/chunk.py, plain PyTorch), recurrent
step on a (D, Dv) fp32 state, naive loop (tests).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import GateSpec, Range, low_rank_projection
from attnlab.attention.ops.kda import chunk_kda, recurrent_step_kda
from attnlab.attention.recurrent import RecurrentAttention, step_size_bias
from attnlab.attention.registry import register_attention
from attnlab.attention.variants.deltanet import normalise_qk


@register_attention("kda")
class KimiDeltaAttention(RecurrentAttention):
    """The delta rule with a data-dependent decay per key dimension (Kimi Delta Attention)."""

    complexity = "O(N·C·d + N·d²)"
    gates = {"g": GateSpec(per_dim=True), "beta": GateSpec()}

    def __init__(
        self,
        *,
        heads: int,
        head_dim: int,
        gate_rank: Annotated[int, Range(ge=1)] = 16,
        dt_min: Annotated[float, Range(gt=0)] = 0.001,
        dt_max: Annotated[float, Range(gt=0)] = 0.1,
        output_norm: bool = True,
        chunk_size: Annotated[int, Range(ge=1)] = 32,
    ):
        super().__init__()
        self.gate_rank, self.dt_min, self.dt_max = gate_rank, dt_min, dt_max
        self.output_norm, self.chunk_size = output_norm, chunk_size
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(1, 16).log())  # (H,)
        self.dt_bias = nn.Parameter(step_size_bias((heads, head_dim), dt_min, dt_max))

    def gate_projection(self, name: str, d_model: int, heads: int, head_dim: int) -> nn.Module:
        if name == "beta":
            return super().gate_projection(name, d_model, heads, head_dim)
        # The decay input is low rank, as Kimi Linear's f_proj: d_model -> gate_rank -> heads·head_dim.
        return low_rank_projection(d_model, self.gate_rank, heads * head_dim)

    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        q, k = normalise_qk(q, k, silu=True, l2=True)
        A = self.A_log.to(q.dtype).exp()[:, None, None]  # (H, 1, 1)
        g = -A * F.softplus(gates["g"] + self.dt_bias.to(q.dtype)[:, None, :])  # (B, H, N, D) <= 0
        return q, k, {"g": g, "beta": torch.sigmoid(gates["beta"])}

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        scale = q.shape[-1] ** -0.5
        return chunk_kda(q, k, v, gates["beta"], gates["g"], scale=scale, chunk_size=self.chunk_size)[0]

    def recurrent_step(self, q, k, v, gates, S):
        return recurrent_step_kda(q, k, v, gates["beta"], gates["g"], S, scale=q.shape[-1] ** -0.5)
