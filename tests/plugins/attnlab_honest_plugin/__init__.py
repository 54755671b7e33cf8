"""A plugin written as a plugin author should be able to write one: it declares its capabilities
honestly (causal and cross attention, no key padding masks), honours `causal`, and never calls
`check_request`. The framework refuses what it does not declare (a padding mask, causal cross
attention) before its forward runs, so it passes `python -m attnlab.check honest`.

Installed in the tests through its own entry-point metadata (tests/conftest.py, HONEST_SITE), only
where a test activates it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnlab import Attention, Capabilities
from attnlab.attention.base import allowed_keys


class HonestAttention(Attention):
    """Softmax attention, causal or not; only the maths."""

    complexity = "O(N²·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=False, cross=True, incremental=False)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
        allowed = allowed_keys(
            q.shape[-2], k.shape[-2], causal=causal, key_padding_mask=None, device=q.device
        )
        if allowed is not None:  # (1, 1, Nq, Nk)
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) @ v  # (B, H, Nq, Dv)
