"""Checks on a composed config that Hydra's types cannot express; each failure is a one-line fix."""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from attnlab.config.sequence_lengths import check_sequence_lengths
from attnlab.data.tokenizers import BPE_TOKENIZERS, TOKENIZERS
from attnlab.errors import ConfigError, did_you_mean
from attnlab.host.threads import check_threads
from attnlab.nn.hf_models import is_hf_model, require_transformers
from attnlab.nn.pattern import COUNT_KEYS, check_layer_counts, check_patterns
from attnlab.nn.positional import SCHEMES
from attnlab.nn.spec import AttentionSpec


def _positive(value, key: str, *, allow_none: bool = False, allow_minus_one: bool = False) -> None:
    if value is None and allow_none:
        return
    if allow_minus_one and value == -1:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        also = " (or -1 for no limit)" if allow_minus_one else ""
        raise ConfigError(f"{key}={value} must be a positive number; set {key}=<n> with n > 0{also}")


_ABSENT = object()


def _select(cfg: DictConfig, key: str) -> Any:
    """The value at dotted `key` (interpolations resolved), or _ABSENT when the config has no such key."""
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)


def check_number(
    value: Any,
    key: str,
    *,
    kind: type = int,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    also: tuple[Any, ...] = (),
    example: Any = None,
) -> None:
    """`value` (at config `key`) must be an int (kind=int) or a finite number (kind=float) inside the
    bounds, or one of `also` (None, -1, 'auto' ...); else a one-line ConfigError with an example."""
    if value is _ABSENT or any(value is a or (value == a and type(value) is type(a)) for a in also):
        return
    number = not isinstance(value, bool) and isinstance(value, int if kind is int else int | float)
    bounds = [
        f"{op} {_bound(b)}" for op, b in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if b is not None
    ]
    noun = "an integer" if kind is int else "a number"
    inside = (
        number
        and math.isfinite(value)
        and (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )
    if not inside:
        allowed = f"{noun} {' and '.join(bounds)}".strip()
        extra = f" (or {', '.join('null' if a is None else str(a) for a in also)})" if also else ""
        hint = f"; e.g. {key}={example}" if example is not None else ""
        raise ConfigError(f"{key}={_show(value)} must be {allowed}{extra}{hint}")


def _bound(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else f"{b:g}"


def check_choice(value: Any, key: str, choices: tuple[Any, ...]) -> None:
    if value is _ABSENT or value in choices:
        return
    shown = list(dict.fromkeys(_show(c) for c in choices))
    raise ConfigError(
        f"{key}={_show(value)} is not allowed{did_you_mean(str(value), shown)}; choose {key}= one of {', '.join(shown)}"
    )


def _show(value: Any) -> str:
    return "null" if value is None else str(value) if not isinstance(value, str) or value else "''"


def check_config(cfg: DictConfig) -> None:
    """Every value of a composed app config that Hydra's types cannot check, before anything is built."""
    model, trainer = cfg.model, cfg.trainer
    if is_hf_model(model):  # a transformers model: its own config holds the sizes (attnlab.hf.model)
        require_transformers()
        _positive(model.max_len, "model.max_len")
    else:
        for key in ("d_model", "heads", "max_len", "encoder_layers", "mlp_ratio"):
            _positive(model[key], f"model.{key}")
        if not 0.0 <= model.dropout < 1.0:
            raise ConfigError(f"model.dropout={model.dropout} must be in [0, 1)")
        check_number(model.get("decoder_layers", _ABSENT), "model.decoder_layers", ge=1, example=2)
        check_choice(model.get("positional", _ABSENT), "model.positional", POSITIONAL)
        check_number(model.get("rope_base", _ABSENT), "model.rope_base", kind=float, gt=1, example=10000)
    check_number(cfg.get("seed", _ABSENT), "seed", ge=0, le=2**32 - 1, example=0)
    check_threads(cfg.get("threads"))
    data = cfg.task.get("data")
    if model.get("share_embeddings") is True and data is not None and data.get("shared_tokenizer") is False:
        raise ConfigError(
            "model.share_embeddings=true needs one vocabulary for source and target, but task.data.shared_tokenizer="
            "false; set task.data.shared_tokenizer=true or model.share_embeddings=false"
        )
    check_number(trainer.max_steps, "trainer.max_steps", ge=1, also=(-1,), example=1500)
    check_trainer(trainer)
    check_schedule(trainer, cfg.get("callbacks"))
    data = cfg.task.get("data")
    if data is not None:
        check_number(data.batch_size, "task.data.batch_size", ge=1, example=32)
        for split, limit in (data.get("limit") or {}).items():
            _positive(limit, f"task.data.limit.{split}", allow_none=True)
        check_data(data)
    check_choice(cfg.task.get("monitor_mode", _ABSENT), "task.monitor_mode", ("min", "max"))
    check_tags(cfg.get("tags", _ABSENT))
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
# Typed fields whose `=null` error lists the allowed values.
NULL_REFUSED_CHOICES = {"model.positional": POSITIONAL}
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", 32, "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16", 16)
PRECISIONS += ("64-true", "64", 64)
MAX_TIME = re.compile(r"\d+:\d{2}:\d{2}:\d{2}")  # Lightning's DD:HH:MM:SS


def check_trainer(trainer: DictConfig) -> None:
    """The Lightning Trainer's arguments this project's configs set; Lightning's own errors are
    multi-line and come only once training starts (val_check_interval=0 after the first step)."""
    check_choice(trainer.get("accelerator", _ABSENT), "trainer.accelerator", ACCELERATORS)
    check_choice(trainer.get("precision", _ABSENT), "trainer.precision", PRECISIONS)
    devices = trainer.get("devices", _ABSENT)
    if isinstance(devices, str) and devices != "auto":
        ids = devices.replace(",", " ").split()
        if not ids or not all(i.isdigit() for i in ids):
            raise ConfigError(
                f"trainer.devices={devices} is not allowed; give a count (trainer.devices=1), -1 or auto for all, "
                f"or device ids (trainer.devices=[0,1])"
            )
    elif OmegaConf.is_list(devices) or isinstance(devices, list):
        for i in devices:
            check_number(i, "trainer.devices[]", ge=0, example=0)
    else:
        check_number(devices, "trainer.devices", ge=1, also=(-1, "auto"), example=1)
    if (
        str(trainer.get("accelerator")) == "cpu"
        and isinstance(devices, int)
        and devices > (os.cpu_count() or 1)
    ):
        raise ConfigError(
            f"trainer.devices={devices} on CPU starts {devices} training processes on {os.cpu_count()} cores; "
            f"use trainer.devices=1 (or at most {os.cpu_count()})"
        )
    check_number(trainer.get("num_nodes", _ABSENT), "trainer.num_nodes", ge=1, example=1)
    strategy = trainer.get("strategy", _ABSENT)
    if isinstance(strategy, str):
        from lightning.pytorch.strategies import StrategyRegistry

        check_choice(strategy, "trainer.strategy", ("auto", *StrategyRegistry.available_strategies()))
    check_number(trainer.get("max_epochs", _ABSENT), "trainer.max_epochs", ge=1, also=(-1, None), example=-1)
    max_time = trainer.get("max_time", _ABSENT)
    if max_time not in (_ABSENT, None) and not (isinstance(max_time, str) and MAX_TIME.fullmatch(max_time)):
        raise ConfigError(
            f"trainer.max_time={_show(max_time)} must be DD:HH:MM:SS or null; e.g. trainer.max_time=00:00:28:00"
        )
    interval = trainer.get("val_check_interval", _ABSENT)
    if isinstance(interval, float):
        check_number(interval, "trainer.val_check_interval", kind=float, gt=0, le=1, example=0.25)
    else:
        check_number(interval, "trainer.val_check_interval", ge=1, also=(None,), example=250)
    for key in ("check_val_every_n_epoch",):
        check_number(trainer.get(key, _ABSENT), f"trainer.{key}", ge=1, also=(None,), example=1)
    check_number(trainer.get("log_every_n_steps", _ABSENT), "trainer.log_every_n_steps", ge=1, example=25)
    check_number(
        trainer.get("gradient_clip_val", _ABSENT),
        "trainer.gradient_clip_val",
        kind=float,
        ge=0,
        also=(None,),
        example=1.0,
    )
    check_number(
        trainer.get("accumulate_grad_batches", _ABSENT), "trainer.accumulate_grad_batches", ge=1, example=1
    )
    for stage in ("train", "val", "test"):
        key = f"limit_{stage}_batches"
        limit = trainer.get(key, _ABSENT)
        if isinstance(limit, float):
            check_number(limit, f"trainer.{key}", kind=float, ge=0, le=1, example=0.5)
        else:
            check_number(limit, f"trainer.{key}", ge=0, also=(None,), example=10)
    fast = trainer.get("fast_dev_run", _ABSENT)
    if not isinstance(fast, bool):
        check_number(fast, "trainer.fast_dev_run", ge=0, example="true")
    for key in ("enable_progress_bar", "enable_checkpointing", "enable_model_summary"):
        flag = trainer.get(key, _ABSENT)
        if flag is not _ABSENT and not isinstance(flag, bool):
            raise ConfigError(f"trainer.{key}={_show(flag)} must be true or false")
    deterministic = trainer.get("deterministic", _ABSENT)
    if deterministic is not _ABSENT and deterministic not in (True, False, None, "warn"):
        raise ConfigError(f"trainer.deterministic={_show(deterministic)} must be true, false or warn")


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
    check_number(data.get("num_workers", _ABSENT), "task.data.num_workers", ge=0, example=0)
    check_choice(data.get("tokenizer", _ABSENT), "task.data.tokenizer", TOKENIZERS)
    if data.get("tokenizer") in BPE_TOKENIZERS:
        check_number(data.get("vocab_size", _ABSENT), "task.data.vocab_size", ge=262, example=8000)
    boundaries = OmegaConf.select(data, "packing.boundaries", default=_ABSENT)
    if boundaries is not _ABSENT and not isinstance(boundaries, bool):
        raise ConfigError(
            f"task.data.packing.boundaries={_show(boundaries)} must be true (documents kept apart) or false"
        )
    columns = data.get("columns", _ABSENT)
    if columns is not _ABSENT and columns is not None:
        if not OmegaConf.is_dict(columns):
            raise ConfigError(
                f"task.data.columns={_show(columns)} must map names to columns, e.g. task.data.columns.text=review"
            )
        for name, column in columns.items():
            if column is None:  # a logical column the rows do not use (task=mqar: pre-tokenized, no text)
                continue
            if not isinstance(column, str) or not column:
                raise ConfigError(
                    f"task.data.columns.{name}={_show(column)} must be a column name, e.g. task.data.columns.{name}={name}"
                )
        check_distinct_columns(columns)


def check_distinct_columns(columns: DictConfig) -> None:
    """Two logical columns read from one data column: the model would be given its own answer
    (task.data.columns.text=label reaches test accuracy 1.0) or one side of a pair twice."""
    seen: dict[str, str] = {}
    for name, column in columns.items():
        if column is None:
            continue
        if column in seen:
            other = seen[column]
            raise ConfigError(
                f"task.data.columns.{other}={column} and task.data.columns.{name}={column} read the same column: "
                f"the model would be given its {name} as its {other}; give each its own column"
            )
        seen[column] = str(name)


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
        raise ConfigError(f"{key}={_show(value)} is not valid: expected {noun}; set {key}=<{noun}>")


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
    check_number(decode.get("beam", _ABSENT), "task.decode.beam", ge=1, le=MAX_BEAM, example=4)
    check_number(decode.get("val_beam", _ABSENT), "task.decode.val_beam", ge=1, le=MAX_BEAM, example=1)
    check_number(decode.get("max_new_tokens", _ABSENT), "task.decode.max_new_tokens", ge=1, example=128)
    check_number(
        decode.get("length_penalty", _ABSENT), "task.decode.length_penalty", kind=float, ge=0, example=1.0
    )
    for key in ("val_samples", "test_samples"):
        check_number(decode.get(key, _ABSENT), f"task.decode.{key}", ge=1, also=(None,), example=64)
    check_number(decode.get("table_rows", _ABSENT), "task.decode.table_rows", ge=0, example=50)


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
    if tags is _ABSENT:
        return
    if not OmegaConf.is_list(tags) or not all(isinstance(t, str | int | float) and t != "" for t in tags):
        raise ConfigError(f"tags={_show(tags)} must be a list of words, e.g. tags=[baseline,long]")


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
    if value is _ABSENT or value is None:
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
        check_number(early.get("patience", _ABSENT), "callbacks.early_stopping.patience", ge=0, example=5)
    lr_monitor = callbacks.get("lr_monitor")
    if lr_monitor is not None:
        check_choice(
            lr_monitor.get("logging_interval", _ABSENT),
            "callbacks.lr_monitor.logging_interval",
            ("step", "epoch", None),
        )
    finite = callbacks.get("finite")
    if finite is not None:
        check_number(
            finite.get("inject_nan_at_step", _ABSENT),
            "callbacks.finite.inject_nan_at_step",
            ge=0,
            also=(None,),
            example="null",
        )
    cost = callbacks.get("cost")
    if cost is not None:
        check_number(cost.get("warmup_steps", _ABSENT), "callbacks.cost.warmup_steps", ge=0, example=5)


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
                check_attention_name(str(variant))
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


# ---- command-line overrides, checked before Hydra composes anything -------------------------------
HIDDEN_OPTIONS = {"schema", "default"}  # building blocks of other options, not choices


def group_options(group: str) -> list[str]:
    """The options of a config group: YAML files under conf/<group> plus ConfigStore entries."""
    from hydra.core.config_store import ConfigStore

    if group == "attention":
        from attnlab.attention import available_attentions

        return available_attentions()
    import attnlab.conf as conf_package  # conf/, installed as a package

    conf_dir = Path(conf_package.__file__).parent
    found = {p.stem for p in (conf_dir / group).glob("*.yaml")} if (conf_dir / group).is_dir() else set()
    with contextlib.suppress(
        OSError
    ):  # no such group in the ConfigStore; sub-groups (task/decode) are no options
        found |= {
            name.removesuffix(".yaml")
            for name in ConfigStore.instance().list(group)
            if name.endswith(".yaml")
        }
    return sorted(found - HIDDEN_OPTIONS)


def config_groups() -> list[str]:
    import attnlab.conf as conf_package

    return sorted(
        p.name
        for p in Path(conf_package.__file__).parent.iterdir()
        if p.is_dir() and not p.name.startswith("_")
    )


def _values(override: Any) -> list[Any]:
    """The plain values of a parsed override (every member of a `a,b` sweep); [] for functions like range()."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return [v for v in value.list if not hasattr(v, "list")]
    if override.is_sweep_override():
        return []
    return [value]


def check_overrides(argv: list[str]) -> None:
    """Reject unknown group options, attention names and attention parameters (name or type) with a closest match."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from attnlab.attention import registry

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides: {one_line(err)}; write them as key=value") from None
    groups = set(config_groups()) | {"attention"}
    names: list[str] = []
    for override in overrides:
        key = override.key_or_group
        if override.is_delete():
            continue
        values = _values(override)
        if key == "attention" or key.endswith("_attention"):
            for name in values:
                if name in (None, "null") and key == "attention":  # else Hydra's multi-line ValueError
                    from attnlab.attention import available_attentions

                    raise ConfigError(
                        f"attention=null: every model needs an attention variant; choose attention= one of "
                        f"{', '.join(available_attentions())} (e.g. attention=multihead)"
                    )
                if name in (None, "null"):  # a role override set back to the run's attention
                    continue
                check_attention_name(str(name))
                names.append(str(name))
        elif key in groups and key != "hydra":
            options = group_options(key)
            for value in values:
                if value is not None and str(value) not in options:
                    raise ConfigError(
                        f"unknown {key} '{value}'{did_you_mean(str(value), options)}; "
                        f"choose {key}= one of {', '.join(options) or '(none)'}"
                    )
    names = names or ["multihead"]
    check_layer_counts(
        {o.key_or_group: _values(o) for o in overrides if not o.is_delete() and o.key_or_group in LAYER_KEYS}
    )
    for override in overrides:
        key = override.key_or_group
        if override.is_delete() or not key.startswith("attention.") or key == "attention.name":
            continue
        param = key.split(".", 1)[1]
        having = [n for n in names if param in registry.registry_entry(n).hyperparameters]
        if not having:  # validate against the first named variant so the message lists its parameters
            registry.validate_hyperparameters(names[0], {param: None})
        for name in having:
            for value in _values(override):
                registry.validate_hyperparameters(name, {param: value})


def check_hydra_flags(argv: list[str], *, program: str, config_name: str) -> None:
    """Hydra's own flags (--cfg, --config-name, -m ...): a mistake is one line here, where Hydra
    would print its usage (or a multi-line missing-config error) instead."""
    if not any(a.startswith("-") for a in argv):
        return
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def refuse(message: str):
        raise ConfigError(f"{message}; see `{program} --help`")

    parser.error = refuse  # type: ignore[method-assign]
    parser.exit = lambda status=0, message=None: None  # type: ignore[method-assign]  # --help: Hydra prints it
    parser.print_help = lambda file=None: None  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    if args.config_name not in (None, config_name):
        raise ConfigError(
            f"--config-name={args.config_name}: {program} composes its one config '{config_name}'; drop --config-name "
            f"and choose groups instead (e.g. experiment=<name>)"
        )
    for flag, value in (("--config-dir", args.config_dir), ("--config-path", args.config_path)):
        if value is not None and not Path(value).is_dir():
            raise ConfigError(
                f"{flag}={value} is not a directory; give a directory of YAML configs or drop {flag}"
            )


LAYER_KEYS = {*COUNT_KEYS, *(k for keys in COUNT_KEYS.values() for k in keys)}


def check_attention_name(name: str) -> None:
    """A known variant, or a clear error: a plugin that failed to load says so and why."""
    from attnlab.attention import registry

    broken = registry.broken_plugins()
    if name in broken:
        raise ConfigError(
            f"attention '{name}' is a plugin that failed to load ({broken[name]}); fix or reinstall the "
            f"package that provides it, or choose another variant (`python -m attnlab.variants` lists them)"
        )
    registry.registry_entry(name)  # raises with the closest match


def one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


def hydra_error_message(error: BaseException, argv: list[str] = (), *, config_name: str = "config") -> str:
    """One line for a Hydra/OmegaConf composition error, naming the override and the fix."""
    causes = [error]
    while causes[-1].__cause__ is not None and len(causes) < 5:
        causes.append(causes[-1].__cause__)
    text = " ".join(one_line(c) for c in causes)
    match = re.search(r"Key '([^']+)' (?:is not in struct|not in '\w+')", text)  # a plain or a typed node
    if match:
        key = match.group(1)
        full = re.search(r"full_key: ([\w.]+)", text)
        dotted = full.group(1) if full else key
        parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
        known = _known_keys(parent, argv, config_name)
        hint = did_you_mean(key, known)
        if "is not in struct" not in match.group(
            0
        ):  # a typed node (ModelConfig, DecodeConfig) takes no new keys
            return f"unknown config key '{dotted}'{hint}; the keys of {parent or 'the config'} are: {', '.join(known)}"
        return f"unknown config key '{dotted}'{hint}; to add a new key write +{dotted}=<value>"
    match = re.search(r"Key '([^']+)' not in '\w+' full_key: ([\w.]+)", text)
    if match:  # a typed (dataclass) node, e.g. model.* or task.data.builtin.*: its fields are all its keys
        key, dotted = match.groups()
        parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
        known = _known_keys(parent, argv)
        return f"unknown config key '{dotted}'{did_you_mean(key, known)}; {parent or 'the config'} has: {', '.join(known)}"
    match = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", text)
    if match:
        full = re.search(r"full_key: ([\w.]+)", text)
        where = full.group(1) if full else "a config value"
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(
            match.group(2), match.group(2).lower()
        )
        return f"{where}={match.group(1)} is not valid: expected {kind}; set {where}=<{kind}>"
    match = re.search(r"Value '([^']*)' is not a valid (\w+)", text)
    if match:
        full = re.search(r"full_key: ([\w.]+)", text)
        where = full.group(1) if full else "a config value"
        kind = {"bool": "true or false", "int": "an integer", "float": "a number"}.get(
            match.group(2), match.group(2)
        )
        return f"{where}={match.group(1)} is not valid: expected {kind}; set {where}=<{kind}>"
    match = re.search(r"field '([\w.]+)' is not Optional", text)
    if match:  # null for a typed field that must hold a value
        where = match.group(1)
        choices = NULL_REFUSED_CHOICES.get(where)
        fix = f"choose {where}= one of {', '.join(choices)}" if choices else f"set {where}=<value>"
        return f"{where}=null is not allowed: the key needs a value; {fix} (or drop the override for its default)"
    match = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if match:
        group, option = match.groups()
        raw = "\n".join(str(c) for c in causes)
        listed = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", raw)
        options = [o.strip() for o in listed.group(1).splitlines() if o.strip()] if listed else []
        choices = f"; choose {group}= one of {', '.join(options)}" if options else ""
        return f"unknown {group} '{option}'{did_you_mean(option, options)}{choices}"
    return one_line(causes[0])


def _known_keys(parent: str, argv: list[str], config_name: str = "config") -> list[str]:
    """Keys of the composed config node `parent` (best effort; [] when composition itself fails)."""
    try:
        from hydra import compose, initialize_config_module
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf

        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=[a for a in argv if a.split("=")[0] in ("task", "model", "trainer", "attention")],
            )
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return list(node.keys()) if node is not None and hasattr(node, "keys") else []
    except Exception:
        return []
