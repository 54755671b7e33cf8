"""`task.eval_lengths`, checked before training (attnlab.run.eval_lengths tests at those lengths after
it): a list of positive integers; a task whose data comes from a built-in generator with a length;
absolute position tables (`sinusoidal`, `learned`, a transformers model) and variants whose weights
are sized by model.max_len only up to model.max_len; and each length's generator knobs (mqar's pairs
must fit its vocabulary).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from attnlab.errors import AttnlabError, ConfigError

# Absolute position tables: no position past model.max_len exists. RoPE, ALiBi and none have no table.
TABLE_POSITIONS = ("sinusoidal", "learned")
UNCAPPED_POSITIONS = ("rope", "alibi", "none")
DEFAULT_POSITIONAL = "sinusoidal"  # attnlab.nn.ModelConfig.positional's default, for configs without it


def check_eval_lengths(cfg: DictConfig) -> None:
    """task.eval_lengths, if set, can be honoured by this task, model and attention (one-line errors)."""
    lengths = cfg.task.get("eval_lengths")
    if lengths is None:
        return
    key = "task.eval_lengths"
    if not OmegaConf.is_list(lengths) or len(lengths) == 0:
        raise ConfigError(
            f"{key}={_show(lengths)} must be a non-empty list of lengths, e.g. {key}=[256,1024,4096] "
            f"(or {key}=null for none)"
        )
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(
                f"{key} holds {length}; every length must be a positive integer, e.g. {key}=[256,1024]"
            )
    builtin = _generator_node(cfg.task)
    _check_positions(cfg, max(lengths))
    _check_data_module(cfg.task)
    from attnlab.data.generators import generate_test_at

    for length in lengths:  # each length's knobs, on one row drawn: a DataError now, not after training
        try:
            generate_test_at(builtin, int(length), 1)
        except AttnlabError as error:
            raise type(error)(f"{key}: at length {length}, {error}") from error


def _generator_node(task: DictConfig) -> Mapping:
    """The task's `data.builtin` node when its data comes from a built-in generator with a length."""
    from attnlab.data.generators import generator_params, length_knobs

    data = task.get("data")
    name, _ = generator_params(data.get("builtin") or {}) if data is not None else (None, {})
    source = data.get("source", "builtin") if data is not None else None
    if source != "builtin" or name is None or length_knobs(name, 1) is None:
        what = f"data from task.data.source={source}" if source != "builtin" else f"generator '{name}'"
        raise ConfigError(
            f"task.eval_lengths needs a task whose data a built-in generator makes at any length (mqar, passkey, "
            f"lm's corpus, classify's listops); task '{task.get('name')}' has {what}, which cannot: remove "
            f"task.eval_lengths"
        )
    return OmegaConf.to_container(data.builtin, resolve=True)


def _check_positions(cfg: DictConfig, longest: int) -> None:
    """Lengths past model.max_len only where no table is sized by it: the positions and the variants."""
    from attnlab.attention.registry import registry_entry
    from attnlab.nn.hf_models import is_hf_model

    model, max_len = cfg.model, int(cfg.model.max_len)
    if longest <= max_len:
        return
    if is_hf_model(model):
        raise ConfigError(
            f"task.eval_lengths has {longest} > model.max_len={max_len}, past the transformers model's "
            f"positions; raise model.max_len={longest}"
        )
    positional = str(model.get("positional", DEFAULT_POSITIONAL))
    if positional not in UNCAPPED_POSITIONS:
        raise ConfigError(
            f"task.eval_lengths has {longest} > model.max_len={max_len}, past the {positional} position table; "
            f"choose model.positional=rope or model.positional=none (no table), or raise model.max_len={longest}"
        )
    names = {str(cfg.attention.name)} | {
        str(v) for part in ("encoder", "decoder") for v in (model.get(part) or {}).values() if v is not None
    }
    for name in sorted(names):
        if "max_len" in registry_entry(name).context:
            raise ConfigError(
                f"task.eval_lengths has {longest} > model.max_len={max_len}, but attention '{name}' sizes its "
                f"weights by model.max_len; raise model.max_len={longest} or choose another variant"
            )


def _check_data_module(task: DictConfig) -> None:
    from hydra.utils import get_class

    from attnlab.tasks.common import EncodedDataModule

    target = str((task.get("datamodule") or {}).get("_target_", ""))
    try:
        cls = get_class(target)
    except (ImportError, AttributeError, ValueError):  # a misspelt target: the task contract check reports it
        return
    own = next((k for k in cls.__mro__ if "encode_rows" in k.__dict__), None)
    if own is None or own is EncodedDataModule:
        raise ConfigError(
            f"task.eval_lengths: {target} does not define encode_rows(split, rows, *, max_len), so its test set "
            f"cannot be rebuilt at other lengths; define it (attnlab.tasks.common.EncodedDataModule) or remove "
            f"task.eval_lengths"
        )


def _show(value: Any) -> str:
    return (
        "null"
        if value is None
        else str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
    )
