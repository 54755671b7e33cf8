"""Absolute positional information, usable by every variant (added to token embeddings)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError


class PositionalEmbedding(nn.Module):
    """Sinusoidal (fixed) or learned absolute positions for lengths up to max_len."""

    KINDS = ("sinusoidal", "learned")

    def __init__(self, kind: str, max_len: int, d_model: int):
        super().__init__()
        if kind not in self.KINDS:
            raise ConfigError(f"model.positional={kind!r} is unknown; choose one of {list(self.KINDS)}")
        self.kind, self.max_len = kind, max_len
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(max_len, d_model) * 0.02)  # (max_len, C)
        else:
            position = torch.arange(max_len).unsqueeze(1)  # (max_len, 1)
            frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))  # (C/2,)
            table = torch.zeros(max_len, d_model)
            table[:, 0::2] = torch.sin(position * frequency)
            table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
            self.register_buffer("table", table, persistent=False)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Positions offset .. offset+length-1 -> (length, C)."""
        if offset + length > self.max_len:
            raise ConfigError(
                f"sequence of length {offset + length} exceeds model.max_len={self.max_len}; "
                "raise model.max_len, or shorten the inputs (data longer than model.max_len is truncated when loaded)"
            )
        return self.table[offset : offset + length]
