"""Per-layer patterns: which variant (with which hyperparameters and layer options) each layer of a stack uses.

    model.layers=[gated_deltanet,gated_deltanet,gated_deltanet,multihead]    # its length is the depth
    model.layers=[gated_deltanet*3,multihead]                                # the same: NAME*N repeats
    model.layers=[local*3,multihead]  attention.window=64                    # a layer named as `attention`
                                                                             #   takes attention.*'s values
    model.layers=['local(window=64)*3',multihead]                            # per-layer hyperparameters
    model.layers=[{name:local,window:64,repeat:3},{name:multihead,output_gate:true}]   # the same, as mappings

An entry is a variant name, `NAME(key=value,...)` with the variant's hyperparameters or layer options
(short_conv, output_gate, qk_norm: attnlab/nn/layer_options.py; a key the variant declares itself,
such as deltanet's own qk_norm, is the variant's), either followed by `*N`, or a mapping
{name: ..., <the same keys>, repeat: N}. A string entry may also join several with `+`: the canonical
label `pattern_label` writes (gated_deltanet*3+multihead) is itself a pattern, so a study can pass it
where a variant name goes. A layer's hyperparameters are the run's `attention.*` when it names the
run's variant, else that variant's defaults, updated by the entry's own keys.

Where a pattern applies (attnlab/nn/transformer.py, `stack_layers`): a stack's own
model.encoder.layers / model.decoder.layers, else model.layers (the same pattern for each stack of an
encoder-decoder), else `attention` (or the role's override) at every layer of its depth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from attnlab.attention import registry
from attnlab.attention.base import capability_error
from attnlab.errors import CapabilityError, ConfigError
from attnlab.nn.layer_options import LayerOptions, check_short_conv
from attnlab.nn.spec import ROLES, AttentionSpec, _first_able

REPEAT = "repeat"  # the mapping key of an entry's repeat count
_ENTRY = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(?:\((.*)\))?\s*(?:\*\s*(\S+))?\s*$")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a stack: its variant (name and validated hyperparameters) and its layer options."""

    attention: AttentionSpec
    options: LayerOptions = LayerOptions()

    @property
    def name(self) -> str:
        return self.attention.name


