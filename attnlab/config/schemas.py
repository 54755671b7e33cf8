"""Configs stored into Hydra's ConfigStore: attention variants (from the registry), the model
schema, the built-in data generators' knobs (from their signatures), the generation tasks' decode
defaults, and the configs of installed task plugins."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from attnlab.attention import store_attention_configs
from attnlab.data.generators import store_generator_configs
from attnlab.nn import ModelConfig
from attnlab.tasks.generation import DecodeConfig
from attnlab.tasks.plugins import store_task_configs


def store_configs() -> None:
    store_attention_configs()
    store_generator_configs()
    store = ConfigStore.instance()
    store.store(group="model", name="schema", node=ModelConfig, provider="attnlab")
    store.store(group="task/decode", name="default", node=DecodeConfig, provider="attnlab")
    store_task_configs()
