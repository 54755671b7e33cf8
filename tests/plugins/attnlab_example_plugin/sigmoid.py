"""`sigmoid`: Ramapuram et al. 2024, "Theory, Analysis, and Best Practices for Sigmoid Self-Attention".

The softmax is replaced by an element-wise sigmoid with a bias b (the paper uses b = -log n):

    out_i = Σ_j sigmoid(q_i·k_j/√d + b) v_j

Rows are not normalised, so there is no reduction across keys; O(N²·d) time. b = -log(max_len) by
default: it depends on the layer's maximum length, never on the actual sequence (which would let
the future length reach a causal output).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnlab import Attention, Capabilities
from attnlab.attention.base import allowed_keys


class SigmoidAttention(Attention):
    """Sigmoid attention: no softmax normalisation, a bias instead."""

    complexity = "O(N²·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=True, incremental=False)

    def __init__(self, *, max_len: int, bias: float | None = None):
        super().__init__()
        self.max_len = max_len
        self.bias = -math.log(max_len) if bias is None else bias

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        self.check_request(q, k, causal=causal, key_padding_mask=key_padding_mask)
        scores = (
            q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.shape[-1]) + self.bias
        )  # (B, H, Nq, Nk)
        weights = torch.sigmoid(scores)
        allowed = allowed_keys(
            q.shape[-2], k.shape[-2], causal=causal, key_padding_mask=key_padding_mask, device=q.device
        )
        if allowed is not None:
            weights = weights.masked_fill(~allowed, 0.0)  # (B, H, Nq, Nk)
        return (weights @ v.float()).to(q.dtype)  # (B, H, Nq, Dv)
