"""transformers models inside attnlab's tasks (`model=hf`): built from a config, or loaded pretrained.

    model:
      family: hf
      pretrained: null          # a directory saved with save_pretrained, or a hub id; null = from `config`
      config: {model_type: llama, hidden_size: 64, ...}   # any transformers config (when not pretrained)
      max_len: 512

A model built from `config` gets the task's vocabulary size and `max_len` positions. A pretrained
model keeps its weights; its embedding table grows when the task's vocabulary is larger. Either way
the run's `attention` variant replaces the model's attention (attnlab.hf.use), and a variant that
cannot serve the model (not causal-capable in a decoder, no padding support) is refused here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.attention import get_attention_class
from attnlab.attention.base import capability_error
from attnlab.errors import ConfigError, did_you_mean
from attnlab.hf.saved import restore_kernel_weights, saved_attention
from attnlab.hf.switch import use

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg or {})


def load_model(model_cfg: Mapping[str, Any], *, vocab_size: int, causal_lm: bool) -> nn.Module:
    """The transformers model of `model_cfg`: an LM-head model when causal_lm, else the bare model."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    auto = AutoModelForCausalLM if causal_lm else AutoModel
    max_len = int(model_cfg["max_len"])
    pretrained = model_cfg.get("pretrained")
    if pretrained:
        model = _from_pretrained(auto, str(pretrained))
        if model.get_input_embeddings().num_embeddings < vocab_size:
            log.info("growing %s's embedding table to the task's vocabulary (%d)", pretrained, vocab_size)
            model.resize_token_embeddings(vocab_size)
        positions = _max_positions(model.config)
        if positions is not None and positions < max_len:
            raise ConfigError(
                f"model.max_len={max_len} exceeds {pretrained}'s {positions} positions; set model.max_len<={positions}"
            )
        return model
    settings = _plain(model_cfg.get("config"))
    model_type = settings.pop("model_type", None)
    if not model_type:
        raise ConfigError("model.config.model_type is missing; set e.g. model.config.model_type=llama")
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"model.config.model_type={model_type} is not a transformers architecture"
            f"{did_you_mean(model_type, CONFIG_MAPPING.keys())}; e.g. llama, gpt2, bert"
        )
    check_config_keys(model_type, CONFIG_MAPPING[model_type], settings)
    config = AutoConfig.for_model(model_type, **settings)
    config.vocab_size = vocab_size
    config.max_position_embeddings = max_len  # gpt2 maps it to n_positions
    return auto.from_config(config)


def check_config_keys(model_type: str, config_class: type, settings: Mapping[str, Any]) -> None:
    """transformers keeps unknown config keys as attributes nobody reads: a typo would vanish."""
    if not dataclasses.is_dataclass(config_class):
        return  # older configs are plain classes: nothing reliable to check against
    known = {f.name for f in dataclasses.fields(config_class)} | set(config_class.attribute_map)
    for key in settings:
        if key not in known:
            raise ConfigError(
                f"model.config.{key} is not a {model_type} config key{did_you_mean(key, known)}; "
                f"remove it with ~model.config.{key}, or choose a preset made for {model_type} (model=hf_gpt2, model=hf_bert)"
            )


def _from_pretrained(auto: Any, source: str) -> nn.Module:
    try:
        return auto.from_pretrained(
            source
        ).train()  # from_pretrained returns eval mode; Lightning keeps modes
    except (OSError, ValueError) as error:
        where = "the directory" if Path(source).exists() else "a local directory or a hub id"
        reason = " ".join(str(error).split())[:300]
        raise ConfigError(
            f"model.pretrained={source} could not be loaded as {where} of a transformers model ({reason}); "
            "give a directory written by save_pretrained, or a hub id reachable from here"
        ) from error


def _max_positions(config: Any) -> int | None:
    from attnlab.hf.attention import max_positions

    return max_positions(config)


def attach_attention(
    model: nn.Module, attention: Mapping[str, Any], *, needs: tuple[str, ...], source: str | None
) -> bool:
    """Give `model` the run's attention variant; returns whether its self-attention is causal.

    `needs`: capabilities the task always asks for (key_padding_mask for padded batches); causal is
    added when the model turns out to be a decoder. A model loaded from `source` that was saved with
    the same variant and hyperparameters gets its trained kernel weights back.
    """
    settings = _plain(attention)
    cls = get_attention_class(str(settings["name"]))
    for capability in needs:
        if not getattr(cls.capabilities, capability):
            raise capability_error(cls, capability)
    saved = saved_attention(model.config)
    use(model, settings)  # builds the kernels: a decoder with a non-causal variant fails here
    if source and saved == model.config.attnlab_attention:
        restore_kernel_weights(model, source)
    return any(getattr(m, "is_causal", False) for m in model.modules() if hasattr(m, "attnlab"))


class HFEncoder(nn.Module):
    """A transformers model as attnlab's encoder: ids (B, N), padding_mask (B, N) -> (B, N, C)."""

    def __init__(self, vocab_size: int, model_cfg: Mapping[str, Any], attention: Mapping[str, Any]):
        super().__init__()
        self.model = load_model(model_cfg, vocab_size=vocab_size, causal_lm=False)
        source = model_cfg.get("pretrained")
        self.causal = attach_attention(self.model, attention, needs=("key_padding_mask",), source=source)
        self.d_model = int(self.model.config.hidden_size)

    def forward(self, ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids=ids, attention_mask=_keep(padding_mask)).last_hidden_state  # (B, N, C)


class HFCausalLM(nn.Module):
    """A transformers causal LM: ids (B, T), padding_mask (B, T) -> next-token logits (B, T, V).

    Also split as attnlab.nn.CausalLM is: `hidden` (B, T, C), then `lm_head` on the rows that count.
    """

    def __init__(self, vocab_size: int, model_cfg: Mapping[str, Any], attention: Mapping[str, Any]):
        super().__init__()
        self.model = load_model(model_cfg, vocab_size=vocab_size, causal_lm=True)
        source = model_cfg.get("pretrained")
        if not attach_attention(self.model, attention, needs=("causal", "key_padding_mask"), source=source):
            raise ConfigError(
                f"{type(self.model).__name__} is not a causal decoder, so it cannot be a language model; "
                "choose a decoder architecture (model=hf or model=hf_gpt2)"
            )
        self._check_head_is_last()

    def forward(self, ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids=ids, attention_mask=_keep(padding_mask)).logits  # (B, T, V)

    def hidden(self, ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """The final hidden states (B, T, C), before the output head."""
        return self.model.base_model(input_ids=ids, attention_mask=_keep(padding_mask)).last_hidden_state

    @property
    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    @torch.no_grad()
    def _check_head_is_last(self) -> None:
        """lm_head(hidden) must be the model's logits: some architectures rescale or soft-cap after it."""
        was_training = self.training
        self.eval()
        ids = torch.zeros(1, 2, dtype=torch.long, device=next(self.parameters()).device)
        split = self.lm_head(self.hidden(ids))  # (1, 2, V)
        self.train(was_training)
        if not torch.allclose(split, self(ids), atol=1e-5, rtol=1e-4):
            raise ConfigError(
                f"{type(self.model).__name__} transforms its logits after the output head (a scale or soft-cap), "
                "which task=lm's head on the counted positions would skip; choose another architecture"
            )


def _keep(padding_mask: Tensor | None) -> Tensor | None:
    """transformers' attention_mask (1 = real token) from attnlab's padding mask (True = padding)."""
    return None if padding_mask is None else (~padding_mask).long()  # (B, N)
