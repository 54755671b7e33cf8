"""`deltanet`: linear attention with the delta rule (Schlag et al. 2021, "Linear Transformers Are
Secretly Fast Weight Programmers"; chunked training after Yang et al. 2024, "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length").

The (D, Dv) state is corrected towards each new value instead of only added to:
S_t = S_{t-1} + β_t k_t (v_t - S_{t-1}ᵀ k_t)ᵀ, o_t = q_tᵀ S_t / √d, with the writing strength
β_t = sigmoid(beta_t) projected by the layer from the token (gate `beta`, one per head). q and k go
through SiLU then L2 normalisation first (qk_silu, qk_norm: fla's DeltaNet defaults qk_activation=silu, qk_norm=l2; with
|k| = 1 and β in (0, 1) each step is a contraction, the stability condition of the delta rule).
Same recurrence as fla's `delta_rule_recurrence` on the normalised q, k; differences: output_norm=true
(default) RMS-normalises each head's output (fla's layer: o_norm; output_norm=false is exactly the op).
Forms: chunked WY/UT (ops/delta_rule/chunk.py), recurrent step on a (D, Dv) fp32 state, naive
loop (tests).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.base import GateSpec, Range
from attnlab.attention.ops.delta_rule import chunk_delta_rule, recurrent_step_delta_rule
from attnlab.attention.ops.norms import unit_norm
from attnlab.attention.recurrent import RecurrentAttention
from attnlab.attention.registry import register_attention


def normalise_qk(q: Tensor, k: Tensor, silu: bool, l2: bool) -> tuple[Tensor, Tensor]:
    """The delta rule's q, k: SiLU when `silu`, then unit L2 norm per head vector when `l2`
    (ops/norms.py: F.normalize, eps 1e-6)."""
    if l2:
        return unit_norm(q, silu=silu, eps=1e-6), unit_norm(k, silu=silu, eps=1e-6)
    return (F.silu(q), F.silu(k)) if silu else (q, k)


@register_attention("deltanet")
class DeltaNet(RecurrentAttention):
    """Linear attention whose state is updated by the delta rule (DeltaNet)."""

    complexity = "O(N·C·d + N·d²)"
    gates = {"beta": GateSpec()}

    def __init__(
        self,
        *,
        qk_silu: bool = True,
        qk_norm: bool = True,
        output_norm: bool = True,
        chunk_size: Annotated[int, Range(ge=1)] = 32,
    ):
        super().__init__()
        self.qk_silu, self.qk_norm = qk_silu, qk_norm
        self.output_norm, self.chunk_size = output_norm, chunk_size

    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        q, k = normalise_qk(q, k, self.qk_silu, self.qk_norm)
        return q, k, {"beta": torch.sigmoid(gates["beta"])}  # (B, H, N)

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        scale = q.shape[-1] ** -0.5
        return chunk_delta_rule(q, k, v, gates["beta"], scale=scale, chunk_size=self.chunk_size)[0]

    def recurrent_step(self, q, k, v, gates, S):
        return recurrent_step_delta_rule(q, k, v, gates["beta"], None, S, scale=q.shape[-1] ** -0.5)
