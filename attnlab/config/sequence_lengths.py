"""Sequence lengths a run can use, checked before any data is generated or read.

- Generated pre-tokenized rows (task=mqar: `task.data.builtin.seq_len`) are never cut, so a model
  shorter than them could only fail after the whole data set was generated (minutes at the default
  sizes): refused here instead.
- A language model packs its text into windows of model.max_len + 1 tokens, one example each: below
  LM_MIN_MAX_LEN a target sees almost no context, and the shipped corpus (~850K byte tokens) would
  become hundreds of thousands of tiny examples that take long to prepare and say nothing about attention.
"""

from __future__ import annotations

from omegaconf import DictConfig

from attnlab.errors import ConfigError

LM_MIN_MAX_LEN = 8  # the shortest context a packed language-modelling window is worth training on
LM_DATAMODULE = "attnlab.tasks.lm.LMDataModule"


def check_sequence_lengths(cfg: DictConfig) -> None:
    """model.max_len against the task's data: generated rows fit, language-model windows are not degenerate."""
    data, max_len = cfg.task.get("data"), cfg.model.get("max_len")
    if data is None or not isinstance(max_len, int):
        return
    columns = data.get("columns") or {}
    pre_tokenized = "ids" in columns and columns.get("text") is None
    builtin = data.get("builtin") or {}
    seq_len = builtin.get("seq_len") if data.get("source", "builtin") == "builtin" else None
    if pre_tokenized and isinstance(seq_len, int) and seq_len > max_len:
        raise ConfigError(
            f"task.data.builtin.seq_len={seq_len} is longer than model.max_len={max_len} (generated rows are "
            f"not cut); set model.max_len={seq_len} or task.data.builtin.seq_len={max_len}"
        )
    target = str((cfg.task.get("datamodule") or {}).get("_target_", ""))
    if target == LM_DATAMODULE and not pre_tokenized and max_len < LM_MIN_MAX_LEN:
        raise ConfigError(
            f"model.max_len={max_len} is too short for language modelling (windows of max_len + 1 tokens, "
            f"one example each); set model.max_len={LM_MIN_MAX_LEN} or more, e.g. model.max_len=128"
        )
