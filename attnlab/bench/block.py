"""The `target=block` workload: one pre-norm Transformer block around a variant.

    x + OutProj(Attn(QKV(LN x)))  then  x + MLP(LN x)   (MLP: C -> 4C -> C, GELU)

`attnlab.nn.TransformerBlock` is used when it is importable (the same block the tasks train);
`MinimalBlock` below is the stand-in with the same structure and attribute names, used otherwise.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from attnlab.attention import build_attention, get_attention_class
from attnlab.attention.base import State


class MinimalSelfAttention(nn.Module):
    """Projections + head split/merge around a registered kernel: x (B, N, C) -> (B, N, C)."""

    def __init__(self, d_model: int, heads: int, name: str, params: dict[str, Any], *, max_len: int):
        super().__init__()
        heads = get_attention_class(name).fixed_heads or heads
        self.heads, self.head_dim = heads, d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.kernel = build_attention(name, **params, head_dim=self.head_dim, heads=heads, max_len=max_len)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, N, _ = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, self.head_dim)  # (B, N, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, D)
        return q, k, v

    def _merge(self, out: Tensor) -> Tensor:
        B, _, N, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, N, -1))  # (B, N, C)

    def forward(self, x: Tensor, *, causal: bool = False) -> Tensor:
        q, k, v = self._split(x)
        return self._merge(self.kernel(q, k, v, causal=causal))

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        q, k, v = self._split(x)  # (B, H, 1, D)
        out, state = self.kernel.step(q, k, v, state)
        return self._merge(out), state


class MinimalBlock(nn.Module):
    """Pre-norm block with the attribute names of attnlab.nn.TransformerBlock."""

    def __init__(
        self, d_model: int, heads: int, name: str, params: dict[str, Any], *, max_len: int, mlp_ratio: int = 4
    ):
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attention = MinimalSelfAttention(d_model, heads, name, params, max_len=max_len)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model)
        )

    def forward(self, x: Tensor, *, causal: bool = False) -> Tensor:
        x = x + self.self_attention(self.norm_self(x), causal=causal)
        return x + self.mlp(self.norm_mlp(x))


def build_block(
    d_model: int, heads: int, name: str, params: dict[str, Any], *, max_len: int
) -> tuple[nn.Module, str]:
    """The block and which implementation it is ("attnlab.nn" or "attnlab.bench")."""
    try:
        from attnlab.nn import AttentionSpec, TransformerBlock
    except ImportError:
        return MinimalBlock(d_model, heads, name, params, max_len=max_len), "attnlab.bench"
    block = TransformerBlock(
        d_model, heads, AttentionSpec(name, dict(params)), max_len=max_len, mlp_ratio=4, dropout=0.0
    )
    return block, "attnlab.nn"


def block_step(block: nn.Module, x: Tensor, state: State) -> tuple[Tensor, State]:
    """One decoding step of a block (either implementation): x (B, 1, C) -> (B, 1, C)."""
    attended, state = block.self_attention.step(block.norm_self(x), state)
    x = x + attended
    return x + block.mlp(block.norm_mlp(x)), state
