"""Checks on a composed config that Hydra's types cannot express; each failure is a one-line fix."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from attnlab.errors import ConfigError


def _positive(value, key: str, *, allow_none: bool = False, allow_minus_one: bool = False) -> None:
    if value is None and allow_none:
        return
    if allow_minus_one and value == -1:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key}={value} must be a positive number")


def check_config(cfg: DictConfig) -> None:
    model, trainer = cfg.model, cfg.trainer
    for key in ("d_model", "heads", "max_len", "encoder_layers", "mlp_ratio"):
        _positive(model[key], f"model.{key}")
    if not 0.0 <= model.dropout < 1.0:
        raise ConfigError(f"model.dropout={model.dropout} must be in [0, 1)")
    _positive(trainer.max_steps, "trainer.max_steps", allow_minus_one=True)
    data = cfg.task.get("data")
    if data is not None:
        _positive(data.batch_size, "task.data.batch_size")
        for split, limit in (data.get("limit") or {}).items():
            _positive(limit, f"task.data.limit.{split}", allow_none=True)
    check_device(trainer)


def check_device(trainer: DictConfig) -> None:
    accelerator, precision = str(trainer.accelerator), str(trainer.precision)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer=gpu but no CUDA GPU is visible; use trainer=cpu (or trainer.accelerator=auto)")
    on_gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if precision.startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"trainer.precision={precision} but this GPU has no bfloat16 support; use trainer.precision=16-mixed"
        )
    if precision.startswith("16") and not on_gpu:
        raise ConfigError(
            f"trainer.precision={precision} (fp16) needs a CUDA GPU; on CPU use trainer.precision=bf16-mixed or 32-true"
        )
