"""Is `ckpt_path` a checkpoint this run can continue? Checked before fitting, one line per problem.

A checkpoint is read once on the CPU and its saved hyperparameters (Lightning's `hyper_parameters`,
written by the task's `save_hyperparameters()`) are compared with those of the module this run
built: the task (the set of hyperparameter names), the attention variant and its parameters, the
model's sizes and the data-derived sizes (vocabulary, classes, labels). Settings a resumed run may
change (lr, weight decay, warm-up, decoding) are not compared. Without these checks Lightning either
loads a mismatched model silently (a multihead checkpoint into `attention=linear`: same weight
names) or fails with a multi-line state-dict error after the run started.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

from attnlab.errors import ConfigError

# Hyperparameters that define the weights' shapes or meaning; the rest may change on resume.
STRUCTURAL = (
    "vocab_size",
    "target_vocab_size",
    "num_classes",
    "labels",
    "pooling",
    "pad_id",
    "bos_id",
    "eos_id",
)
FRESH = "start fresh (drop ckpt_path)"
DATA_RECORD_KEY = "attnlab_data"  # the run's task.data settings, written into every checkpoint
# Data settings that change neither the rows nor their order.
DATA_FREE = ("num_workers",)

log = logging.getLogger("attnlab.checkpoint_check")  # its name in run.log from before the move to run/


class DataRecord(Callback):
    """Writes the run's task.data settings into each checkpoint (under DATA_RECORD_KEY), so a resumed
    run on other data (another file, limit, tokenizer, generator seed) is refused by check_checkpoint
    instead of continuing a model on data it was not trained on."""

    def __init__(self, data: Mapping[str, Any]):
        self.data = dict(data)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[DATA_RECORD_KEY] = self.data


def data_settings(data: Any) -> dict[str, Any]:
    """task.data as plain values, without the settings that do not change the data (DATA_FREE)."""
    plain = _plain(data) or {}
    return {k: v for k, v in plain.items() if k not in DATA_FREE}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _compare_data(where: str, saved: Any, ours: Mapping[str, Any] | None) -> None:
    if not isinstance(saved, Mapping) or ours is None:
        return  # written before data settings were recorded, or not compared (tests)
    old, new = _flatten(data_settings(saved)), _flatten(data_settings(ours))
    differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differ:
        shown = "; ".join(
            f"task.data.{k}={_short(old.get(k))} there, {_short(new.get(k))} here" for k in differ[:3]
        )
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        settings = " ".join(f"task.data.{k}={_short(old.get(k))}" for k in differ[:3])
        raise ConfigError(
            f"{where} was trained with other data settings: {shown}{more}; to continue it set {settings}, or {FRESH}"
        )


def check_checkpoint(
    path: str | None,
    hparams: Mapping[str, Any],
    *,
    max_steps: int | None = None,
    data: Mapping[str, Any] | None = None,
    own_run: bool = False,
) -> None:
    """Raise ConfigError when `path` cannot be read as a Lightning checkpoint, or was saved by another
    task, attention or model than the one described by `hparams` (the built module's hparams), or on
    other data settings than `data` (this run's task.data, as DataRecord stores it), or has already
    trained `max_steps` (this trainer's limit) steps: resuming it would train nothing and write a
    fresh results.json for the old model. `own_run` (ckpt_path=last: the run directory's own checkpoint,
    as a rerun study cell whose results were lost) says so in a line and lets the run test it."""
    if path is None:
        return
    checkpoint = read_checkpoint(path)
    _compare_data(f"ckpt_path={path}", checkpoint.get(DATA_RECORD_KEY), data)
    step = checkpoint.get("global_step")
    if max_steps is not None and max_steps > 0 and isinstance(step, int) and step >= max_steps:
        if own_run:  # ckpt_path=last: this run trained its steps and lost its results (killed while testing)
            log.info(
                "ckpt_path=%s has trained all %d of trainer.max_steps=%d steps: no training, the trained "
                "model is tested and its results written",
                path,
                step,
                max_steps,
            )
            return
        raise ConfigError(
            f"ckpt_path={path} has already trained {step} steps, trainer.max_steps={max_steps}: resuming would "
            f"train nothing; set trainer.max_steps=<n> above {step} to train on, or {FRESH}"
        )
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, Mapping):
        return  # saved without hyperparameters (a plain Lightning module): nothing to compare
    ours = {str(k): v for k, v in hparams.items()}
    where = f"ckpt_path={path}"
    if set(saved) != set(ours):
        raise ConfigError(
            f"{where} was saved by another task (its settings: {', '.join(sorted(map(str, saved)))}); "
            f"resume it with the task it was trained with, or {FRESH}"
        )
    _compare_attention(where, _plain(saved.get("attention")), _plain(ours.get("attention")))
    _compare_model(where, _plain(saved.get("model")), _plain(ours.get("model")))
    for key in STRUCTURAL:
        if key in ours and _plain(saved.get(key)) != _plain(ours[key]):
            raise ConfigError(
                f"{where} was trained on other data: its {key} is {_short(saved.get(key))}, this run's data gives "
                f"{_short(ours[key])}; resume with the same task.data settings it was trained with, or {FRESH}"
            )


def read_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint's contents, or a one-line ConfigError for a directory, an empty, truncated,
    corrupt or non-checkpoint file."""
    import torch

    file = Path(path)
    where = f"ckpt_path={path}"
    if file.is_dir():
        found = sorted(str(p) for p in file.rglob("*.ckpt"))[:3]
        hint = f", e.g. ckpt_path={found[0]}" if found else " (e.g. <run_dir>/checkpoints/last.ckpt)"
        raise ConfigError(f"{where} is a directory; give a .ckpt file{hint}")
    if file.stat().st_size == 0:
        raise ConfigError(f"{where} is an empty file; give another .ckpt file or {FRESH}")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated, corrupt, text, a pickle of something else...
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise ConfigError(
            f"{where} is not a readable checkpoint (truncated, corrupt or not a .ckpt: {reason}); "
            f"give another .ckpt file or {FRESH}"
        ) from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"{where} is not a Lightning checkpoint (no state_dict); give a .ckpt written by attnlab or {FRESH}"
        )
    return dict(checkpoint)


def _compare_attention(where: str, saved: Any, ours: Any) -> None:
    if not isinstance(saved, Mapping) or not isinstance(ours, Mapping):
        return
    if saved.get("name") != ours.get("name"):
        raise ConfigError(
            f"{where} holds a model with attention '{saved.get('name')}' but this run has attention={ours.get('name')}; "
            f"to continue it use attention={saved.get('name')}, or {FRESH}"
        )
    for key in sorted(set(saved) | set(ours)):
        if key not in ("name", "dropout") and saved.get(key) != ours.get(key):  # dropout: no weights
            raise ConfigError(
                f"{where} was trained with attention.{key}={saved.get(key)} but this run has attention.{key}="
                f"{ours.get(key)}; to continue it set attention.{key}={saved.get(key)}, or {FRESH}"
            )


def _compare_model(where: str, saved: Any, ours: Any) -> None:
    if not isinstance(saved, Mapping) or not isinstance(ours, Mapping):
        return
    for key in sorted(set(saved) | set(ours)):
        if key == "dropout":  # not a shape; a resumed run may change it
            continue
        if saved.get(key) != ours.get(key):
            value = saved.get(key)
            setting = (
                f"model.{key}={value}"
                if not isinstance(value, Mapping)
                else " ".join(f"model.{key}.{k}={v}" for k, v in value.items())
            )
            raise ConfigError(
                f"{where} was trained with model.{key}={_short(value)} but this run has model.{key}={_short(ours.get(key))}; "
                f"to continue it set {setting} (or the model= size it was trained with), or {FRESH}"
            )


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
