"""`based`: Based (Arora et al. 2024, "Simple linear attention language models balance the
recall-throughput tradeoff"): linear attention with a 2nd-order Taylor feature map for global,
approximate recall, beside exact softmax attention over a small sliding window for precise local
recall.

    out = Taylor linear attention(q', k', v)  +  sliding-window softmax attention(q, k, v; window)

q' and k' are q and k projected per head to `feature_dim` (learned, no bias; fla's layer projects the
model input to feature_dim directly); the linear part is fla's `naive_parallel_based` on them
(κ = 1 + s + s²/2, s = q'·k'/√feature_dim, normalised, eps 1e-6; ops/based.py; 1 + f + f(f+1)/2 features:
153 for f = 16). The window part is `local` (its blocked kernel and rolling decoding state).
Difference from the paper: Based interleaves separate linear-attention and sliding-window layers
(and short convolutions); here one kernel sums both parts per head. window=0 leaves the linear part
alone, exactly fla's op. Decoding keeps the running feature sums and the rolling window: O(f²·d + w·d)
per sequence, whatever the length.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn

from attnlab.attention.base import Attention, Capabilities, Range, State, fp32_accumulation
from attnlab.attention.linear_kernels import linear_attention
from attnlab.attention.local import LocalAttention
from attnlab.attention.ops.based import chunk_based, recurrent_step_based, taylor_features
from attnlab.attention.registry import register_attention

EPS = 1e-6  # fla's normaliser


@register_attention("based")
class BasedAttention(Attention):
    """Taylor-feature linear attention plus a small sliding window of exact softmax attention."""

    complexity = "O(N·f²·d + N·w·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=False, incremental=True)

    def __init__(
        self,
        *,
        head_dim: int,
        feature_dim: Annotated[int, Range(ge=1)] = 16,
        window: Annotated[int, Range(ge=0)] = 64,
        chunk_size: Annotated[int, Range(ge=1)] = 64,
    ):
        super().__init__()
        self.feature_dim, self.window, self.chunk_size = feature_dim, window, chunk_size
        self.q_feature = nn.Linear(head_dim, feature_dim, bias=False)
        self.k_feature = nn.Linear(head_dim, feature_dim, bias=False)
        self.local = LocalAttention(window=window) if window else None

    def features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """(B, H, N, D) -> (B, H, N, feature_dim), in the inputs' (fp32) dtype."""
        return q @ self.q_feature.weight.to(q.dtype).T, k @ self.k_feature.weight.to(k.dtype).T

    @fp32_accumulation
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        self.check_request(q, k, causal=causal, key_padding_mask=key_padding_mask)
        acc = torch.promote_types(q.dtype, torch.float32)
        fq, fk = self.features(q.to(acc), k.to(acc))  # (B, H, N, f)
        scale = self.feature_dim**-0.5
        if causal:
            out = chunk_based(fq, fk, v.to(acc), scale=scale, eps=EPS, chunk_size=self.chunk_size,
                              key_padding_mask=key_padding_mask)  # fmt: skip
        else:  # the same kernel κ over every key
            phi_q, phi_k = taylor_features(fq * scale), taylor_features(fk)  # (B, H, N, F)
            out = linear_attention(phi_q, phi_k, v.to(acc), EPS, None, key_padding_mask)
        if self.local is not None:
            out = out + self.local(
                q.to(acc), k.to(acc), v.to(acc), causal=causal, key_padding_mask=key_padding_mask
            )
        return out.to(q.dtype)  # (B, H, N, Dv)

    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        F = 1 + self.feature_dim + self.feature_dim * (self.feature_dim + 1) // 2
        state = {
            "kv": torch.zeros(batch, heads, F, head_dim, device=device, dtype=torch.float32),  # (B, H, F, Dv)
            "z": torch.zeros(batch, heads, F, device=device, dtype=torch.float32),  # (B, H, F)
        }
        if self.local is not None:  # the rolling window, fp32 like the sums
            window = self.local.init_state(batch, heads, head_dim, device=device, dtype=torch.float32)
            state.update({f"window_{key}": value for key, value in window.items()})
        return state

    @fp32_accumulation
    def step(self, q: Tensor, k: Tensor, v: Tensor, state: State) -> tuple[Tensor, State]:
        acc = state["kv"].dtype
        fq, fk = self.features(q.to(acc), k.to(acc))  # (B, H, 1, f)
        sums = (state["kv"], state["z"])
        out, (kv, z) = recurrent_step_based(fq, fk, v.to(acc), sums, scale=self.feature_dim**-0.5, eps=EPS)
        new = {"kv": kv, "z": z}
        if self.local is not None:
            window = {
                key[len("window_") :]: value for key, value in state.items() if key.startswith("window_")
            }
            local_out, window = self.local.step(q.to(acc), k.to(acc), v.to(acc), window)
            out = out + local_out
            new.update({f"window_{key}": value for key, value in window.items()})
        return out.to(q.dtype), new