def parse_pattern(
    pattern: str | Sequence[Any],
    *,
    attention: AttentionSpec | None = None,
    options: LayerOptions | None = None,
    key: str = "model.layers",
) -> list[LayerSpec]:
    """The layers a pattern names, one LayerSpec per layer (repeats expanded); every name, value and
    count checked, a mistake a one-line ConfigError naming `key[i]`. `attention` is the run's variant
    (a layer naming it takes its hyperparameters), `options` the model-wide layer options."""
    options = options or LayerOptions()
    items = [pattern] if isinstance(pattern, str) else list(pattern)
    entries: list[tuple[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, str) and "+" in item:
            entries += [(f"{key}[{i}]", part) for part in item.split("+")]
        else:
            entries.append((f"{key}[{i}]", item))
    if not entries:
        raise ConfigError(
            f"{key}=[] names no layer; give one variant per layer, e.g. {key}=[gated_deltanet*3,multihead], "
            f"or drop {key} to use `attention` at every layer"
        )
    layers: list[LayerSpec] = []
    for where, item in entries:
        name, keys, repeat = _entry(item, where)
        layers += [_layer(name, keys, where, attention, options)] * repeat
    return layers


def _entry(item: Any, where: str) -> tuple[str, dict[str, Any], int]:
    """(name, its keys, repeat count) of one pattern entry."""
    if isinstance(item, Mapping):
        keys = {str(k): v for k, v in item.items()}
        if "name" not in keys:
            raise ConfigError(
                f"{where}={_show(item)} has no name; write {{name: <variant>, ...}}, e.g. {{name: local, window: 64}}"
            )
        name, repeat = str(keys.pop("name")), keys.pop(REPEAT, 1)
    elif isinstance(item, str) and (match := _ENTRY.match(item)):
        name, inside, repeat = match.groups()
        keys = _keys(inside, where, item) if inside else {}
        repeat = 1 if repeat is None else _number(repeat)
    else:
        raise ConfigError(
            f"{where}={_show(item)} is not a layer; write a variant name, NAME*N, NAME(key=value,...) "
            f"or {{name: NAME, key: value}}, e.g. gated_deltanet*3"
        )
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ConfigError(
            f"{where}: the repeat count {repeat!r} of '{name}' must be an integer >= 1; e.g. {name}*3"
        )
    return name, keys, repeat


def _keys(inside: str, where: str, item: str) -> dict[str, Any]:
    keys = {}
    for part in filter(None, (p.strip() for p in inside.split(","))):
        if "=" not in part:
            raise ConfigError(f"{where}={item}: '{part}' is not key=value; e.g. local(window=64)")
        k, v = part.split("=", 1)
        keys[k.strip()] = yaml.safe_load(v.strip())
    return keys


def _number(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _layer(
    name: str, keys: dict[str, Any], where: str, attention: AttentionSpec | None, options: LayerOptions
) -> LayerSpec:
    try:
        own = registry.find_attention(name).hyperparameters  # unknown: the closest match
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    # a key the variant declares itself (deltanet's qk_norm) is the variant's, not the layer option
    layer_options = {k: keys.pop(k) for k in LayerOptions.names() if k in keys and k not in own}
    if "short_conv" in layer_options:
        check_short_conv(layer_options["short_conv"], f"{where}.short_conv")
    for option in ("output_gate", "qk_norm"):
        if option in layer_options and not isinstance(layer_options[option], bool):
            raise ConfigError(f"{where}.{option}={layer_options[option]} must be true or false")
    base = dict(attention.params) if attention is not None and attention.name == name else {}
    try:
        params = registry.validate_hyperparameters(name, {**base, **keys}, prefix=f"{where}.")
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return LayerSpec(AttentionSpec(name, params), options.replace(**layer_options))


def check_role(layers: Sequence[LayerSpec], role: str, key: str) -> None:
    """Each layer's variant can play `role` (decoder_self needs causal, ...): else one line naming the layer."""
    needed, _ = ROLES[role]
    for i, layer in enumerate(layers):
        cls = registry.get_attention_class(layer.name)
        for capability in needed:
            if not getattr(cls.capabilities, capability):
                role_words = role.replace("_", " ") + " attention"
                raise CapabilityError(
                    f"{key}[{i}]: {capability_error(cls, capability)} (needed by {role_words}); "
                    f"choose another variant for that layer, e.g. {_first_able(capability, layer.name)}"
                )


def pattern_label(layers: Sequence[LayerSpec], *, options: LayerOptions | None = None) -> str:
    """The canonical short name of a stack: runs of equal layers as NAME*N, joined by '+'
    (gated_deltanet*3+multihead); hyperparameters off their defaults and layer options off the model's
    (`options`) in parentheses: local(window=64)*3+multihead(output_gate=true). parse_pattern reads it back."""
    options = options or LayerOptions()
    parts: list[tuple[str, int]] = []
    for layer in layers:
        text = _layer_label(layer, options)
        if parts and parts[-1][0] == text:
            parts[-1] = (text, parts[-1][1] + 1)
        else:
            parts.append((text, 1))
    return "+".join(text if n == 1 else f"{text}*{n}" for text, n in parts)


def _layer_label(layer: LayerSpec, options: LayerOptions) -> str:
    defaults = registry.default_hyperparameters(layer.name)
    keys = {k: v for k, v in layer.attention.params.items() if defaults.get(k) != v}
    keys |= {n: getattr(layer.options, n) for n in LayerOptions.names()
             if getattr(layer.options, n) != getattr(options, n) and n not in defaults}  # fmt: skip
    inside = ",".join(f"{k}={_value(v)}" for k, v in sorted(keys.items()))
    return f"{layer.name}({inside})" if inside else layer.name


def _value(value: Any) -> str:
    return "true" if value is True else "false" if value is False else "null" if value is None else str(value)


def _show(item: Any) -> str:
    return str(dict(item)) if isinstance(item, Mapping) else repr(item)


def is_pattern(name: str) -> bool:
    """Whether a name where a variant name goes (a study's `variants=[...]`) is a pattern label rather
    than one registered variant: it repeats (`*`), joins (`+`) or sets keys (`(...)`)."""
    return any(mark in name for mark in "*+(")


def pattern_overrides(pattern: str | Sequence[Any]) -> list[str]:
    """The command-line overrides that run a pattern (e.g. a study cell's variant
    "gated_deltanet*3+multihead" -> ["model.layers=[gated_deltanet*3,multihead]"]); entries with
    keys are quoted, as Hydra reads NAME(...) as a function call. Checked as parse_pattern checks."""
    layers = parse_pattern(pattern)
    parts = pattern_label(layers).split("+")
    entries = [f"'{part}'" if "(" in part else part for part in parts]
    return [f"model.layers=[{','.join(entries)}]"]


# ---- what a run records -----------------------------------------------------------------------------
def has_pattern(model_cfg: Any) -> bool:
    """Whether a model config (ModelConfig or its composed node) sets a per-layer pattern anywhere."""
    parts = [model_cfg, _get(model_cfg, "encoder") or {}, _get(model_cfg, "decoder") or {}]
    return any(_get(part, "layers") is not None for part in parts)


def _get(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, Mapping) or hasattr(node, "get") else getattr(node, key, None)


def config_label(model_cfg: Any, attention: AttentionSpec) -> str | None:
    """The run's name where a variant name goes (wandb tags, results.json, the report) when its model
    config sets a pattern: the pattern's label (gated_deltanet*3+multihead), or, when the encoder's and
    the decoder's differ, encoder:<label>/decoder:<label>; None without a pattern."""
    if not has_pattern(model_cfg):
        return None
    options = LayerOptions.from_config(model_cfg)

    def label(pattern: Any, key: str) -> str | None:
        if pattern is None:
            return None
        return pattern_label(
            parse_pattern(pattern, attention=attention, options=options, key=key), options=options
        )

    shared = label(_get(model_cfg, "layers"), "model.layers")
    stacks = {
        stack: label(_get(_get(model_cfg, stack) or {}, "layers"), f"model.{stack}.layers") or shared
        for stack in ("encoder", "decoder")
    }
    if stacks["encoder"] == stacks["decoder"]:
        return stacks["decoder"]
    return "/".join(f"{stack}:{text or attention.name}" for stack, text in stacks.items())


# ---- checks before anything is built ----------------------------------------------------------------
# A pattern key -> the layer counts its length replaces (model.layers sets every stack's depth).
COUNT_KEYS = {
    "model.layers": ("model.decoder_layers", "model.encoder_layers"),
    "model.encoder.layers": ("model.encoder_layers",),
    "model.decoder.layers": ("model.decoder_layers",),
}


def check_patterns(model_cfg: Any, attention: AttentionSpec | None = None) -> None:
    """Every pattern a composed model config sets parses (names, values, counts; a one-line error)."""
    options = LayerOptions.from_config(model_cfg)
    for key in COUNT_KEYS:
        node = model_cfg
        for part in key.split(".")[1:]:
            node = _get(node, part) if node is not None else None
        if node is not None:
            parse_pattern(_plain(node), attention=attention, options=options, key=key)


def check_layer_counts(given: Mapping[str, Sequence[Any]]) -> None:
    """Command-line values ({key: its values}, a sweep's several): a pattern whose length disagrees
    with a layer count given beside it is a one-line error (the pattern's length is the depth)."""
    for key, count_keys in COUNT_KEYS.items():
        for pattern in given.get(key, ()):
            if pattern is None:
                continue
            depth = len(parse_pattern(_plain(pattern), key=key))
            for count_key in count_keys:
                for count in given.get(count_key, ()):
                    if count != depth:
                        raise ConfigError(
                            f"{key} has {depth} layers but {count_key}={count}; a pattern's length is the "
                            f"depth: drop {count_key} or give {key} {count} layers"
                        )


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
