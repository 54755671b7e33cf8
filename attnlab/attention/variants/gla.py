"""`gla`: gated linear attention (Yang et al. 2023, "Gated Linear Attention Transformers with
Hardware-Efficient Training").

Linear attention whose (D, Dv) state decays by a data-dependent gate per key dimension:
S_t = diag(α_t) S_{t-1} + k_t v_tᵀ, o_t = q_tᵀ S_t / √d. α_t comes from the token: the layer projects
its input through a low-rank map (gate `g`, rank `gate_rank`, as fla's GLA layer), and here
log α_t = max(logsigmoid(g_t) / gate_temperature, min_log_decay) (fla's gate_logit_normalizer = 16
and clamp_min). The clamp keeps the chunked form's in-chunk factors within fp32 range (|log α| <= 5
over sub-blocks of 16 positions; ops/gated_linear/chunk.py). Same recurrence as fla's
`naive_recurrent_gla`; differences: output_norm=true (default) RMS-normalises each head's output
(fla's layer has an RMSNorm there; output_norm=false is exactly the op), and the clamp is on by
default (fla's clamp_min is off by default). Forms: chunked (ops/gated_linear/chunk.py chunk_gla), recurrent
step on a (D, Dv) fp32 state, naive loop (tests).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention import cpu
from attnlab.attention.base import GateSpec, Range, low_rank_projection
from attnlab.attention.ops.gated_linear import chunk_gla, recurrent_step_gla
from attnlab.attention.recurrent import RecurrentAttention
from attnlab.attention.registry import register_attention


class LogDecayGate(torch.autograd.Function):
    """x -> max(logsigmoid(x) / temperature, floor), with its derivative σ(-x) / temperature where
    not clamped written out: one pass each way in C for contiguous float32 CPU tensors
    (cpu/elementwise.c), else three in-place PyTorch passes forward, six back (autograd: ~8
    with buffers)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, temperature: float, floor: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.temperature, ctx.floor = temperature, floor
        c = cpu.kernels_for(x)
        if c is not None:
            return c.log_decay_gate(x, temperature, floor)
        return F.logsigmoid(x).div_(temperature).clamp_(min=floor)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        grad = grad.contiguous()
        c = cpu.kernels_for(grad, x)
        if c is not None:
            return c.log_decay_gate_backward(grad, x, ctx.temperature, ctx.floor), None, None
        below = F.logsigmoid(x).div_(ctx.temperature) < ctx.floor  # clamped: no gradient (as clamp)
        return torch.sigmoid(-x).mul_(grad).div_(ctx.temperature).masked_fill_(below, 0.0), None, None


@register_attention("gla")
class GatedLinearAttention(RecurrentAttention):
    """Linear attention with a data-dependent decay per key dimension (GLA)."""

    complexity = "O(N·d²)"
    gates = {"g": GateSpec(per_dim=True)}

    def __init__(
        self,
        *,
        gate_rank: Annotated[int, Range(ge=1)] = 16,
        gate_temperature: Annotated[float, Range(gt=0)] = 16.0,
        min_log_decay: Annotated[float, Range(ge=-5, lt=0)] = -4.0,
        output_norm: bool = True,
        chunk_size: Annotated[int, Range(ge=1)] = 64,
    ):
        super().__init__()
        self.gate_rank, self.gate_temperature, self.min_log_decay = gate_rank, gate_temperature, min_log_decay
        self.output_norm, self.chunk_size = output_norm, chunk_size

    def gate_projection(self, name: str, d_model: int, heads: int, head_dim: int) -> nn.Module:
        # Low rank, as fla's GLA: d_model -> gate_rank -> heads·head_dim.
        return low_rank_projection(d_model, self.gate_rank, heads * head_dim)

    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        g = LogDecayGate.apply(gates["g"], self.gate_temperature, self.min_log_decay)  # (B, H, N, D)
        return q, k, {"g": g}

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        return chunk_gla(q, k, v, gates["g"], scale=q.shape[-1] ** -0.5, chunk_size=self.chunk_size)[0]

    def recurrent_step(self, q, k, v, gates, S):
        return recurrent_step_gla(q, k, v, gates["g"], S, scale=q.shape[-1] ** -0.5)
