"""Structured configs stored into Hydra's ConfigStore: attention variants (from the registry), the model
schema, and the built-in data generators' knobs (from their signatures)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from attnlab.attention import store_attention_configs
from attnlab.data.generators import store_generator_configs
from attnlab.nn import ModelConfig


def store_configs() -> None:
    store_attention_configs()
    store_generator_configs()
    ConfigStore.instance().store(group="model", name="schema", node=ModelConfig, provider="attnlab")
