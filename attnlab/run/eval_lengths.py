"""Train at one length, test the same weights at others: `task.eval_lengths=[256,1024,4096]`.

After `trainer.test`, the run regenerates the test split at each length with the task's built-in
generator (same knobs and seed; attnlab.data.generators.generate_test_at), encodes it with the data
module's `encode_rows`, and evaluates the best checkpoint on it. results.json's metrics (and the wandb
summary) gain `test/<metric>@<length>` for every metric the task logs (METRICS), e.g. `test/acc@4096`,
and its cost gains `decode_state_bytes@<length>`: the decoding state measured at that context length
(attnlab.nn.state_size), so a KV cache's growth and a hybrid's bytes at 4K are read, not extrapolated.

Sizes are bounded in tokens, so memory and time grow linearly with the length for a linear-time
variant: a length-L test set has at most EVAL_TEST_TOKENS / L rows (never fewer than EVAL_MIN_ROWS,
never more than the generator's n_test or task.data.limit.test), in batches of at most
EVAL_BATCH_TOKENS / L rows (never more than task.data.batch_size, never fewer than one).

Checked before training (`check_eval_lengths`, from attnlab.config.checks): a list of positive
integers; a task whose data comes from a built-in generator with a length; absolute position tables
(`sinusoidal`, `learned`, a transformers model) and variants whose weights are sized by model.max_len
only up to model.max_len; and each length's generator knobs (mqar's pairs must fit its vocabulary).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from attnlab.errors import AttnlabError, ConfigError

log = logging.getLogger(__name__)

EVAL_TEST_TOKENS = 2**18  # tokens in one length's test set: MQAR's 1,000 test rows at N = 256
EVAL_MIN_ROWS = 64  # a floor that keeps an accuracy's resolution at 1/64 however long the rows
EVAL_BATCH_TOKENS = 2**14  # tokens per evaluation batch: MQAR's training batch (64 x 256)
# Absolute position tables: no position past model.max_len exists. RoPE, ALiBi and none have no table.
TABLE_POSITIONS = ("sinusoidal", "learned")
UNCAPPED_POSITIONS = ("rope", "alibi", "none")
DEFAULT_POSITIONAL = "sinusoidal"  # attnlab.nn.ModelConfig.positional's default, for configs without it


def eval_rows(n_test: int | None, length: int, limit: int | None = None) -> int | None:
    """Rows of a length-`length` test set: None keeps a generator's own count (one without n_test)."""
    if n_test is None:
        return None
    rows = max(EVAL_MIN_ROWS, math.ceil(EVAL_TEST_TOKENS / length))
    return min(n_test, rows, limit or n_test)


def eval_batch_size(batch_size: int, length: int) -> int:
    """Rows per evaluation batch at `length` tokens: tokens per batch stay <= EVAL_BATCH_TOKENS."""
    return max(1, min(batch_size, EVAL_BATCH_TOKENS // length))


def metric_key(name: str, length: int) -> str:
    """'test/acc', 4096 -> 'test/acc@4096'."""
    return f"{name}@{length}"


STATE_KEY = "decode_state_bytes"  # results["cost"] key of the decoding state at the training length


def state_at_lengths(cfg: DictConfig, module: Any) -> dict[str, int | None]:
    """{decode_state_bytes@<length>: bytes} for every task.eval_lengths length: the model's decoding state
    per sequence after that many tokens, measured (attnlab.nn.state_size), for results["cost"]."""
    from attnlab.nn.state_size import decode_state_bytes

    lengths = list(cfg.task.get("eval_lengths") or [])
    return {
        metric_key(STATE_KEY, int(length)): decode_state_bytes(module, int(length))[STATE_KEY]
        for length in lengths
    }


# ---- before training ---------------------------------------------------------------------------------
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


# ---- after training ----------------------------------------------------------------------------------
def evaluate_at_lengths(
    cfg: DictConfig, module: Any, datamodule: Any, ckpt_path: str | None
) -> dict[str, float]:
    """{test/<metric>@<length>: value} for every task.eval_lengths length, from the weights at ckpt_path
    (None: the module's own). A trainer without loggers or callbacks runs them, so a logged `test/acc`
    stays the training length's and the training's cost figures are untouched."""
    import torch
    from hydra.utils import instantiate

    lengths = list(cfg.task.get("eval_lengths") or [])
    if not lengths:
        return {}
    if ckpt_path:  # the weights trainer.test evaluated, loaded once, whatever Lightning left in the module
        state = torch.load(ckpt_path, map_location=module.device, weights_only=False)["state_dict"]
        module.load_state_dict(state)
    trainer = instantiate(
        cfg.trainer,
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(cfg.paths.run_dir),
    )
    names = [f"test/{metric}" for metric in type(module).METRICS]
    out: dict[str, float] = {}
    for length in lengths:
        loader = datamodule.test_dataloader_at(int(length))
        (metrics,) = trainer.test(module, dataloaders=loader, verbose=False)
        found = {metric_key(name, length): float(metrics[name]) for name in names if name in metrics}
        log.info(
            "length %d (%d rows, batch %d): %s",
            length,
            len(loader.dataset),
            loader.batch_size,
            "  ".join(f"{k}={v:.4g}" for k, v in found.items()),
        )
        out |= found
    return out
