"""Gate tensors for a gated kernel called without a layer (the conformance suite, the bench's
`target=attention`): KeyDerivedGates stands in for the layer's gate projections.

Each declared gate is a fixed random linear map of the KEY at the same position (seeded, so two
wrappers agree): a per-token function of the sequence, as the layer's projections of the input are.
So the wrapped kernel keeps every property the suite checks — gates at position t depend on token t
alone (causality), decoding step by step sees the same gates as the parallel pass, beams reorder
with their tokens — with data-dependent gates exercised rather than constants.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnlab.attention.base import Attention, State


class KeyDerivedGates(nn.Module):
    """kernel(q, k, v, ...) -> kernel(q, k, v, ..., **gates(k)); step likewise."""

    def __init__(self, kernel: Attention, *, seed: int = 0, scale: float = 1.0):
        super().__init__()
        self.kernel, self.seed, self.scale = kernel, seed, scale

    def gates(self, k: Tensor) -> dict[str, Tensor]:
        """k (B, H, N, D) -> {name: (B, H, N) or (B, H, N, D)}: k @ W_name / √D, W_name ~ N(0, 1)."""
        D = k.shape[-1]
        out = {}
        for i, (name, spec) in enumerate(sorted(type(self.kernel).gates.items())):
            generator = torch.Generator().manual_seed(self.seed + i)
            weight = torch.randn(D, D if spec.per_dim else 1, generator=generator, device="cpu")  # (D, D|1)
            gate = (
                k @ weight.to(device=k.device, dtype=k.dtype) * (self.scale / math.sqrt(D))
            )  # (B, H, N, D|1)
            out[name] = gate if spec.per_dim else gate.squeeze(-1)
        return out

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        return self.kernel(q, k, v, causal=causal, key_padding_mask=key_padding_mask, **self.gates(k))

    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        return self.kernel.init_state(batch, heads, head_dim, device=device, dtype=dtype)

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: State) -> tuple[Tensor, State]:
        return self.kernel.step(q, k, v, state, **self.gates(k))

    def reorder_state(self, state: State, index: Tensor) -> State:
        return self.kernel.reorder_state(state, index)


def with_example_gates(kernel: Attention) -> Attention | KeyDerivedGates:
    """The kernel itself when it declares no gates, else wrapped in KeyDerivedGates."""
    return KeyDerivedGates(kernel) if type(kernel).gates else kernel


def random_gates(
    cls: type[Attention], batch: int, heads: int, length: int, head_dim: int, *, seed: int = 0
) -> dict[str, Tensor]:
    """Independent N(0, 1) gate tensors of the shapes `cls` declares (for tests of one call)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(spec.shape(batch, heads, length, head_dim), generator=generator)
        for name, spec in sorted(cls.gates.items())
    }
