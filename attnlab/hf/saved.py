"""Reloading a transformers model saved with an attnlab variant: the variant, its hyperparameters AND
its kernel weights.

`save_pretrained` writes the kernels' parameters (lowrank's projections, performer's features) with
the model's, but `from_pretrained` drops them as unexpected: the kernels are built on the first
forward, after the weights are loaded. `load` builds them first (attnlab.hf.use), then restores
their weights from the same checkpoint files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.hf.attention import implementation_name

log = logging.getLogger(__name__)
KERNEL_KEY = ".attnlab."  # state_dict keys of kernels: <attention module>.attnlab.<variant>.kernel.<name>


def saved_attention(config: Any) -> dict[str, Any] | None:
    """The variant a model was saved with ({name, <hyperparameters>}), from its config; None if none."""
    settings = getattr(config, "attnlab_attention", None)
    return dict(settings) if settings else None


def load(source: str, auto: Any = None, **kwargs: Any) -> nn.Module:
    """`auto.from_pretrained(source)` (AutoModel by default) with the attnlab variant it was saved with."""
    from transformers import AutoConfig, AutoModel

    from attnlab.hf.switch import use

    settings = saved_attention(AutoConfig.from_pretrained(source))
    if settings is None:
        raise ConfigError(
            f"{source} was not saved with an attnlab attention (its config has no attnlab_attention); "
            "load it with from_pretrained(..., attn_implementation='attnlab_<name>') or attnlab.hf.use"
        )
    auto = auto or AutoModel
    model = auto.from_pretrained(source, attn_implementation=implementation_name(settings["name"]), **kwargs)
    use(model, settings)
    restore_kernel_weights(model, source)
    return model


def restore_kernel_weights(model: nn.Module, source: str) -> int:
    """Load the kernels' tensors saved in `source`'s checkpoint into `model`; returns how many."""
    saved = _kernel_tensors(source)
    if not saved:
        return 0
    own = model.state_dict()
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    state: dict[str, Tensor] = {}
    for key, value in saved.items():
        # a base model saved from a model with a head (or the reverse) differs by the base prefix
        for candidate in (key, key.removeprefix(prefix), prefix + key):
            if candidate in own:
                state[candidate] = value
                break
    if not state:  # another variant's kernels: nothing of this model's to restore
        return 0
    model.load_state_dict(state, strict=False)
    log.info("restored %d attention kernel tensors from %s", len(state), source)
    return len(state)


def _kernel_tensors(source: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

    def resolve(name: str) -> str | None:
        return cached_file(source, name, _raise_exceptions_for_missing_entries=False)

    single = resolve(SAFE_WEIGHTS_NAME)
    if single is not None:
        files = [single]
    else:
        index = resolve(SAFE_WEIGHTS_INDEX_NAME)
        if index is None:
            return {}
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        shards = sorted({shard for key, shard in weight_map.items() if KERNEL_KEY in key})
        files = [path for path in map(resolve, shards) if path is not None]
    tensors: dict[str, Tensor] = {}
    for file in files:
        tensors.update({k: v for k, v in load_file(file).items() if KERNEL_KEY in k})
    return tensors
