"""`based`: Based (Arora et al. 2024, "Simple linear attention language models balance the
recall-throughput tradeoff"): linear attention with a 2nd-order Taylor feature map for global,
approximate recall, beside exact softmax attention over a small sliding window for precise local
recall.

    out = Taylor linear attention(q', k', v)  +  sliding-window softmax attention(q, k, v; window)

q' and k' are q and k projected per head to `feature_dim` (learned, no bias; fla's layer projects the
model input to feature_dim directly); the linear part is fla's `naive_parallel_based` on them
(κ = 1 + s + s²/2, s = q'·k'/√feature_dim, normalised, eps 1e-6; ops/based/; 1 + f + f(f+1)/2 features:
153 for f = 16). The window part is `local` (its blocked kernel and rolling decoding state).
Difference from the paper: Based interleaves separate linear-attention and sliding-window layers
(and short convolutions); here one kernel sums both parts per head. window=0 leaves the linear part
alone, exactly fla's op. Decoding keeps the running feature sums and the rolling window: O(f²·d + w·d)
per sequence, whatever the length. Causal, on float32 CPU tensors, the two parts run as one autograd
Function in C (cpu/functions.py FusedBased), which writes both parts' gradients into the same
tensors.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention import cpu
from attnlab.attention.base import Attention, Capabilities, Range, State, fp32_accumulation
from attnlab.attention.cpu.functions import FusedBased, window_kernels_for
from attnlab.attention.ops.based.chunk import chunk_based, taylor_features
from attnlab.attention.ops.based.reference import recurrent_step_based
from attnlab.attention.ops.linear.chunk import linear_attention
from attnlab.attention.ops.passes import taylor_feature_count
from attnlab.attention.ops.window.chunk import key_validity, window_plan
from attnlab.attention.registry import register_attention
from attnlab.attention.variants.local import LocalAttention

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

    @classmethod
    def parameter_count(cls, params, *, heads, head_dim):
        return 2 * head_dim * params["feature_dim"]  # q_feature, k_feature

    @classmethod
    def working_memory(cls, params, *, batch, heads, length, head_dim):
        # phi(q), phi(k): (B, H, N, F), F = 1 + f + f(f+1)/2 Taylor features, kept for the backward
        features = taylor_feature_count(params["feature_dim"])
        window = min(params["window"], length)
        return batch * heads * length * (2 * features + window)  # + the window's scores (B, H, N, w)

    def features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """(B, H, N, D) -> (B, H, N, feature_dim), in the inputs' (fp32) dtype."""
        return q @ self.q_feature.weight.to(q.dtype).T, k @ self.k_feature.weight.to(k.dtype).T

    @fp32_accumulation
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        dtype, acc = q.dtype, torch.promote_types(q.dtype, torch.float32)
        q, k, v = q.to(acc), k.to(acc), v.to(acc)
        scale = self.feature_dim**-0.5
        if causal and self.local is not None:  # float32 CPU: both parts in one Function, in C
            weights = (self.q_feature.weight.to(acc), self.k_feature.weight.to(acc))
            window, chunk = self.local.window, self.chunk_size
            fused = fused_causal_based(q, k, v, *weights, scale=scale, window=window, chunk_size=chunk,
                                       key_padding_mask=key_padding_mask)  # fmt: skip
            if fused is not None:
                return fused.to(dtype)  # (B, H, N, Dv)
        fq, fk = self.features(q, k)  # (B, H, N, f)
        if causal:
            out = chunk_based(fq, fk, v, scale=scale, eps=EPS, chunk_size=self.chunk_size,
                              key_padding_mask=key_padding_mask)  # fmt: skip
        else:  # the same kernel κ over every key
            phi_q, phi_k = taylor_features(fq * scale), taylor_features(fk)  # (B, H, N, F)
            out = linear_attention(phi_q, phi_k, v, EPS, None, key_padding_mask)
        if self.local is not None:
            out = out + self.local(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
        return out.to(dtype)  # (B, H, N, Dv)

    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        F = taylor_feature_count(self.feature_dim)
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


def fused_causal_based(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_weight: Tensor,
    k_weight: Tensor,
    *,
    scale: float,
    window: int,
    chunk_size: int,
    key_padding_mask: Tensor | None,
) -> Tensor | None:
    """based's causal kernel through FusedBased: q, k (B, H, N, D), v (B, H, N, Dv), the feature
    projections (f, D) -> (B, H, N, Dv); None where FusedBased does not apply (not plain float32 CPU
    tensors, a window too large for its C kernel, or window blocks and chunks that do not nest)."""
    B, H, N, D = q.shape
    geometry, _ = window_plan(N, H, window, causal=True)
    block = max(geometry[0], chunk_size)
    # The fast path, decided here once; what it cannot do: blocks and chunks that do not nest, tensors
    # that are not plain float32 CPU ones (the projections tell a module on a GPU before q, k, v are
    # copied and padded), a window whose working memory does not fit.
    if block % min(geometry[0], chunk_size) or cpu.kernels_for(q_weight.detach(), k_weight.detach()) is None:
        return None
    pad = (-N) % block
    if pad:  # positions past the end: keys that count for nothing, queries whose outputs are dropped
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    q, k, v = (t.contiguous() for t in (q, k, v))
    kernels = window_kernels_for(geometry, q, k, v)
    if kernels is None:
        return None
    valid = key_validity(key_padding_mask, B, N, pad, q.dtype)  # (B, N + pad) or None
    out = FusedBased.apply(q, k, v, q_weight, k_weight, valid, scale, EPS, chunk_size, geometry, kernels)
    return out[:, :, :N]
