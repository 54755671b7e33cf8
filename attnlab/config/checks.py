"""Checks on a composed config that Hydra's types cannot express; each failure is a one-line fix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from attnlab.config.data_schema import DataSchema
from attnlab.config.fields import (
    ABSENT,
    check_choice,
    check_fields,
    check_number,
    check_positive,
    checked_values,
    show,
)
from attnlab.config.sequence_lengths import check_sequence_lengths, resolve_max_len
from attnlab.data.tokenizers import BPE_TOKENIZERS
from attnlab.errors import ConfigError, did_you_mean
from attnlab.host.threads import check_threads
from attnlab.nn.hf_models import is_hf_model, require_transformers
from attnlab.nn.pattern import check_patterns
from attnlab.nn.positional import SCHEMES
from attnlab.nn.spec import AttentionSpec


def _select(cfg: DictConfig, key: str) -> Any:
    """The value at dotted `key` (interpolations resolved), or ABSENT when the config has no such key."""
    return OmegaConf.select(cfg, key, default=ABSENT, throw_on_missing=False)


def check_config(cfg: DictConfig) -> None:
    """Every value of a composed app config that Hydra's types cannot check, before anything is built.
    First model.max_len=null becomes the generated rows' length (the one value set here, not checked)."""
    resolve_max_len(cfg)
    model, trainer = cfg.model, cfg.trainer
    if is_hf_model(model):  # a transformers model: its own config holds the sizes (attnlab.hf.model)
        require_transformers()
        check_positive(model.max_len, "model.max_len")
    else:
        for key in ("d_model", "heads", "max_len", "encoder_layers", "mlp_ratio"):
            check_positive(model[key], f"model.{key}")
        if not 0.0 <= model.dropout < 1.0:
            raise ConfigError(f"model.dropout={model.dropout} must be in [0, 1)")
        check_number(model.get("decoder_layers", ABSENT), "model.decoder_layers", ge=1, example=2)
        check_choice(model.get("positional", ABSENT), "model.positional", POSITIONAL)
        check_number(model.get("rope_base", ABSENT), "model.rope_base", kind=float, gt=1, example=10000)
    check_number(cfg.get("seed", ABSENT), "seed", ge=0, le=2**32 - 1, example=0)
    check_threads(cfg.get("threads"))
    data = cfg.task.get("data")
    if model.get("share_embeddings") is True and data is not None and data.get("shared_tokenizer") is False:
        raise ConfigError(
            "model.share_embeddings=true needs one vocabulary for source and target, but task.data.shared_tokenizer="
            "false; set task.data.shared_tokenizer=true or model.share_embeddings=false"
        )
    check_fields(cfg)  # the typed nodes' declared ranges and choices (trainer: attnlab.config.schemas)
    check_cpu_devices(trainer)
    check_schedule(trainer, cfg.get("callbacks"))
    if data is not None:
        check_data(data)
    check_choice(cfg.task.get("monitor_mode", ABSENT), "task.monitor_mode", ("min", "max"))
    check_tags(cfg.get("tags", ABSENT))
    check_wandb_mode(cfg.get("logger"))
    check_paths(cfg)
    check_task_module(cfg.task)
    check_decode(cfg.task.get("decode"))
    check_callbacks(cfg.get("callbacks"))
    check_attention(cfg)
    # before any data is generated: rows fit the model, LM windows are not degenerate
    check_sequence_lengths(cfg)
    check_device(trainer)
    if not is_hf_model(model):  # sizes in range may still not fit: refuse before building (nn/estimate)
        from attnlab.nn.estimate import check_fits

        check_fits(cfg)
    from attnlab.config.eval_lengths import check_eval_lengths

    check_eval_lengths(cfg)  # lengths the task's generator, the positions and the variant can take
    from attnlab.tasks.common import check_task_config

    check_task_config(cfg.task)  # what the framework calls on the task is there, and monitor names a metric


POSITIONAL = SCHEMES  # model.positional: attnlab/nn/positional.py is their one home


def check_cpu_devices(trainer: DictConfig) -> None:
    """More CPU training processes than cores: each waits on the others."""
    devices, cores = trainer.get("devices"), os.cpu_count() or 1
    if str(trainer.get("accelerator")) == "cpu" and isinstance(devices, int) and devices > cores:
        raise ConfigError(
            f"trainer.devices={devices} on CPU starts {devices} training processes on {cores} cores; "
            f"use trainer.devices=1 (or at most {cores})"
        )


