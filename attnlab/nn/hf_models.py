"""The hook tasks use for `model=hf`: tell a transformers model config from attnlab's own, and build it.

Importable without transformers (the tasks import it always); transformers is imported only when a
model=hf config is built, and its absence is a one-line error naming the extra to install. That is
why it lives beside attnlab's own models rather than in `attnlab.hf`, whose import needs transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from attnlab.errors import ConfigError

FAMILY = "hf"  # conf/model/hf.yaml: `family: hf`
INSTALL_HINT = "pip install 'attnlab[hf]'"


def is_hf_model(model_cfg: Mapping[str, Any]) -> bool:
    """Whether `model_cfg` (the run's `model`) describes a transformers model."""
    return model_cfg.get("family") == FAMILY


def require_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"model=hf needs Hugging Face transformers, which is not installed: {INSTALL_HINT}"
        ) from None


def hf_encoder(vocab_size: int, model_cfg: Mapping[str, Any], attention: Mapping[str, Any]) -> nn.Module:
    """ids (B, N), padding_mask (B, N) -> (B, N, C); `.d_model` is C, `.causal` its attention's kind."""
    require_transformers()
    from attnlab.hf.model import HFEncoder

    return HFEncoder(vocab_size, model_cfg, attention)


def hf_causal_lm(vocab_size: int, model_cfg: Mapping[str, Any], attention: Mapping[str, Any]) -> nn.Module:
    """ids (B, T), padding_mask (B, T) -> next-token logits (B, T, V)."""
    require_transformers()
    from attnlab.hf.model import HFCausalLM

    return HFCausalLM(vocab_size, model_cfg, attention)
