"""`linear`: Katharopoulos et al. 2020, "Transformers are RNNs".

softmax(q·k) is replaced by phi(q)·phi(k) with a positive feature map phi, so

    out_i = phi(q_i) · Σ_j phi(k_j) v_jᵀ  /  phi(q_i) · Σ_j phi(k_j)

costs O(N·d²) instead of O(N²·d); the computation is in attention/ops/linear/chunk.py (hand-written
backwards). Causal mode runs chunk by chunk: inside a chunk of C positions a masked C x C product,
across chunks the prefix sums of phi(k) vᵀ. With C >= d the chunk states take (N/C)·d² <= N·d memory,
so no (N, d, d) tensor is ever materialised. Sums are accumulated in fp32 whatever the input dtype;
decoding keeps the running sums as its state (O(1) per generated token).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities, Range, State, fp32_accumulation
from attnlab.attention.ops.linear.chunk import (
    causal_linear_attention,
    linear_attention,
    running_outer_sum,
    sum_attention,
)
from attnlab.attention.registry import register_attention


class EluPlusOne(torch.autograd.Function):
    """phi(x) = elu(x) + 1, with a cheaper backward: phi'(x) = 1 for x > 0 and exp(x) = phi(x)
    otherwise, i.e. min(phi(x), 1) — one clamp and one multiply instead of aten's elu_backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = F.elu(x).add_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return grad * y.clamp(max=1.0)


FEATURE_MAPS = {
    "elu": EluPlusOne.apply,
    "relu": F.relu,
}


@register_attention("linear")
class LinearAttention(Attention):
    """Kernelised linear attention with a positive feature map (elu+1 by default)."""

    complexity = "O(N·d²)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=True, incremental=True)
    reference_tolerance = None  # a different model (no softmax): checked against its RNN form instead

    def __init__(
        self,
        *,
        feature_map: Literal["elu", "relu"] = "elu",
        eps: Annotated[float, Range(gt=0)] = 1e-6,
        chunk_size: Annotated[int, Range(ge=1)] = 64,
    ):
        super().__init__()
        self.feature_map, self.eps, self.chunk_size = feature_map, eps, chunk_size
        self.phi = FEATURE_MAPS[feature_map]

    @fp32_accumulation
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        acc = torch.promote_types(q.dtype, torch.float32)  # at least fp32 accumulation (fp64 stays fp64)
        q32, k32, v32 = q.to(acc), k.to(acc), v.to(acc)
        # The kernels apply (and differentiate) phi themselves and zero padded keys' features.
        if causal:
            # (B, H, N, Dv)
            out = causal_linear_attention(
                q32, k32, v32, self._chunk(q), self.eps, self.feature_map, key_padding_mask
            )
        else:  # (B, H, Nq, Dv)
            out = linear_attention(q32, k32, v32, self.eps, self.feature_map, key_padding_mask)
        return out.to(q.dtype)

    def _chunk(self, q: Tensor) -> int:
        return max(self.chunk_size, q.shape[-1])  # C >= d keeps the chunk states within O(N·d)

    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        return {
            "kv": torch.zeros(
                batch, heads, head_dim, head_dim, device=device, dtype=torch.float32
            ),  # (B, H, D, Dv)
            "k_sum": torch.zeros(batch, heads, head_dim, device=device, dtype=torch.float32),  # (B, H, D)
        }

    @fp32_accumulation
    def step(self, q: Tensor, k: Tensor, v: Tensor, state: State) -> tuple[Tensor, State]:
        acc = state["kv"].dtype  # fp32 state (init_state), whatever the input dtype
        phi_q, phi_k = self.phi(q.to(acc)), self.phi(k.to(acc))  # (B, H, 1, D)
        kv = running_outer_sum(state["kv"], phi_k, v.to(acc))  # (B, H, D, Dv)
        k_sum = state["k_sum"] + phi_k.squeeze(2)  # (B, H, D)
        denominator = (phi_q * k_sum.unsqueeze(2)).sum(-1, keepdim=True)  # (B, H, 1, 1)
        out = (phi_q @ kv) / (denominator + self.eps)  # (B, H, 1, Dv)
        return out.to(q.dtype), {"kv": kv, "k_sum": k_sum}

    # ---- cross attention while decoding: the memory's sums, computed once per source ----------------
    @fp32_accumulation
    def memory_state(self, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> State:
        acc = torch.promote_types(k.dtype, torch.float32)
        phi_k = self.phi(k.to(acc))  # (B, H, Nk, D)
        if key_padding_mask is not None:  # padded keys count for nothing
            phi_k = phi_k.masked_fill(key_padding_mask[:, None, :, None], 0.0)
        return {"kv": phi_k.transpose(-2, -1) @ v.to(acc), "k_sum": phi_k.sum(2)}  # (B, H, D, Dv), (B, H, D)

    @fp32_accumulation
    def attend_memory(self, q: Tensor, memory: State) -> Tensor:
        return sum_attention(self.phi(q.to(memory["kv"].dtype)), memory, self.eps).to(q.dtype)