def check_schedule(trainer: DictConfig, callbacks: DictConfig | None) -> None:
    """A run must end (that it validates at least once is attnlab.run.schedule's job: a short run
    validates at its last step)."""
    steps, epochs = trainer.get("max_steps"), trainer.get("max_epochs")
    early = (callbacks or {}).get("early_stopping")
    if steps == -1 and epochs in (-1, None) and early is None and not trainer.get("fast_dev_run"):
        raise ConfigError(
            "trainer.max_steps=-1 and trainer.max_epochs=-1 without early stopping would train forever; "
            "set trainer.max_steps=<n> (e.g. 1500)"
        )


def check_data(data: DictConfig) -> None:
    """task.data's checks beyond its typed schema's (attnlab.config.data_schema, run by check_fields):
    the schema's declared checks again where a plugin task's data does not use the schema, and what
    relates two keys."""
    if not issubclass(OmegaConf.get_type(data) or dict, DataSchema):
        checked_values(DataSchema, data, prefix="task.data.")
    if data.get("tokenizer") in BPE_TOKENIZERS:
        check_number(data.get("vocab_size", ABSENT), "task.data.vocab_size", ge=262, example=8000)


# Ranges of the task modules' common hyperparameters (their types come from the task's signature).
TASK_MODULE_RANGES: dict[str, dict[str, Any]] = {
    "lr": {"kind": float, "gt": 0, "example": "1e-3"},
    "weight_decay": {"kind": float, "ge": 0, "example": 0.01},
    "warmup_steps": {"kind": int, "ge": 0, "example": 100},
    "label_smoothing": {"kind": float, "ge": 0, "lt": 1, "example": 0.1},
}


def check_task_module(task: DictConfig) -> None:
    """`task.module.*` against the task class's typed __init__: unknown keys and wrong types (lr=fast)
    fail here, before training, not when the optimiser first reads them."""
    module = task.get("module")
    if module is None:
        return
    hints = _task_hints(str(module.get("_target_", "")))
    for key in module:
        if str(key).startswith("_"):
            continue
        value = _select(module, str(key))
        where = f"task.module.{key}"
        if hints is not None and key not in hints:
            known = sorted(str(k) for k in module if str(k) in hints)  # what the task's YAML sets
            raise ConfigError(
                f"unknown config key '{where}'{did_you_mean(str(key), known)}; this task's module takes: {', '.join(known)}"
            )
        spec = TASK_MODULE_RANGES.get(str(key))
        if spec is not None:
            check_number(value, where, **spec)
        elif hints is not None and hints[key] in (int, float, bool, str):
            _check_type(value, where, hints[key])


def _check_type(value: Any, key: str, kind: type) -> None:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        noun = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]
        raise ConfigError(f"{key}={show(value)} is not valid: expected {noun}; set {key}=<{noun}>")


