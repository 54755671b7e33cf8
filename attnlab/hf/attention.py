"""attnlab variants as Hugging Face transformers attention implementations (`attnlab_<name>`).

transformers calls an attention implementation as

    fn(module, query (B, H, Nq, D), key (B, Hkv, Nk, D), value (B, Hkv, Nk, D), attention_mask,
       scaling=..., dropout=..., **kwargs) -> (output (B, Nq, H, D), weights | None)

and builds `attention_mask` with the mask function registered under the same name in
AttentionMaskInterface. Without one, a custom implementation receives NO mask at all, so causal
masking and padding are silently dropped (transformers PR #45811, issue #46132): every variant is
registered in both interfaces.

The mask function turns transformers' mask request into attnlab's contract: a key padding mask
(returned as a broadcastable (B, 1, 1, Nk) bool tensor, True = attend, or None when nothing is
padded), while causality comes from the module (`is_causal`, exactly as transformers' own `sdpa`
decides it). Mask patterns attnlab's contract cannot express (sliding windows, packed sequences,
overlays, static caches) are refused with a one-line error instead of being approximated.

Kernels are built once per (attention module, variant) and kept on the module as
`module.attnlab[<variant>].kernel`, so a variant's parameters (lowrank's projections, performer's
features) train with the model, move with `.to()`, are saved in its state_dict, and the cost meter
finds them (modules named `*.kernel`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.attention import build_attention, get_attention_class
from attnlab.attention.base import Attention, KVCacheDecoding, capability_error
from attnlab.attention.registry import registry_entry
from attnlab.errors import CapabilityError, ConfigError

log = logging.getLogger(__name__)

PREFIX = "attnlab_"
# Keyword arguments some transformers models pass to their attention function that change what it
# computes; attnlab's contract has no place for them, so a model using one is refused.
UNSUPPORTED_FEATURES = {
    "sliding_window": "sliding-window attention",
    "softcap": "attention logit soft-capping",
    "s_aux": "attention sinks",
    "position_bias": "an additive position bias (T5-style relative positions)",
    "head_mask": "a head mask",
}


class KernelSlot(nn.Module):
    """Holds one variant's kernel on a transformers attention module (`module.attnlab[name].kernel`)."""

    def __init__(self, kernel: Attention):
        super().__init__()
        self.kernel = kernel


def implementation_name(variant: str) -> str:
    return f"{PREFIX}{variant}"


def max_positions(config: Any) -> int | None:
    """The model's longest sequence (max_position_embeddings, n_positions...), or None when unknown."""
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def kernel_for(module: nn.Module, variant: str, *, heads: int, head_dim: int) -> Attention:
    """The kernel of `variant` on this attention module, built on first use with the hyperparameters
    attnlab.hf.use stored in the model's config (the variant's defaults otherwise)."""
    slots = getattr(module, "attnlab", None)
    if slots is None:
        slots = nn.ModuleDict()
        module.attnlab = slots  # a submodule: trains, moves and saves with the model
    if variant not in slots:
        gates = sorted(get_attention_class(variant).gates)
        if gates:  # transformers' attention interface passes q, k, v only, never the layer input
            raise CapabilityError(
                f"attention '{variant}' needs gate projections of the layer input ({', '.join(gates)}), which "
                "transformers' attention interface does not pass; use it in attnlab's own models (model=tiny|small|base) "
                "or pick a q/k/v-only variant here, e.g. attn_implementation=attnlab_linear"
            )
        params = configured_params(module, variant)
        context: dict[str, Any] = {"heads": heads, "head_dim": head_dim}
        if "max_len" in registry_entry(variant).context:
            max_len = max_positions(getattr(module, "config", None))
            if max_len is None:
                raise ConfigError(
                    f"attention '{variant}' needs the model's maximum length, but its config has no "
                    "max_position_embeddings; set config.max_position_embeddings=<n>"
                )
            context["max_len"] = max_len
        kernel = build_attention(variant, **params, **context)
        # The new kernel's parameters and buffers follow the model's device and dtype.
        reference = next(module.parameters(), None)
        if reference is not None:
            kernel = kernel.to(device=reference.device, dtype=reference.dtype)
        slots[variant] = KernelSlot(kernel)
    return slots[variant].kernel


def configured_params(module: nn.Module, variant: str) -> dict[str, Any]:
    """Hyperparameters of `variant` stored by attnlab.hf.use in this module's config, else {}."""
    config = getattr(module, "config", None)
    settings = getattr(config, "attnlab_attention", None) or {}
    if settings.get("name") == variant:
        return {k: v for k, v in settings.items() if k != "name"}
    return {}


def key_padding_from_mask(attention_mask: Tensor | None, variant: str) -> Tensor | None:
    """attnlab's key padding mask (B, Nk), True = padding, from the mask our mask function built."""
    if attention_mask is None:
        return None
    if attention_mask.dtype != torch.bool or attention_mask.dim() != 4 or attention_mask.shape[1:3] != (1, 1):
        raise CapabilityError(
            f"attn_implementation='attnlab_{variant}' takes padding as a 2D attention_mask (batch, keys); "
            f"got a prepared {tuple(attention_mask.shape)} {attention_mask.dtype} mask: pass the 2D mask instead"
        )
    return ~attention_mask[:, 0, 0, :]  # (B, Nk)


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """Grouped-query attention: (B, Hkv, N, D) -> (B, Hkv * groups, N, D), each KV head repeated."""
    if groups == 1:
        return x
    B, Hkv, N, D = x.shape
    return x[:, :, None].expand(B, Hkv, groups, N, D).reshape(B, Hkv * groups, N, D)


