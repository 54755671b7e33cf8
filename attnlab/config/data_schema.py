"""`task.data`'s keys as a typed schema (stored as `task/data/schema`, under conf/task/data/default.yaml,
the block every task starts from): each key's type, default and per-field check declared side by side,
as the model's and the trainer's are (attnlab.config.schemas). OmegaConf checks the types when the
config is composed (task.data.batch_size=abc is worded by the field's declared check); `check_fields`
runs the declared checks. What relates two keys (bpe's vocab_size, shared embeddings against
shared_tokenizer) is checked in attnlab.config.checks.

The schema is closed, as the others: task.data.bach_size=8 is an unknown key, not a new one. It lists
the keys the built-in tasks add (seq2seq's shared_tokenizer, task=lm's packing) with null where a task
does not use them. A plugin task whose data needs keys of its own writes its whole `data:` block
instead of listing `- data: default` (docs/adding-a-task.md); the declared checks still run on the keys
it shares with the schema (attnlab.config.checks.check_data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from attnlab.config.fields import ABSENT, bounded, check_positive, checked, flag, one_of, show
from attnlab.data.tokenizers import TOKENIZERS
from attnlab.errors import ConfigError


def _limits(value: Any, key: str) -> None:
    """{split: rows or null}: at most that many rows of each split are read."""
    if value is ABSENT or value is None:
        return
    for split, limit in (value or {}).items():
        check_positive(limit, f"{key}.{split}", allow_none=True)


def _columns(value: Any, key: str) -> None:
    """{logical column: the data's column, or null where the rows do not use it}; no data column read twice."""
    if value is ABSENT or value is None:
        return
    if not OmegaConf.is_dict(value) and not isinstance(value, dict):
        raise ConfigError(f"{key}={show(value)} must map names to columns, e.g. {key}.text=review")
    for name, column in value.items():
        if column is None:  # a logical column the rows do not use (task=mqar: pre-tokenized, no text)
            continue
        if not isinstance(column, str) or not column:
            raise ConfigError(f"{key}.{name}={show(column)} must be a column name, e.g. {key}.{name}={name}")
    _distinct(value, key)


def _distinct(columns: Any, key: str) -> None:
    """Two logical columns read from one data column: the model would be given its own answer
    (task.data.columns.text=label reaches test accuracy 1.0) or one side of a pair twice."""
    seen: dict[str, str] = {}
    for name, column in columns.items():
        if column is None:
            continue
        if column in seen:
            other = seen[column]
            raise ConfigError(
                f"{key}.{other}={column} and {key}.{name}={column} read the same column: "
                f"the model would be given its {name} as its {other}; give each its own column"
            )
        seen[column] = str(name)


def _boundaries(value: Any, key: str) -> None:
    if value is not ABSENT and not isinstance(value, bool):
        raise ConfigError(f"{key}={show(value)} must be true (documents kept apart) or false")


@dataclass
class Packing:
    """task=lm's packing of text rows into windows (tasks/lm.py, attnlab.data.packing)."""

    # Rows are packed with an EOS between documents. true: attention and recurrent state never cross a
    # document boundary (per-token segment ids, attnlab/nn/segments.py; docs/positions.md); false: they
    # flow across it, the EOS alone marks it (GPT-2/nanoGPT style)
    boundaries: bool = checked(True, _boundaries)


@dataclass
class DataSchema:
    """The keys every task's data takes (each settable as task.data.<key>=...); a task names its own
    columns and places its generator's knobs under `builtin`."""

    # builtin | shipped | hf | files (attnlab.data.sources, which names the choices when one is unknown)
    source: str = "builtin"
    name: str | None = None  # hub dataset, e.g. imdb, wmt14 or cnn_dailymail (source=hf)
    subset: str | None = None  # hub config name, e.g. de-en or 3.0.0
    path: str | None = None  # one local file with a split column (source=files)
    split_column: str = "split"
    train: str | None = None  # or one local file per split (jsonl/json/csv/parquet)
    validation: str | None = None
    test: str | None = None
    # the task's logical column -> the column in the data (each task names its own)
    columns: Any = checked({}, _columns)
    limit: Any = checked({"train": None, "validation": None, "test": None}, _limits)
    # the task's built-in generator's knobs: each task config places its schema here
    # (`- /builtin@data.builtin: <generator>`, attnlab.data.generators)
    builtin: Any = field(default_factory=dict)
    # bytes | bpe | bpe_placeholders (trained on the train split, cached under paths.data_cache)
    tokenizer: str = one_of("bytes", TOKENIZERS)
    vocab_size: int = 8000  # bpe only (its lower bound relates two keys: attnlab.config.checks)
    batch_size: int = bounded(32, ge=1, example=32)
    num_workers: int = bounded(0, ge=0, example=0)
    # seq2seq (translate, summarise): one tokenizer (and embedding size) for both sides, or one per side
    shared_tokenizer: bool | None = flag(None)
    packing: Packing | None = None  # task=lm: how text rows are packed (null: the task packs nothing)
