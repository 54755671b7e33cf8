"""`gated_deltanet`: the delta rule with a decay gate (Yang, Kautz and Hatamizadeh 2024, "Gated Delta
Networks: Improving Mamba2 with Delta Rule").

S_t = α_t S_{t-1} + β_t k_t (v_t - α_t S_{t-1}ᵀ k_t)ᵀ, o_t = q_tᵀ S_t / √d: DeltaNet's targeted
correction plus Mamba2's forgetting. Both gates come from the token through the layer (one per head):
β_t = sigmoid(beta_t), log α_t = -exp(A_log_h) · softplus(g_t + dt_bias_h), with A_log and dt_bias
learned per head and initialised as fla's GatedDeltaNet layer (A ~ U(0, 16), dt log-uniform in
[1e-3, 0.1]). q and k: SiLU then L2 normalisation (fla's defaults). Same recurrence as fla's
`naive_recurrent_gated_delta_rule`; differences: output_norm=true (default) RMS-normalises each head's
output (fla: a gated RMSNorm in the layer; output_norm=false is exactly the op). Forms: chunked WY/UT
with decays (ops/delta_rule/chunk.py), recurrent step on a (D, Dv) fp32 state, naive loop.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import GateSpec, Range
from attnlab.attention.ops.delta_rule import chunk_delta_rule, recurrent_step_delta_rule
from attnlab.attention.recurrent import RecurrentAttention, step_size_bias
from attnlab.attention.registry import register_attention
from attnlab.attention.variants.deltanet import normalise_qk


@register_attention("gated_deltanet")
class GatedDeltaNet(RecurrentAttention):
    """The delta rule with a data-dependent decay (gated DeltaNet)."""

    complexity = "O(N·C·d + N·d²)"
    gates = {"g": GateSpec(), "beta": GateSpec()}

    def __init__(
        self,
        *,
        heads: int,
        qk_silu: bool = True,
        qk_norm: bool = True,
        dt_min: Annotated[float, Range(gt=0)] = 0.001,
        dt_max: Annotated[float, Range(gt=0)] = 0.1,
        output_norm: bool = True,
        chunk_size: Annotated[int, Range(ge=1)] = 32,
    ):
        super().__init__()
        self.qk_silu, self.qk_norm, self.dt_min, self.dt_max = qk_silu, qk_norm, dt_min, dt_max
        self.output_norm, self.chunk_size = output_norm, chunk_size
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(0, 16).clamp_min(1e-4).log())  # (H,)
        self.dt_bias = nn.Parameter(step_size_bias(heads, dt_min, dt_max))

    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        q, k = normalise_qk(q, k, self.qk_silu, self.qk_norm)
        A, dt_bias = self.A_log.to(q.dtype).exp()[:, None], self.dt_bias.to(q.dtype)[:, None]  # (H, 1)
        g = -A * F.softplus(gates["g"] + dt_bias)  # (B, H, N) log decay <= 0
        return q, k, {"g": g, "beta": torch.sigmoid(gates["beta"])}

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        scale = q.shape[-1] ** -0.5
        return chunk_delta_rule(q, k, v, gates["beta"], gates["g"], scale=scale, chunk_size=self.chunk_size)[
            0
        ]

    def recurrent_step(self, q, k, v, gates, S):
        return recurrent_step_delta_rule(q, k, v, gates["beta"], gates["g"], S, scale=q.shape[-1] ** -0.5)
