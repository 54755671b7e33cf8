"""What a built model holds, read from its modules: the self-attention layers of each stack, and
results.json's description of a model built from a per-layer pattern (attnlab/nn/pattern.py parses
the patterns; this reads what was built from them, so it sits above the model classes)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from attnlab.attention import registry
from attnlab.attention.base import describe
from attnlab.nn.causal_lm import CausalLM
from attnlab.nn.pattern import LayerSpec
from attnlab.nn.transformer import Decoder, Encoder


def built_stacks(model: Any) -> dict[str, list[LayerSpec]]:
    """The self-attention layers of each stack a built model holds ({"encoder": [...], "decoder": [...]};
    a causal LM's stack is its "decoder"), read from the modules themselves: what was built, not asked."""
    stacks: dict[str, list[LayerSpec]] = {}
    for module in model.modules():
        if isinstance(module, Encoder | Decoder | CausalLM):
            stack = "encoder" if isinstance(module, Encoder) else "decoder"
            stacks[stack] = [
                LayerSpec(block.self_attention.spec, block.self_attention.wrap.options)
                for block in module.blocks
            ]
    return stacks


def describe_stacks(model: Any, label: str) -> dict[str, Any] | None:
    """results.json's "attention" for a model built from a pattern (`label`: config_label): the label
    as its "name" and "pattern", the layers of each stack with their hyperparameters and options, and
    what the layers share (the capabilities all have; exact only when every layer is); None when the
    model holds no stack."""
    stacks = built_stacks(model)
    if not stacks:
        return None
    layers = [layer for stack in stacks.values() for layer in stack]
    described = [describe(registry.get_attention_class(layer.name)) for layer in layers]
    capabilities = {
        key: all(d["capabilities"][key] for d in described) for key in described[0]["capabilities"]
    }
    return {
        "name": label,
        "pattern": label,
        "complexity": " + ".join(dict.fromkeys(d["complexity"] for d in described)),
        "exact": all(d["exact"] for d in described),
        "fixed_heads": None,
        "capabilities": capabilities,
        "params": {},
        "layers": {
            stack: [
                {"name": layer.name, "params": dict(layer.attention.params), "options": asdict(layer.options)}
                for layer in stack_layers
            ]  # fmt: skip
            for stack, stack_layers in stacks.items()
        },
    }
