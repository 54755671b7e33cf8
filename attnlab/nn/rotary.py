"""RoPE (Su et al. 2021, "RoFormer"): q and k rotated by their position before any kernel.

Each pair of head dimensions (i, i + D/2) is a 2-D vector rotated by the angle position · θ_i,
θ_i = base^(-2i/D) (the GPT-NeoX "rotate half" layout). The score q_m·k_n then depends on the
positions only through m - n (RoPE's relative property), which is why the layer can apply it to q and
k for every variant, linear and recurrent ones included: the kernel never sees a position. Angles are
computed for the positions a call has, so nothing is sized by a maximum length.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.attention.alibi import alibi_slopes
from attnlab.errors import ConfigError


class Rotary(nn.Module):
    """Rotates x (B, H, N, D) by positions (N,) or (B, N); D must be even."""

    def __init__(self, head_dim: int, *, base: float):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(
                f"model.positional=rope rotates pairs of head dimensions, but the head dimension "
                f"(model.d_model / model.heads) is {head_dim}, odd; choose d_model and heads with an even quotient"
            )
        if not base > 1:
            raise ConfigError(f"model.rope_base={base} must be a number > 1; e.g. model.rope_base=10000")
        self.base = base
        frequencies = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """x (B, H, N, D) rotated by `positions` (N,) shared by the batch, or (B, N) per row."""
        angles = positions.to(torch.float32)[..., None] * self.frequencies  # (N, D/2) or (B, N, D/2)
        if angles.dim() == 3:
            angles = angles[:, None]  # (B, 1, N, D/2): broadcast over heads
        cos, sin = angles.cos(), angles.sin()
        acc = torch.promote_types(x.dtype, torch.float32)  # rotate in fp32: angles of long contexts
        first, second = x.to(acc).chunk(2, dim=-1)  # (B, H, N, D/2) each
        rotated = torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
        return rotated.to(x.dtype)  # (B, H, N, D)

    def extra_repr(self) -> str:
        return f"base={self.base:g}"


# The decoding state's count of tokens a layer has seen, per row (B,): the next token's RoPE position.
# Kept in the layer's state dict (batch in dim 0), so beam search reorders it with the kernel's state.
POSITION_KEY = "rope_position"


class LayerPositions(nn.Module):
    """What a self-attention layer does for `model.positional`: rope rotates q and k before the kernel
    (parallel pass: positions 0..N-1; decoding: the state's count), alibi hands the kernel its slopes
    as the keyword `alibi`; every other scheme does nothing here (absolute ones live in the embeddings)."""

    def __init__(self, scheme: str, *, heads: int, head_dim: int, rope_base: float, kernel: type):
        super().__init__()
        from attnlab.nn.positional import check_scheme

        check_scheme(scheme)
        self.scheme = scheme
        self.rotary = Rotary(head_dim, base=rope_base) if scheme == "rope" else None
        if scheme == "alibi":
            if not kernel.capabilities.alibi:
                raise alibi_refusal(kernel.name)
            self.register_buffer("slopes", alibi_slopes(heads), persistent=False)  # (H,)

    def rotate(self, q: Tensor, k: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q, k (B, H, N, D) at `positions` ((B, N); default 0..N-1), rotated under rope, else as they are."""
        if self.rotary is None:
            return q, k
        if positions is None:
            positions = torch.arange(q.shape[2], device=q.device)  # (N,)
        return self.rotary(q, positions), self.rotary(k, positions)

    def kernel_inputs(self) -> dict[str, Tensor]:
        """Keyword tensors for the kernel's forward and step: {"alibi": slopes (H,)} under alibi, else {}."""
        return {"alibi": self.slopes} if self.scheme == "alibi" else {}

    def start(self, state: dict[str, Tensor], batch: int, device) -> dict[str, Tensor]:
        """A kernel's initial state, plus the token count rope needs."""
        if self.rotary is None:
            return state
        return {**state, POSITION_KEY: torch.zeros(batch, dtype=torch.long, device=device)}

    def split(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
        """(the kernel's own state, the tokens seen per row (B,) or None)."""
        if self.rotary is None:
            return state, None
        kernel_state = {key: value for key, value in state.items() if key != POSITION_KEY}
        return kernel_state, state[POSITION_KEY]

    def advance(self, kernel_state: dict[str, Tensor], seen: Tensor | None) -> dict[str, Tensor]:
        """The layer's state after one more token."""
        return kernel_state if seen is None else {**kernel_state, POSITION_KEY: seen + 1}

    def extra_repr(self) -> str:
        return self.scheme


def alibi_refusal(name: str):
    """The one-line error for model.positional=alibi with a kernel that cannot take a bias."""
    from attnlab.attention.registry import variants_with

    able = ", ".join(variants_with("alibi"))
    return ConfigError(
        f"model.positional=alibi needs a kernel that takes a distance bias, and attention '{name}' does not "
        f"(Capabilities.alibi); choose attention= one of {able}, or model.positional=rope (every variant)"
    )
