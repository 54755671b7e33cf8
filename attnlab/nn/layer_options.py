"""Layer options every variant gets, wrapped around the kernel by `attnlab.nn.MultiHeadAttention`.

    short_conv=K   a causal depthwise convolution of width K over time on q, k and v (after their
                   projections, before the kernel): each channel mixes its last K positions, as the
                   short convolutions of H3, Based, Mamba and fla's layers. 0 = off. In incremental
                   decoding it keeps the last K-1 projected q, k, v rows: (B, K-1, 3C) per layer,
                   counted in the decoding state. Odd or even widths alike (it is causal, not centred).
    output_gate    out * sigmoid(W_g x) on the kernel's merged output, before the output projection
                   (gated attention, as Qwen3-Next's): the token decides how much of what it read to use.
    qk_norm        RMS norm of q and k over each head's dimensions, with a learned scale per dimension
                   (shared by the heads), before the kernel: bounds q·k whatever the projections grow to.

The kernel is untouched: it still sees (B, H, N, D) q, k, v. The options apply to the self-attention
layers of a stack (cross attention's keys come from another sequence, where a causal convolution over
the source has no meaning); `model.short_conv` etc. set them for every layer, a pattern entry
(`model.layers=[{name: multihead, output_gate: true}, ...]`) for one layer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attnlab.errors import ConfigError

STATE_PREFIX = "layer."  # the layer's own keys in a decoding state, beside the kernel's
CONV_STATE = STATE_PREFIX + "short_conv"


@dataclass(frozen=True)
class LayerOptions:
    """What wraps the kernel in one layer. The defaults here are those of `ModelConfig` too."""

    short_conv: int = 0  # kernel width of the causal depthwise convolution on q, k, v; 0 = off
    output_gate: bool = False  # sigmoid gate from the token on the attention output
    qk_norm: bool = False  # RMS norm of q and k per head

    def __post_init__(self) -> None:
        check_short_conv(self.short_conv)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, cfg) -> LayerOptions:
        """The options set on a model config (ModelConfig or a mapping with these keys)."""
        get = cfg.get if hasattr(cfg, "get") else lambda key, default: getattr(cfg, key, default)
        return cls(**{name: get(name, getattr(cls, name)) for name in cls.names()})

    def replace(self, **changes) -> LayerOptions:
        return LayerOptions(**{**{n: getattr(self, n) for n in self.names()}, **changes})


def check_short_conv(width: object, key: str = "model.short_conv") -> None:
    """0 (off) or a width >= 2: a width of 1 is a per-channel scale the projections already are."""
    if isinstance(width, bool) or not isinstance(width, int) or (width != 0 and width < 2):
        raise ConfigError(
            f"{key}={width} must be 0 (off) or an integer >= 2 (the positions each channel mixes); "
            f"e.g. {key}=4"
        )


class ShortConv(nn.Module):
    """Causal depthwise convolution over time: x (B, N, C) -> (B, N, C); position t sees t-K+1..t."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.width = width
        self.conv = nn.Conv1d(channels, channels, width, groups=channels)  # weight (C, 1, K), bias (C,)

    def forward(self, x: Tensor, segments: Tensor | None = None) -> Tensor:
        """`segments` (B, N) document ids of packed rows: a tap that reaches into the previous
        document reads zero, as at the first token, so no document sees another through the window."""
        if segments is not None:
            return self.within_segments(x, segments)
        x = F.pad(x.transpose(1, 2), (self.width - 1, 0))  # (B, C, K-1+N): zeros before the first token
        return self.conv(x).transpose(1, 2)  # (B, N, C)

    def within_segments(self, x: Tensor, segments: Tensor) -> Tensor:
        """The convolution as K shifted, masked multiply-adds: x (B, N, C), segments (B, N) -> (B, N, C)."""
        weight = self.conv.weight[:, 0]  # (C, K): tap K-1 is the current position
        out = x * weight[:, -1] + self.conv.bias
        for lag in range(1, self.width):
            earlier = F.pad(x[:, :-lag], (0, 0, lag, 0))  # (B, N, C): x_{t-lag}, zeros before the start
            same = F.pad(segments[:, lag:] == segments[:, :-lag], (lag, 0))  # (B, N) same document
            out = out + earlier * same[..., None] * weight[:, -1 - lag]
        return out

    def init_state(self, batch: int, *, device, dtype) -> Tensor:
        return torch.zeros(batch, self.width - 1, self.conv.in_channels, device=device, dtype=dtype)

    def step(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 1, C), cache (B, K-1, C) the previous inputs -> (B, 1, C) and the new cache."""
        window = torch.cat([cache, x], dim=1)  # (B, K, C)
        weight = self.conv.weight[:, 0].t()  # (K, C)
        out = (window * weight).sum(1, keepdim=True) + self.conv.bias  # (B, 1, C)
        return out, window[:, 1:]


class LayerWrap(nn.Module):
    """The modules an options set adds to one layer, and the four places the layer calls them."""

    def __init__(self, options: LayerOptions, d_model: int, head_dim: int):
        super().__init__()
        self.options = options
        self.conv = ShortConv(3 * d_model, options.short_conv) if options.short_conv else None
        self.gate = nn.Linear(d_model, d_model) if options.output_gate else None
        # RMS norm over the last dim of (B, H, N, D), a learned (D,) scale
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if options.qk_norm else None
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if options.qk_norm else None

    def mix(
        self, q: Tensor, k: Tensor, v: Tensor, segments: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The short convolution over time of projected q, k, v (B, N, C) each, within each packed
        document when `segments` (B, N) is given."""
        if self.conv is None:
            return q, k, v
        return self.conv(torch.cat([q, k, v], dim=-1), segments).chunk(3, dim=-1)  # 3 x (B, N, C)

    def mix_step(self, q: Tensor, k: Tensor, v: Tensor, state: dict) -> tuple[Tensor, Tensor, Tensor]:
        """One decoding step of `mix` on (B, 1, C) rows; updates state[CONV_STATE] in place of the dict."""
        if self.conv is None:
            return q, k, v
        out, state[CONV_STATE] = self.conv.step(torch.cat([q, k, v], dim=-1), state[CONV_STATE])
        return out.chunk(3, dim=-1)

    def normalise(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """QK-norm of (B, H, N, D) q and k."""
        if self.q_norm is None:
            return q, k
        return self.q_norm(q), self.k_norm(k)

    def gate_output(self, out: Tensor, x: Tensor) -> Tensor:
        """out (B, N, C) merged heads, gated by the token x (B, N, C)."""
        return out if self.gate is None else out * torch.sigmoid(self.gate(x))

    def init_state(self, batch: int, *, device, dtype) -> dict[str, Tensor]:
        """The layer's own decoding state (batch in dim 0), kept beside the kernel's."""
        if self.conv is None:
            return {}
        return {CONV_STATE: self.conv.init_state(batch, device=device, dtype=dtype)}
