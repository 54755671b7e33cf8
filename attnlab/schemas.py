"""Structured configs stored into Hydra's ConfigStore: attention variants (from the registry), the
model schema and the generation tasks' decode defaults."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from attnlab.attention import store_attention_configs
from attnlab.nn import ModelConfig
from attnlab.tasks.generation import DecodeConfig


def store_configs() -> None:
    store_attention_configs()
    store = ConfigStore.instance()
    store.store(group="model", name="schema", node=ModelConfig, provider="attnlab")
    store.store(group="task/decode", name="default", node=DecodeConfig, provider="attnlab")
