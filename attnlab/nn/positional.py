"""Which positional scheme a model uses (`model.positional`), and the absolute ones' embeddings.

    sinusoidal, learned   absolute: a (max_len, C) table added to the token embeddings; sequences are
                          limited to model.max_len positions
    rope                  rotates q and k in every self-attention layer (attnlab.nn.rotary), any variant
    alibi                 a per-head distance bias inside kernels that declare it (attnlab.attention.alibi)
    none                  no positional signal at all (NoPE: causal masking alone orders the tokens)

rope, alibi and none add nothing to the embeddings and size nothing by model.max_len, so a model
built with them accepts sequences of any length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError, did_you_mean

ABSOLUTE = ("sinusoidal", "learned")  # added to the token embeddings, a table of model.max_len rows
IN_LAYER = ("rope", "alibi")  # applied by every self-attention layer (attnlab.nn.MultiHeadAttention)
SCHEMES = (*ABSOLUTE, *IN_LAYER, "none")
ROPE_BASE = 10000.0  # RoFormer's θ base; model.rope_base


def check_scheme(kind: str) -> None:
    if kind not in SCHEMES:
        raise ConfigError(
            f"model.positional={kind!r} is unknown{did_you_mean(str(kind), SCHEMES)}; "
            f"choose one of {', '.join(SCHEMES)}"
        )


class PositionalEmbedding(nn.Module):
    """Sinusoidal (fixed) or learned absolute positions for lengths up to max_len; for the other
    schemes (rope, alibi, none) nothing: `add` returns the embeddings unchanged, at any length."""

    KINDS = SCHEMES

    def __init__(self, kind: str, max_len: int, d_model: int):
        super().__init__()
        check_scheme(kind)
        self.kind, self.max_len = kind, max_len
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(max_len, d_model) * 0.02)  # (max_len, C)
        elif kind == "sinusoidal":
            position = torch.arange(max_len).unsqueeze(1)  # (max_len, 1)
            frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))  # (C/2,)
            table = torch.zeros(max_len, d_model)
            table[:, 0::2] = torch.sin(position * frequency)
            table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
            self.register_buffer("table", table, persistent=False)

    @property
    def absolute(self) -> bool:
        return self.kind in ABSOLUTE

    def add(self, x: Tensor, offset: int = 0, *, positions: Tensor | None = None) -> Tensor:
        """x (B, N, C) at positions offset .. offset+N-1 (or at `positions` (B, N), e.g. each token's
        place in its packed document), plus their absolute positions (if any)."""
        if not self.absolute:
            return x
        if positions is None:
            return x + self(x.shape[1], offset)
        self(int(positions.max()) + 1)  # the length check
        return x + self.table[positions]  # (B, N, C)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Positions offset .. offset+length-1 -> (length, C) (absolute schemes only)."""
        if not self.absolute:
            raise ValueError(f"model.positional={self.kind} has no position table; use `add`")
        if offset + length > self.max_len:
            raise ConfigError(
                f"sequence of length {offset + length} exceeds model.max_len={self.max_len}; "
                "raise model.max_len, or shorten the inputs (data longer than model.max_len is truncated when loaded)"
            )
        return self.table[offset : offset + length]
