"""How many bytes a model's self-attention holds per sequence to decode the next token after N tokens.

    decode_state_bytes(model, length) -> {"decode_state_bytes": int, "decode_state_kind": str,
                                          "decode_state_length": int}

Summed over the self-attention layers decoding runs through (see `self_attention_layers`; cross
attention's encoder keys/values are left out: they depend on the source, not on the generated length). Measured, never declared, so plugins get it too:

- a variant with incremental decoding (capabilities.incremental) is run through `length` decoding
  steps at batch 1 on small random inputs (its own `init_state` / `step`), and the bytes of the
  state tensors it then holds are counted. A KV cache grows with N; linear/performer running sums
  do not; local attention keeps its window. kind = "incremental_state".
- a variant without incremental state decodes by recomputing the whole prefix at every step, which
  holds the prefix's keys and values: 2 · N · heads · head_dim floats per layer, in the model's
  dtype, are recorded as its equivalent. kind = "recompute_kv" (mixed models: "mixed").

A layer's own state beside its kernel's (the short convolution's cache of the last K-1 q, k, v rows,
attnlab/nn/layer_options.py) is added to it: it is held whether the kernel keeps a state or recomputes.
Layers are measured one by one, so a hybrid stack (attnlab/nn/pattern.py) sums its layers' states;
layers with the same variant, parameters, options and shapes are measured once and counted per layer.
"""

from __future__ import annotations

import torch
from torch import nn

from attnlab.attention.gates import with_example_gates
from attnlab.nn.layer import MultiHeadAttention

INCREMENTAL, RECOMPUTE = "incremental_state", "recompute_kv"


def self_attention_layers(model: nn.Module) -> list[MultiHeadAttention]:
    """The self-attention layers that decoding runs through: those of a model's `decoder` when it has
    one (encoder-decoder: the encoder runs once over the source), else all of them (a causal LM's
    blocks; for an encoder-only classifier, the state a causal stack of the same depth would hold)."""
    named = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, MultiHeadAttention) and name.split(".")[-1] == "self_attention"
    ]
    decoder = [module for name, module in named if "decoder" in name.split(".")]
    return decoder or [module for _, module in named]


@torch.no_grad()
def layer_state_bytes(layer: MultiHeadAttention, length: int, *, dtype: torch.dtype) -> tuple[int, str]:
    """Bytes one layer holds for one sequence after `length` tokens, and how it was obtained."""
    device = next(layer.parameters()).device
    own = _bytes(layer.wrap.init_state(1, device=device, dtype=dtype))
    if not type(layer.kernel).capabilities.incremental:
        return own + 2 * length * layer.heads * layer.head_dim * torch.tensor(
            [], dtype=dtype
        ).element_size(), RECOMPUTE
    generator = torch.Generator(device="cpu").manual_seed(0)
    kernel = with_example_gates(layer.kernel)  # a gated variant's state does not depend on the gates' values
    state = layer.kernel.init_state(1, layer.heads, layer.head_dim, device=device, dtype=dtype)
    shape = (length, 1, layer.heads, 1, layer.head_dim)
    q, k, v = (0.25 * torch.randn(shape, generator=generator).to(device, dtype) for _ in range(3))
    for t in range(length):  # (1, H, 1, D) per step
        _, state = kernel.step(q[t], k[t], v[t], state)
    return own + _bytes(state), INCREMENTAL


def _bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def decode_state_bytes(model: nn.Module, length: int) -> dict[str, int | str | None]:
    """The decoding state of `model` per sequence at context length `length` (see the module doc)."""
    layers = self_attention_layers(model)
    dtype = next(model.parameters()).dtype
    measured: dict[tuple, tuple[int, str]] = {}
    total, kinds = 0, set()
    for layer in layers:
        options = layer.wrap.options
        key = (layer.spec.name, repr(sorted(layer.spec.params.items())), options, layer.heads, layer.head_dim)
        if key not in measured:
            measured[key] = layer_state_bytes(layer, length, dtype=dtype)
        size, kind = measured[key]
        total += size
        kinds.add(kind)
    kind = None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"
    return {
        "decode_state_bytes": total if layers else None,
        "decode_state_kind": kind,
        "decode_state_length": length,
    }
