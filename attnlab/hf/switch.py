"""Switching a transformers model to an attnlab variant: every variant registered with transformers'
attention interface (`register`), a built model switched with its hyperparameters validated and
stored in its config (`use`), and its kernels built at once (`build_kernels`). `attnlab.hf` calls
`register` when imported and re-exports these; `attnlab.hf.saved` loads through `use`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attnlab.attention import available_attentions
from attnlab.attention.registry import validate_hyperparameters
from attnlab.errors import ConfigError
from attnlab.hf.attention import (
    PREFIX,
    attnlab_mask,
    implementation_name,
    make_attention_function,
)

INSTALL_HINT = "pip install 'attnlab[hf]'"

try:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
except ImportError as error:  # pragma: no cover - exercised when transformers is absent
    raise ConfigError(
        f"attnlab's Hugging Face integration needs transformers, which is not installed: {INSTALL_HINT}"
    ) from error


def register() -> list[str]:
    """Register every variant of attnlab's registry with transformers; returns the implementation names.

    Call it again after registering a variant at run time (plugins installed as packages are
    found automatically). Each name gets an attention function AND a mask function: without the
    latter transformers hands a custom implementation no mask at all.
    """
    names = []
    for variant in available_attentions():
        name = implementation_name(variant)
        AttentionInterface.register(name, make_attention_function(variant))
        AttentionMaskInterface.register(name, attnlab_mask)
        names.append(name)
    return names


def use(model: nn.Module, attention: str | Mapping[str, Any], **params: Any) -> nn.Module:
    """Switch `model` to attnlab variant `attention` (a name, or {name: ..., <hyperparameters>}).

    The hyperparameters are validated, stored in the model's config (`attnlab_attention`, saved by
    save_pretrained), and the kernels are built now, so variant parameters exist before an
    optimiser is created. Returns the model.
    """
    if isinstance(attention, Mapping):
        params = {**{k: v for k, v in attention.items() if k != "name"}, **params}
        attention = str(attention["name"])
    if attention.startswith(PREFIX):
        attention = attention.removeprefix(PREFIX)
    register()
    settings = {"name": attention, **validate_hyperparameters(attention, params)}
    model.config.attnlab_attention = settings
    for sub_config in sub_configs(model.config):
        sub_config.attnlab_attention = settings
    for module in model.modules():  # kernels built with other hyperparameters are rebuilt
        slots = getattr(module, "attnlab", None)
        if isinstance(slots, nn.ModuleDict) and attention in slots:
            del slots[attention]
    model.set_attn_implementation(implementation_name(attention))
    build_kernels(model)
    return model


def sub_configs(config: Any) -> list[Any]:
    """Nested configs of composite models (text_config...), which their own modules read."""
    keys = getattr(config, "sub_configs", None) or {}
    return [getattr(config, key) for key in keys if getattr(config, key, None) is not None]


@torch.no_grad()
def build_kernels(model: nn.Module) -> None:
    """Build every attention module's kernel now, by one forward pass over two tokens.

    The pass reaches exactly the modules that call the attention interface, whatever the
    architecture names them; a variant that cannot serve the model (not causal-capable in a
    decoder...) fails here, before any training.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device))
    finally:
        model.train(was_training)
