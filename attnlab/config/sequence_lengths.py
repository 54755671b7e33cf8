"""Sequence lengths a run can use, set and checked before any data is generated or read.

- `model.max_len=null` is "as long as the generated rows": the one length of a generated task is its
  data's knob (mqar/passkey/mad: `task.data.builtin.seq_len`, mad's null = the kind's own; listops:
  `max_length`), and `resolve_max_len` writes that number into model.max_len once, before anything
  reads it, so the model, the data's truncation, the checks and results.json all see a number.
- Generated pre-tokenized rows (task=mqar: `task.data.builtin.seq_len`; task=mad: the kind's own
  length when seq_len is null) are never cut, so a model shorter than them could only fail after the
  whole data set was generated (minutes at the default sizes): refused here instead.
- A language model packs its text into windows of model.max_len + 1 tokens, one example each: below
  LM_MIN_MAX_LEN a target sees almost no context, and the shipped corpus (~850K byte tokens) would
  become hundreds of thousands of tiny examples that take long to prepare and say nothing about attention.
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, read_write

from attnlab.data.generators import generated_length, generator_params
from attnlab.errors import ConfigError

LM_MIN_MAX_LEN = 8  # the shortest context a packed language-modelling window is worth training on
LM_DATAMODULE = "attnlab.tasks.lm.LMDataModule"


def resolve_max_len(cfg: DictConfig) -> None:
    """model.max_len=null -> the length of the rows the task generates (generated_length), in place.
    Data whose rows have no set length (files, the hub, task=lm's corpus) needs a number instead."""
    model = cfg.get("model")
    if model is None or "max_len" not in model or model.max_len is not None:
        return
    data = cfg.task.get("data") or {}
    source = data.get("source", "builtin")
    builtin = data.get("builtin") or {}
    length = generated_length(builtin) if source == "builtin" else None
    if length is None:
        name = generator_params(builtin)[0] if source == "builtin" else None
        rows = (
            f"the rows of task.data.source={source}"
            if name is None
            else f"the rows of the built-in {name} generator"
        )
        raise ConfigError(
            f"model.max_len=null takes the length of generated rows, but {rows} have no set length; "
            f"set model.max_len=<tokens>, e.g. model.max_len=512"
        )
    with read_write(model):
        model.max_len = length


def check_sequence_lengths(cfg: DictConfig) -> None:
    """model.max_len against the task's data: generated rows fit, language-model windows are not degenerate."""
    data, max_len = cfg.task.get("data"), cfg.model.get("max_len")
    if data is None or not isinstance(max_len, int):
        return
    columns = data.get("columns") or {}
    pre_tokenized = "ids" in columns and columns.get("text") is None
    if pre_tokenized and data.get("source", "builtin") == "builtin":
        check_generated_length(data.get("builtin") or {}, max_len)
    target = str((cfg.task.get("datamodule") or {}).get("_target_", ""))
    if target == LM_DATAMODULE and not pre_tokenized and max_len < LM_MIN_MAX_LEN:
        raise ConfigError(
            f"model.max_len={max_len} is too short for language modelling (windows of max_len + 1 tokens, "
            f"one example each); set model.max_len={LM_MIN_MAX_LEN} or more, e.g. model.max_len=128"
        )


def check_generated_length(builtin: Mapping, max_len: int) -> None:
    """The generated rows fit model.max_len: seq_len, or (mad's seq_len=null) the kind's own length."""
    length = generated_length(builtin)
    if not isinstance(length, int) or length <= max_len:
        return
    seq_len = builtin.get("seq_len")
    rows = f"task.data.builtin.seq_len={'null' if seq_len is None else seq_len}"
    if seq_len is None:  # mad: each kind's own length
        rows += f" (the kind's own length, {length} tokens)"
    raise ConfigError(
        f"{rows} is longer than model.max_len={max_len} (generated rows are not cut); set "
        f"model.max_len={length} or task.data.builtin.seq_len={max_len}"
    )
