"""Configs stored into Hydra's ConfigStore: attention variants (from the registry), the model, trainer
and task.data schemas (attnlab.config.data_schema), the bench's (attnlab.config.bench_schema), the
built-in data generators' knobs (from their signatures), the generation tasks' decode defaults, and the
configs of installed task plugins.

A schema's field types are checked by OmegaConf when the config is composed; what a type cannot say
(a range, a set of choices, a format) is declared beside the field (attnlab.config.fields) and checked
by `check_fields`. Checks that relate two fields stay in attnlab.config.checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from attnlab.attention import store_attention_configs
from attnlab.config.bench_schema import store_bench_schema
from attnlab.config.data_schema import DataSchema
from attnlab.config.fields import ABSENT, bounded, check_choice, check_number, checked, flag, one_of, show
from attnlab.data.generators import store_generator_configs
from attnlab.errors import ConfigError
from attnlab.nn import ModelConfig
from attnlab.tasks.generation import DecodeConfig
from attnlab.tasks.plugins import store_task_configs

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", 32, "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16", 16)
PRECISIONS += ("64-true", "64", 64)
MAX_TIME = re.compile(r"\d+:\d{2}:\d{2}:\d{2}")  # Lightning's DD:HH:MM:SS


# ---- the Trainer's arguments whose type is a union (OmegaConf types none of them) -------------------
def _devices(devices: Any, key: str) -> None:
    if isinstance(devices, str) and devices != "auto":
        ids = devices.replace(",", " ").split()
        if not ids or not all(i.isdigit() for i in ids):
            raise ConfigError(
                f"{key}={devices} is not allowed; give a count (trainer.devices=1), -1 or auto for all, "
                f"or device ids (trainer.devices=[0,1])"
            )
    elif OmegaConf.is_list(devices) or isinstance(devices, list):
        for i in devices:
            check_number(i, f"{key}[]", ge=0, example=0)
    else:
        check_number(devices, key, ge=1, also=(-1, "auto"), example=1)


def _strategy(strategy: Any, key: str) -> None:
    if isinstance(strategy, str):  # else a strategy object to instantiate (trainer=fsdp)
        from lightning.pytorch.strategies import StrategyRegistry

        check_choice(strategy, key, ("auto", *StrategyRegistry.available_strategies()))


def _max_time(max_time: Any, key: str) -> None:
    if max_time not in (ABSENT, None) and not (isinstance(max_time, str) and MAX_TIME.fullmatch(max_time)):
        raise ConfigError(f"{key}={show(max_time)} must be DD:HH:MM:SS or null; e.g. {key}=00:00:28:00")


def _fraction_or_count(example_fraction: float, example_count: int, *, gt_zero: bool) -> Any:
    """A float is a fraction of the epoch (in (0, 1] or [0, 1]), an int a count of batches."""

    def check(value: Any, key: str) -> None:
        if isinstance(value, float):
            low = {"gt": 0} if gt_zero else {"ge": 0}
            check_number(value, key, kind=float, le=1, example=example_fraction, **low)
        else:
            check_number(value, key, ge=1 if gt_zero else 0, also=(None,), example=example_count)

    return check


def _fast_dev_run(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        check_number(value, key, ge=0, example="true")


def _deterministic(value: Any, key: str) -> None:
    if value is not ABSENT and value not in (True, False, None, "warn"):
        raise ConfigError(f"{key}={show(value)} must be true, false or warn")


@dataclass
class TrainerConfig:
    """The Lightning Trainer's arguments the configs set (conf/trainer/*.yaml list `schema` first):
    Lightning's own errors are multi-line and come only once training starts (val_check_interval=0
    after the first step). Fields no YAML sets hold Lightning's own defaults."""

    _target_: str = "lightning.Trainer"
    accelerator: str = one_of("auto", ACCELERATORS)
    devices: Any = checked(1, _devices)
    num_nodes: int = bounded(1, ge=1, example=1)
    strategy: Any = checked("auto", _strategy)
    sync_batchnorm: bool = flag(False)
    precision: Any = one_of("32-true", PRECISIONS)
    max_steps: int = bounded(1500, ge=1, also=(-1,), example=1500)
    max_epochs: int | None = bounded(-1, ge=1, also=(-1, None), example=-1)
    # or DD:HH:MM:SS: the fit stops there, recorded as a partial run (budget.stopped_by=max_time)
    max_time: str | None = checked(None, _max_time)
    val_check_interval: Any = checked(250, _fraction_or_count(0.25, 250, gt_zero=True))
    check_val_every_n_epoch: int | None = bounded(None, ge=1, also=(None,), example=1)
    log_every_n_steps: int = bounded(25, ge=1, example=25)
    gradient_clip_val: Any = bounded(1.0, kind=float, ge=0, also=(None,), example=1.0)
    accumulate_grad_batches: int = bounded(1, ge=1, example=1)
    deterministic: Any = checked(False, _deterministic)
    fast_dev_run: Any = checked(False, _fast_dev_run)
    limit_train_batches: Any = checked(None, _fraction_or_count(0.5, 10, gt_zero=False))
    limit_val_batches: Any = checked(None, _fraction_or_count(0.5, 10, gt_zero=False))
    limit_test_batches: Any = checked(None, _fraction_or_count(0.5, 10, gt_zero=False))
    enable_progress_bar: bool = flag(True)
    enable_checkpointing: bool | None = flag(None)
    enable_model_summary: bool | None = flag(None)


def store_configs() -> None:
    store_attention_configs()
    store_generator_configs()
    store = ConfigStore.instance()
    store.store(group="model", name="schema", node=ModelConfig, provider="attnlab")
    store.store(group="trainer", name="schema", node=TrainerConfig, provider="attnlab")
    store.store(group="task/decode", name="default", node=DecodeConfig, provider="attnlab")
    store.store(group="task/data", name="schema", node=DataSchema, provider="attnlab")
    store_bench_schema()  # conf/bench.yaml's
    store_task_configs()