def check_features(variant: str, kwargs: dict[str, Any]) -> None:
    for key, what in UNSUPPORTED_FEATURES.items():
        if kwargs.get(key) is not None:
            raise CapabilityError(
                f"this model uses {what}, which attnlab's attention contract cannot express; "
                f"attn_implementation='attnlab_{variant}' would compute something else: use 'sdpa' for this model"
            )


def decode_from_cache(kernel: Attention, q: Tensor, k: Tensor, v: Tensor, padding: Tensor | None) -> Tensor:
    """Causal attention of the last Nq positions over Nk > Nq keys (transformers' KV cache).

    Exact softmax variants (a KV cache is their decoding state): a single new query attends over every
    cached key, which is their incremental step. Any incremental variant: its output at a position
    depends only on that query and the keys up to it (that is what step-by-step decoding means), so
    the causal forward over the cached keys, with the earlier queries zero, gives the new rows
    exactly. transformers' cache holds keys and values, not a variant's running state, so recurrent
    variants recompute it from the keys at every step: O(Nk) per step, correct.
    """
    cls = type(kernel)
    nq, nk = q.shape[-2], k.shape[-2]
    if issubclass(cls, KVCacheDecoding) and nq == 1:
        return kernel(q, k, v, causal=False, key_padding_mask=padding)  # (B, H, 1, Dv)
    if not cls.capabilities.incremental:
        base = capability_error(cls, "incremental")
        raise CapabilityError(
            f"{base}, so it cannot continue from transformers' KV cache; generate with use_cache=False "
            "(recomputes the prefix every step) or choose a variant that has it"
        )
    earlier = q.new_zeros(*q.shape[:2], nk - nq, q.shape[-1])  # (B, H, Nk - Nq, D)
    out = kernel(torch.cat([earlier, q], dim=2), k, v, causal=True, key_padding_mask=padding)
    return out[:, :, nk - nq :]  # (B, H, Nq, Dv)


def make_attention_function(variant: str) -> Callable[..., tuple[Tensor, None]]:
    """The transformers attention function of attnlab variant `variant`."""
    takes_dropout = "dropout" in registry_entry(variant).hyperparameters

    def attention(
        module: nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        is_causal: bool | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, None]:
        check_features(variant, kwargs)
        B, H, nq, D = query.shape  # (B, H, Nq, D)
        kernel = kernel_for(module, variant, heads=H, head_dim=D)
        groups = H // key.shape[1]
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)  # (B, H, Nk, D)
        if scaling is not None and not math.isclose(scaling, D**-0.5, rel_tol=1e-6):
            # attnlab kernels score q·k/√D: a model scaling by `scaling` gets q·(scaling·√D)
            query = query * (scaling * math.sqrt(D))
        if dropout and takes_dropout:
            kernel.dropout = dropout  # the model's attention dropout (0 in eval)
        elif dropout and not getattr(kernel, "_warned_dropout", False):
            kernel._warned_dropout = True  # once per kernel
            log.warning(
                "attention '%s' has no attention-probability dropout: the model's p=%s is not applied",
                variant,
                dropout,
            )
        padding = key_padding_from_mask(attention_mask, variant)
        causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
        nk = key.shape[-2]
        if causal and nq < nk:
            out = decode_from_cache(kernel, query, key, value, padding)
        else:
            out = kernel(query, key, value, causal=causal and nq > 1, key_padding_mask=padding)
        return out.transpose(1, 2).contiguous(), None  # (B, Nq, H, Dv)

    attention.__name__ = attention.__qualname__ = f"{PREFIX}{variant}_attention"
    return attention


def attnlab_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Callable | None = None,
    attention_mask: Tensor | None = None,
    config: Any = None,
    **unused: Any,
) -> Tensor | None:
    """transformers mask function: the key padding as (B, 1, 1, Nk) bool (True = attend), None if no padding.

    Causality is not in the mask: the attention function takes it from the module, as `sdpa` does.
    """
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function

    variant = str(getattr(config, "_attn_implementation", "attnlab_?")).removeprefix(PREFIX)
    if mask_function is causal_mask_function:
        if kv_offset != 0 or kv_length != q_offset + q_length:
            raise CapabilityError(
                f"attn_implementation='attnlab_{variant}' aligns the newest query with the newest key, but this cache "
                f"holds {kv_length} key slots for {q_offset + q_length} tokens (a static or sliding cache); "
                "use the default dynamic cache (cache_implementation=None)"
            )
    elif mask_function is not bidirectional_mask_function:
        raise CapabilityError(
            f"this model builds a mask pattern attnlab's attention contract cannot express (a sliding window, "
            f"packed sequences or an overlay); attn_implementation='attnlab_{variant}' would ignore it: use "
            "'sdpa', or pass a 2D attention_mask without packing"
        )
    if attention_mask is None:
        return None
    keep = attention_mask.to(torch.bool)  # (B, <=Nk)
    if keep.shape[-1] < kv_offset + kv_length:  # transformers pads a short 2D mask with "masked"
        keep = torch.nn.functional.pad(keep, (0, kv_offset + kv_length - keep.shape[-1]))
    keep = keep[:, kv_offset : kv_offset + kv_length]  # (B, Nk)
    if bool(keep.all()):
        return None
    return keep[:, None, None, :]  # (B, 1, 1, Nk)


__all__ = [
    "KernelSlot",
    "attnlab_mask",
    "implementation_name",
    "kernel_for",
    "make_attention_function",
]
