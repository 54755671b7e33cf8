"""`rwkv7`: RWKV-7 "Goose" time mixing as an attention kernel (Peng et al. 2025, "RWKV-7 "Goose" with
Expressive Dynamic State Evolution").

A (D, Dv) state per head evolved by a diagonal-plus-low-rank (DPLR) transition, a generalised delta rule:

    S_t = diag(w_t) S_{t-1} + k̃_t v_tᵀ - (κ̂_t ⊙ a_t) (κ̂_tᵀ S_{t-1})        o_t = q_tᵀ S_t / √d

with, per key dimension, the decay w_t = exp(-0.6065 · σ(w-gate)) in [0.545, 1) (RWKV-7's bounded decay),
the in-context learning rate a_t = σ(a-gate), the normalised removal key κ̂_t = normalise(k_t ⊙ k_k) and
the write key k̃_t = k_t ⊙ (1 + (a_t - 1) ⊙ k_a) (k_k, k_a learned per head and dimension, initialised as
RWKV-7: 0.85 and 1). q plays RWKV's receptance r. w- and a-gates come from low-rank projections of the
token (rank `gate_rank`) the layer owns. The op is fla's generalised delta rule `dplr_recurrence`
(α = -κ̂, β = κ̂ ⊙ a; tests/attention/test_fla_reference.py); chunked form: ops/kda/chunk.py chunk_dplr.
Differences from RWKV-7's block: q·k scaled by 1/√d (as fla's dplr op), RWKV's token shift, bonus term
(r·(k ⊙ r_k)) v and group norm belong to the layer (model.token_shift, output_norm=true here).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import GateSpec, Range, low_rank_projection
from attnlab.attention.ops.kda import chunk_dplr, recurrent_step_dplr
from attnlab.attention.recurrent import RecurrentAttention
from attnlab.attention.registry import register_attention

DECAY_SCALE = 0.6065306597126334  # e^-0.5: RWKV-7's log decay is -e^-0.5 · σ(·), so w >= e^{-0.607}


@register_attention("rwkv7")
class RWKV7(RecurrentAttention):
    """RWKV-7's DPLR state update: decay per dimension, then a delta-rule replacement at a learned key."""

    complexity = "O(N·C·d + N·d²)"
    gates = {"w": GateSpec(per_dim=True), "a": GateSpec(per_dim=True)}

    def __init__(
        self,
        *,
        heads: int,
        head_dim: int,
        gate_rank: Annotated[int, Range(ge=1)] = 16,
        output_norm: bool = True,
        # 32: RWKV-7's decay is at least e^-0.61 a step, so a chunk's factors stay within e^20 and the
        # chunked op always takes its matmul route (ops/kda/chunk.py pair_blocks), whose in-chunk products
        # grow as C² (32 against 64: docs/measurements.md, benchmarks/recurrent_family.py --chunk-sizes)
        chunk_size: Annotated[int, Range(ge=1)] = 32,
    ):
        super().__init__()
        self.gate_rank, self.output_norm, self.chunk_size = gate_rank, output_norm, chunk_size
        self.k_k = nn.Parameter(torch.full((heads, head_dim), 0.85))  # (H, D) removal-key mix
        self.k_a = nn.Parameter(torch.ones(heads, head_dim))  # (H, D) how much a scales the write key

    def gate_projection(self, name: str, d_model: int, heads: int, head_dim: int) -> nn.Module:
        # Low rank, as RWKV-7's w/a LoRAs: d_model -> gate_rank -> heads·head_dim.
        return low_rank_projection(d_model, self.gate_rank, heads * head_dim)

    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        a = torch.sigmoid(gates["a"])  # (B, H, N, D) in-context learning rate
        removal = F.normalize(k * self.k_k.to(k.dtype)[:, None, :], dim=-1, eps=1e-6)  # κ̂ (B, H, N, D)
        write = k * (1 + (a - 1) * self.k_a.to(k.dtype)[:, None, :])  # k̃
        g = -DECAY_SCALE * torch.sigmoid(gates["w"])  # (B, H, N, D) log decay in (-0.61, 0)
        # The write key, β = κ̂ ⊙ a and α = -κ̂ travel as one (B, H, N, 3D) key, so a padded token zeroes
        # all three (an identity step: nothing written, nothing removed).
        return q, torch.cat([write, removal * a, -removal], dim=-1), {"g": g}

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        write, beta, alpha = k.chunk(3, dim=-1)
        scale = q.shape[-1] ** -0.5
        return chunk_dplr(q, write, v, alpha, beta, gates["g"], scale=scale, chunk_size=self.chunk_size)[0]

    def recurrent_step(self, q, k, v, gates, S):
        write, beta, alpha = k.chunk(3, dim=-1)
        return recurrent_step_dplr(q, write, v, alpha, beta, gates["g"], S, scale=q.shape[-1] ** -0.5)
