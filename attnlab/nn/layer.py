"""Multi-head attention layer: projections, head split/merge and masks around any registered kernel.

A kernel that declares gates (`Attention.gates`, e.g. GLA's decay, DeltaNet's β) gets them from here:
the layer owns one projection per gate (built by the kernel's `gate_projection`), applies it to the
input of each token, and passes the result as a keyword tensor, (B, H, N) or (B, H, N, D), to the
kernel's forward and step. Kernels without gates are called exactly as before.

Positions (`positional`, attnlab.nn.rotary.LayerPositions): rope rotates q and k here, before any
kernel; alibi passes the kernel its slopes. Only self-attention layers are given a scheme.

Packed documents (`segments`, (B, N) ids, attnlab.nn.segments): self attention never crosses a
document boundary, natively where the kernel declares `segments`, else by unpacking the documents.

Layer options (short convolution, output gate, QK-norm: attnlab/nn/layer_options.py) wrap the
kernel when `options` asks for them; the layer's own decoding state (the convolution's cache) is
kept under "layer.*" keys beside the kernel's.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.attention import build_attention, get_attention_class
from attnlab.attention.base import State
from attnlab.errors import ConfigError
from attnlab.nn.layer_options import STATE_PREFIX, LayerOptions, LayerWrap
from attnlab.nn.positional import ROPE_BASE
from attnlab.nn.rotary import LayerPositions
from attnlab.nn.segments import attend_in_segments
from attnlab.nn.spec import AttentionSpec


class MultiHeadAttention(nn.Module):
    """x (B, Nq, C), memory (B, Nk, C) -> (B, Nq, C), attention computed by the chosen variant."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        spec: AttentionSpec,
        *,
        max_len: int,
        dropout: float = 0.0,
        positional: str = "none",
        rope_base: float = ROPE_BASE,
        options: LayerOptions | None = None,
    ):
        super().__init__()
        cls = get_attention_class(spec.name)
        heads = cls.fixed_heads or heads  # `full` is single-head by definition
        if d_model % heads:
            raise ConfigError(
                f"model.heads={heads} does not divide model.d_model={d_model}; choose heads among "
                f"{[h for h in range(1, d_model + 1) if d_model % h == 0 and h <= 32]}"
            )
        self.d_model, self.heads, self.head_dim = d_model, heads, d_model // heads
        self.spec = spec
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.kernel = build_attention(
            spec.name, **spec.params, head_dim=self.head_dim, heads=heads, max_len=max_len
        )
        gates = type(self.kernel).gates
        # Only gated kernels get the (possibly empty) module: other layers' state dicts are unchanged.
        self.gate_proj = (
            nn.ModuleDict(
                {name: self.kernel.gate_projection(name, d_model, heads, self.head_dim) for name in gates}
            )
            if gates
            else None
        )
        self.positions = LayerPositions(
            positional, heads=heads, head_dim=self.head_dim, rope_base=rope_base, kernel=cls
        )
        # Modules only for the options asked for: a layer without options keeps its state dict.
        self.wrap = LayerWrap(options or LayerOptions(), d_model, self.head_dim)

    def gates_of(self, x: Tensor) -> dict[str, Tensor]:
        """The kernel's gates projected from x (B, N, C): {name: (B, H, N) or (B, H, N, D)}."""
        if self.gate_proj is None:
            return {}
        B, N, _ = x.shape
        specs = type(self.kernel).gates
        out = {}
        for name, proj in self.gate_proj.items():
            gate = proj(x).view(B, N, self.heads, -1).transpose(1, 2)  # (B, H, N, D|1)
            out[name] = gate if specs[name].per_dim else gate.squeeze(-1)
        return out

    def split_heads(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, D)

    def merge_heads(self, x: Tensor) -> Tensor:
        B, _, N, _ = x.shape
        return x.transpose(1, 2).reshape(B, N, self.d_model)  # (B, N, C)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        segments: Tensor | None = None,
    ) -> Tensor:
        source = x if memory is None else memory
        q, k, v = self.q_proj(x), self.k_proj(source), self.v_proj(source)  # (B, N, C)
        q, k, v = self.wrap.mix(q, k, v, segments)  # a short convolution stays inside each document
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, H, N, D)
        q, k = self.wrap.normalise(q, k)
        gates = self.gates_of(source)  # per key/value token: the step that token's state update takes
        if segments is not None:  # packed documents (self attention): (B, H, N, D)
            out = attend_in_segments(
                self, q, k, v, gates, segments, causal=causal, key_padding_mask=key_padding_mask
            )
        else:
            q, k = self.positions.rotate(q, k)  # rope: positions 0..N-1
            extra = {**gates, **self.positions.kernel_inputs()}
            out = self.kernel(
                q, k, v, causal=causal, key_padding_mask=key_padding_mask, **extra
            )  # (B, H, Nq, D)
        out = self.merge_heads(out)  # (B, Nq, C)
        out = self.wrap.gate_output(out, x)
        return self.dropout(self.out_proj(out))

    # ---- incremental decoding -------------------------------------------------------------------
    def init_state(self, batch: int, *, device, dtype) -> State:
        state = self.kernel.init_state(batch, self.heads, self.head_dim, device=device, dtype=dtype)
        state = {**state, **self.wrap.init_state(batch, device=device, dtype=dtype)}
        return self.positions.start(state, batch, device)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One causal self-attention step: x (B, 1, C) -> (B, 1, C)."""
        state, seen = self.positions.split(state)  # seen (B,): this token's position under rope
        own = {key: value for key, value in state.items() if key.startswith(STATE_PREFIX)}
        kernel_state = {key: value for key, value in state.items() if not key.startswith(STATE_PREFIX)}
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, 1, C)
        q, k, v = self.wrap.mix_step(q, k, v, own)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, H, 1, D)
        q, k = self.wrap.normalise(q, k)
        q, k = self.positions.rotate(q, k, None if seen is None else seen[:, None])
        out, kernel_state = self.kernel.step(
            q, k, v, kernel_state, **self.gates_of(x), **self.positions.kernel_inputs()
        )
        out = self.merge_heads(out)  # (B, 1, C)
        out = self.wrap.gate_output(out, x)
        return self.out_proj(out), self.positions.advance({**kernel_state, **own}, seen)

    def project_memory(self, memory: Tensor, key_padding_mask: Tensor | None) -> State:
        """The kernel's `memory_state` of an encoder memory (B, Nk, C), computed once per generation:
        its keys and values (B, H, Nk, D), or the summary a variant reduces them to."""
        k = self.split_heads(self.k_proj(memory)).contiguous()  # (B, H, Nk, D): read at every step
        v = self.split_heads(self.v_proj(memory)).contiguous()  # (B, H, Nk, D)
        return self.kernel.memory_state(k, v, key_padding_mask)

    def attend_memory(self, x: Tensor, memory: State) -> Tensor:
        """Cross attention of x (B, Nq, C) over a `project_memory` state -> (B, Nq, C)."""
        q = self.split_heads(self.q_proj(x))  # (B, H, Nq, D)
        return self.out_proj(self.merge_heads(self.kernel.attend_memory(q, memory)))
