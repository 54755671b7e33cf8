"""A deliberately wrong attention plugin: it declares `causal=True` but ignores the causal flag, so
every output sees the future (what xformers' Nyström and Global attention did). The shipped
conformance suite must fail it on causality: `python -m attnlab.check leaky`.

Installed in the tests through its own entry-point metadata (tests/conftest.py, LEAKY_SITE), only
in the subprocess that checks it, so the repository's own conformance run never sees it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnlab import Attention, Capabilities
from attnlab.attention.base import allowed_keys


class LeakyAttention(Attention):
    """Softmax attention that honours padding but not `causal`."""

    complexity = "O(N²·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=True, incremental=False)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        self.check_request(q, k, causal=causal, key_padding_mask=key_padding_mask)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
        allowed = allowed_keys(  # the bug: causal=False whatever was asked
            q.shape[-2], k.shape[-2], causal=False, key_padding_mask=key_padding_mask, device=q.device
        )
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        if allowed is not None:
            weights = weights.masked_fill(~allowed, 0.0)  # fully padded rows: zeros
        return weights @ v  # (B, H, Nq, Dv)
