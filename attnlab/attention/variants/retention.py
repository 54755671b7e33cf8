"""`retention`: RetNet's retention (Sun et al. 2023, "Retentive Network: A Successor to Transformer for
Large Language Models").

Linear attention without a feature map or normaliser, whose state decays by a fixed factor γ_h per
head: S_t = γ_h S_{t-1} + k_t v_tᵀ, o_t = q_tᵀ S_t / √d, i.e. out_i = Σ_{j<=i} γ_h^{i-j} (q_i·k_j/√d) v_j.
The head-wise schedule is RetNet's, γ_h = 1 - 2^-(first_exponent + exponent_step·h) (defaults 5 and 1:
γ from 1 - 1/32 up, a range of memory lengths across heads), identical to fla's `naive_retention`.
Difference from fla's op: output_norm=true (default) RMS-normalises each head's output per position,
RetNet's GroupNorm without its affine weight; output_norm=false is exactly fla's op. RetNet's xPos
rotation and swish output gate belong to the layer and are not part of this kernel. Forms: chunked
(ops/gated_linear/chunk.py chunk_gla), recurrent step on a (D, Dv) fp32 state, naive loop (tests).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from attnlab.attention.base import Range
from attnlab.attention.ops.gated_linear import chunk_gla, recurrent_step_gla
from attnlab.attention.recurrent import RecurrentAttention
from attnlab.attention.registry import register_attention
from attnlab.errors import ConfigError

# γ = 1 - 2^-e is exactly 1 in float32 (24-bit significand) once e > 24: the state would never decay.
MAX_EXPONENT = 24


def retnet_log_decays(
    heads: int,
    first_exponent: float = 5.0,
    exponent_step: float = 1.0,
) -> Tensor:
    """(heads,) log γ_h, γ_h = 1 - 2^-(first_exponent + exponent_step·h)."""
    exponents = first_exponent + exponent_step * torch.arange(heads, dtype=torch.float64)
    return torch.log1p(-torch.pow(2.0, -exponents)).float()


@register_attention("retention")
class Retention(RecurrentAttention):
    """Retention: linear attention with a fixed per-head exponential decay (RetNet)."""

    complexity = "O(N·d²)"

    def __init__(
        self,
        *,
        heads: int,
        first_exponent: Annotated[float, Range(gt=0, le=MAX_EXPONENT)] = 5.0,
        exponent_step: Annotated[float, Range(ge=0)] = 1.0,
        output_norm: bool = True,
        chunk_size: Annotated[int, Range(ge=1)] = 64,
    ):
        super().__init__()
        last = first_exponent + exponent_step * (heads - 1)
        if last > MAX_EXPONENT:
            step = (MAX_EXPONENT - first_exponent) / max(1, heads - 1)
            raise ConfigError(
                f"attention.first_exponent={first_exponent:g} and attention.exponent_step={exponent_step:g} give "
                f"head {heads - 1} the decay 1 - 2^-{last:g}, exactly 1 in float32 (no decay); keep "
                f"first_exponent + exponent_step x (heads - 1) <= {MAX_EXPONENT}, e.g. attention.exponent_step={step:.2g}"
            )
        self.first_exponent, self.exponent_step = first_exponent, exponent_step
        self.output_norm, self.chunk_size = output_norm, chunk_size
        self.register_buffer(
            "log_decay", retnet_log_decays(heads, first_exponent, exponent_step), persistent=False
        )

    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        B, H, N, _ = q.shape
        g = self.log_decay.to(q.dtype)[None, :, None].expand(B, H, N)  # (B, H, N) fixed per head
        return q, k, {"g": g}

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        return chunk_gla(q, k, v, gates["g"], scale=q.shape[-1] ** -0.5, chunk_size=self.chunk_size)[0]

    def recurrent_step(self, q, k, v, gates, S):
        return recurrent_step_gla(q, k, v, gates["g"], S, scale=q.shape[-1] ** -0.5)