def _task_hints(target: str) -> dict[str, Any] | None:
    """Type hints of the task class named by `target` (`pkg.Class.from_datamodule`); None if unknown."""
    import importlib
    import typing

    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name, None)
        owner = getattr(obj, "__self__", obj)  # a classmethod's class
        if not isinstance(owner, type):
            return None
        try:
            hints = typing.get_type_hints(owner.__init__)
        except Exception:
            return None
        import inspect

        params = inspect.signature(owner.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return {name: hints.get(name, Any) for name in params if name != "self"}
    return None


MAX_BEAM = 64


def check_decode(decode: DictConfig | None) -> None:
    """task.decode (translate, summarise): beam widths, lengths and sample counts."""
    if decode is None:
        return
    # Beam search steps beam × batch hypotheses together, so its time and memory grow with the beam;
    # translation and summarisation use beams of 4 to 10, and MAX_BEAM leaves room above.
    check_number(decode.get("beam", ABSENT), "task.decode.beam", ge=1, le=MAX_BEAM, example=4)
    check_number(decode.get("val_beam", ABSENT), "task.decode.val_beam", ge=1, le=MAX_BEAM, example=1)
    check_number(decode.get("max_new_tokens", ABSENT), "task.decode.max_new_tokens", ge=1, example=128)
    check_number(
        decode.get("length_penalty", ABSENT), "task.decode.length_penalty", kind=float, ge=0, example=1.0
    )
    for key in ("val_samples", "test_samples"):
        check_number(decode.get(key, ABSENT), f"task.decode.{key}", ge=1, also=(None,), example=64)
    check_number(decode.get("table_rows", ABSENT), "task.decode.table_rows", ge=0, example=50)


WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")  # wandb's Settings.mode


def check_wandb_mode(loggers: DictConfig | None) -> None:
    """WANDB_MODE read from the environment: a value wandb does not know is a pydantic traceback
    when the logger starts, after the data is prepared and the model built."""
    mode = os.environ.get("WANDB_MODE")
    uses_wandb = any("Wandb" in str((c or {}).get("_target_", "")) for c in (loggers or {}).values())
    if mode and uses_wandb and mode not in WANDB_MODES:
        raise ConfigError(
            f"WANDB_MODE={mode} is not a wandb mode{did_you_mean(mode, WANDB_MODES)}; set WANDB_MODE= one of "
            f"online, offline, disabled (or unset it: offline without an API key), or use logger=csv"
        )


def check_tags(tags: Any) -> None:
    if tags is ABSENT:
        return
    if not OmegaConf.is_list(tags) or not all(isinstance(t, str | int | float) and t != "" for t in tags):
        raise ConfigError(f"tags={show(tags)} must be a list of words, e.g. tags=[baseline,long]")


def check_paths(cfg: DictConfig) -> None:
    """The directories a run writes must be creatable: else an OSError traceback once the run started."""
    keys = ["paths.run_dir", "paths.data_cache", "hydra.run.dir", "hydra.sweep.dir"]
    keys += [f"logger.{name}.save_dir" for name in (cfg.get("logger") or {})]
    for key in keys:
        try:
            value = _select(cfg, key)
        except Exception:  # ${hydra:...} before Hydra runs: checked when Hydra creates it
            continue
        check_directory(key, value)


def check_directory(key: str, value: Any) -> None:
    """Directory `value` (set at config `key`) can be created and written, else a one-line ConfigError."""
    if value is ABSENT or value is None:
        return
    if str(value).strip() == "":
        raise ConfigError(f"{key} is empty; give a directory, e.g. {key}=outputs/my_run")
    blocker = _unwritable(Path(str(value)))
    if blocker is not None:
        raise ConfigError(f"{key}={value} cannot be created: {blocker}; choose a writable directory")


def _unwritable(path: Path) -> str | None:
    """Why directory `path` cannot be created or written (its nearest existing ancestor), or None."""
    path = path.expanduser().absolute()
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file"
            try:  # os.access says yes to root everywhere, even under /proc
                with tempfile.TemporaryFile(dir=ancestor):
                    return None
            except OSError as error:
                return f"{ancestor} is not writable ({error.strerror})"
    return None


def check_callbacks(callbacks: DictConfig | None) -> None:
    if not callbacks:
        return
    early = callbacks.get("early_stopping")
    if early is not None:
        check_number(early.get("patience", ABSENT), "callbacks.early_stopping.patience", ge=0, example=5)
    lr_monitor = callbacks.get("lr_monitor")
    if lr_monitor is not None:
        check_choice(
            lr_monitor.get("logging_interval", ABSENT),
            "callbacks.lr_monitor.logging_interval",
            ("step", "epoch", None),
        )
    finite = callbacks.get("finite")
    if finite is not None:
        check_number(
            finite.get("inject_nan_at_step", ABSENT),
            "callbacks.finite.inject_nan_at_step",
            ge=0,
            also=(None,),
            example="null",
        )
    cost = callbacks.get("cost")
    if cost is not None:
        check_number(cost.get("warmup_steps", ABSENT), "callbacks.cost.warmup_steps", ge=0, example=5)


def check_attention(cfg: DictConfig) -> None:
    """The attention's declared ranges, and its resource bounds against model.max_len, for the main
    variant and every role override (model.decoder.self_attention=... takes that variant's defaults)."""
    from attnlab.attention import registry

    max_len = cfg.model.max_len
    attention = OmegaConf.to_container(cfg.attention, resolve=True)
    name = attention.pop("name")
    registry.validate_hyperparameters(name, attention, max_len=max_len)
    check_patterns(cfg.model, AttentionSpec(name, attention))  # model.layers (attnlab/nn/pattern.py)
    for part in ("encoder", "decoder"):
        roles = cfg.model.get(part) or {}
        for role, variant in roles.items():
            if role != "layers" and variant not in (None, name):  # layers: a pattern, checked above
                registry.find_attention(str(variant))
                registry.validate_hyperparameters(str(variant), {}, max_len=max_len)


def check_device(trainer: DictConfig) -> None:
    accelerator, precision = str(trainer.accelerator), str(trainer.precision)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer=gpu but no CUDA GPU is visible; use trainer=cpu (or trainer.accelerator=auto)"
        )
    on_gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if precision.startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"trainer.precision={precision} but this GPU has no bfloat16 support; use trainer.precision=16-mixed"
        )
    if precision.startswith("16") and not on_gpu:
        raise ConfigError(
            f"trainer.precision={precision} (fp16) needs a CUDA GPU; on CPU use trainer.precision=bf16-mixed or 32-true"
        )
