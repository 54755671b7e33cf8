"""`gated_deltaproduct`: gated DeltaProduct (Siems et al. 2025, "DeltaProduct: Improving State-Tracking
in Linear RNNs via Householder Products").

Gated DeltaNet takes one delta-rule step per token, so its state transition is one generalised
Householder reflection times a decay. DeltaProduct takes n_h steps per token, each with its own key,
value and β, so the transition is a product of n_h reflections (more expressive: it can track states
that a single reflection cannot). Here n_h = 2, the paper's main setting:

    S' = α_t S_{t-1}                      (Mamba-2's decay, once per token: as gated_deltanet)
    S'' = S' + β_t k_t (v_t - S'ᵀ k_t)ᵀ    (the token's first step: the layer's k, v)
    S_t = S'' + β2_t k2_t (v2_t - S''ᵀ k2_t)ᵀ   (its second step: gates k2, v2, beta2)
    o_t = q_tᵀ S_t / √d

The second key and value are projections of the token the layer owns (gates `k2`, `v2`, one vector per
head), and so are β, β2 and the decay input g. Both keys get gated_deltanet's SiLU + L2 normalisation.
The chunked form is the delta rule's own chunked op run over the 2N interleaved steps
(k_1, k2_1, k_2, k2_2, ...) with the decay on each token's first step and the query read at its last:
exactly the recurrence above, at the cost of a sequence twice as long. Same recurrence as fla's
`naive_recurrent_gated_delta_product` with num_householder=2 (tests/attention/test_fla_reference.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.attention.base import GateSpec
from attnlab.attention.ops.delta_rule import chunk_delta_rule, recurrent_step_delta_rule
from attnlab.attention.registry import register_attention
from attnlab.attention.variants.deltanet import normalise_qk
from attnlab.attention.variants.gated_deltanet import GatedDeltaNet

STEPS = 2  # Householder steps per token (n_h)


def interleave(first: Tensor, second: Tensor) -> Tensor:
    """(B, H, N, ·) twice -> (B, H, 2N, ·): first_1, second_1, first_2, second_2, ..."""
    return torch.stack([first, second], dim=3).flatten(2, 3)


@register_attention("gated_deltaproduct")
class GatedDeltaProduct(GatedDeltaNet):
    """Gated DeltaNet with two delta-rule (Householder) steps per token (gated DeltaProduct, n_h = 2)."""

    complexity = "O(N·C·d + N·d²)"
    gates = {
        "g": GateSpec(),
        "beta": GateSpec(),
        "beta2": GateSpec(),
        "k2": GateSpec(per_dim=True),
        "v2": GateSpec(per_dim=True),
    }

    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        q, k, shared = super().prepare(q, k, {"g": gates["g"], "beta": gates["beta"]})
        _, k2 = normalise_qk(gates["k2"], gates["k2"], self.qk_silu, self.qk_norm)
        # Both keys travel as one (B, H, N, 2D) tensor, so a padded token zeroes both (identity steps).
        keys = torch.cat([k, k2], dim=-1)
        return q, keys, {**shared, "beta2": torch.sigmoid(gates["beta2"]), "v2": gates["v2"]}

    def expanded(self, q: Tensor, keys: Tensor, v: Tensor, gates: dict[str, Tensor]):
        """The 2N interleaved steps: q (read at each token's second step only), k, v, β, g."""
        D = q.shape[-1]
        k, k2 = keys[..., :D], keys[..., D:]
        q2 = interleave(torch.zeros_like(q), q)  # (B, H, 2N, D)
        g = gates["g"]
        return (
            q2,
            interleave(k, k2),
            interleave(v, gates["v2"]),
            interleave(gates["beta"], gates["beta2"]),
            interleave(g, torch.zeros_like(g)),  # the decay once per token, on its first step
        )

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        q2, k2, v2, beta2, g2 = self.expanded(q, k, v, gates)
        scale = q.shape[-1] ** -0.5
        out = chunk_delta_rule(q2, k2, v2, beta2, g2, scale=scale, chunk_size=self.chunk_size)[0]
        return out[:, :, STEPS - 1 :: STEPS]  # (B, H, N, Dv): each token's output after its last step

    def recurrent_step(self, q, k, v, gates, S):
        D, scale = q.shape[-1], q.shape[-1] ** -0.5
        _, S = recurrent_step_delta_rule(q, k[..., :D], v, gates["beta"], gates["g"], S, scale=scale)
        return recurrent_step_delta_rule(q, k[..., D:], gates["v2"], gates["beta2"], None, S, scale=scale)
