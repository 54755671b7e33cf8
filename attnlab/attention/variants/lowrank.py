"""`lowrank`: Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity".

Keys and values are projected along the sequence dimension to k rows by learned matrices E and F,
then queries attend to those k "summary" keys:

    out = softmax(q (Eᵀk)ᵀ / √d) · (Fᵀv)        E, F: (max_len, k), shared across heads and batch

O(N·k·d) time, O(N·k) memory.

- Any key length up to max_len works: the projections are sliced to their first Nk rows (inputs are
  never padded to max_len). Longer key sequences are an error.
- Padded keys and values are zeroed BEFORE the projection, and the projection is divided by
  √(number of real keys). With E, F initialised N(0, 1), a projected key then has the statistics of
  a single key whatever the length (so outputs are well scaled at init, like LeCun-normal on the
  fan-in), and a right-padded sequence gives exactly the output of the same sequence unpadded.
  A sequence with no real key gives zeros.
- Causal masking is not supported (each projected row mixes every position); keys may be longer or
  shorter than the queries (cross attention). Computed in fp32 whatever the input dtype.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import Attention, Capabilities, Range, fp32_accumulation, zero_padded_keys
from attnlab.attention.registry import register_attention


@register_attention("lowrank")
class LowRankAttention(Attention):
    """Linformer: softmax attention over k learned projections of the keys and values."""

    complexity = "O(N·k·d)"
    capabilities = Capabilities(causal=False, key_padding_mask=True, cross=True, incremental=False)
    reference_tolerance = None  # a different model (learned projections), not an approximation of `full`

    def __init__(
        self, *, max_len: int, k: Annotated[int, Range(ge=1, max_len_ratio=1)] = 64, share_kv: bool = False
    ):
        super().__init__()
        self.k, self.share_kv, self.max_len = k, share_kv, max_len
        self.proj_k = nn.Parameter(torch.randn(max_len, k))  # E (max_len, k)
        self.proj_v = None if share_kv else nn.Parameter(torch.randn(max_len, k))  # F (max_len, k)

    @fp32_accumulation
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        nk = k.shape[-2]
        if nk > self.max_len:
            raise ValueError(
                f"lowrank attention got {nk} keys but its projections have model.max_len={self.max_len} rows; "
                f"raise model.max_len to >= {nk} or truncate the inputs"
            )
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 accumulation for half inputs
        keys = zero_padded_keys(k.to(acc), key_padding_mask)  # (B, H, Nk, D)
        values = zero_padded_keys(v.to(acc), key_padding_mask)  # (B, H, Nk, Dv)
        if key_padding_mask is None:
            real = torch.full((k.shape[0],), float(nk), device=k.device, dtype=acc)  # (B,)
        else:
            real = (~key_padding_mask).sum(dim=-1).to(acc).clamp_min(1.0)  # (B,) real keys per sequence
        norm = real.rsqrt()[:, None, None, None]  # (B, 1, 1, 1)
        proj_k = self.proj_k[:nk].to(acc)  # (Nk, k)
        proj_v = proj_k if self.proj_v is None else self.proj_v[:nk].to(acc)  # (Nk, k)
        keys = (proj_k.T @ keys) * norm  # (B, H, k, D)
        values = (proj_v.T @ values) * norm  # (B, H, k, Dv)
        # softmax(q keysᵀ / √d) values, through the fused kernel: the (Nq, k) weights are never stored.
        return F.scaled_dot_product_attention(q.to(acc), keys, values).to(q.dtype)  # (B, H, Nq, Dv)
