"""Attention variants and their registry. Knows nothing of tasks, Lightning or Hydra's app."""

from attnlab.attention.base import Attention, Capabilities, GateSpec, KVCacheDecoding, Range, State, describe
from attnlab.attention.registry import (
    available_attentions,
    broken_plugins,
    build_attention,
    get_attention_class,
    register_attention,
    registry_entry,
    store_attention_configs,
)

__all__ = [
    "Attention",
    "Capabilities",
    "GateSpec",
    "KVCacheDecoding",
    "Range",
    "State",
    "available_attentions",
    "broken_plugins",
    "build_attention",
    "describe",
    "get_attention_class",
    "register_attention",
    "registry_entry",
    "store_attention_configs",
]
