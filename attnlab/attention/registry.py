"""The registry of attention variants: one name <-> one class <-> one config.

    @register_attention("linear")
    class LinearAttention(Attention):
        def __init__(self, *, feature_map: Literal["elu", "relu"] = "elu", eps: float = 1e-6): ...

The keyword-only signature is the single source of every hyperparameter and its default: from it
the registry derives the structured config stored in Hydra's ConfigStore (group `attention`), and
validates `build_attention(name, **params)` calls (unknown names, unknown parameters and wrong
types are errors listing what is allowed and the closest match).

Ranges are declared in the same signature, `typing.Annotated[int, Range(ge=1)]` (the vocabulary is
`attnlab.attention.base.Range`: ge/gt/le/lt bounds, `max_len_ratio` for resource bounds relative
to model.max_len, `odd`, `also` for extra allowed values such as 0 = off). `validate_hyperparameters`
checks them for every variant, built-in or plugin, before anything is built; a default outside its
own declared range is refused at registration.

Variants are discovered lazily, on the first query: the built-in modules, then every entry point of
the group `attnlab.attention` declared by an installed package. A plugin that fails to import is
reported by name as a warning and skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import math
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, make_dataclass
from importlib import metadata
from typing import Any, Literal, TypeVar

from attnlab.attention.base import (
    CONTEXT_PARAMETERS,
    Attention,
    Capabilities,
    GateSpec,
    Range,
    install_variant_lookup,
)
from attnlab.errors import ConfigError, PluginError, did_you_mean

ENTRY_POINT_GROUP = "attnlab.attention"
BUILTIN_MODULES = (
    "attnlab.attention.variants.full",
    "attnlab.attention.variants.multihead",
    "attnlab.attention.variants.linear",
    "attnlab.attention.variants.lowrank",
    "attnlab.attention.variants.nystrom",
    "attnlab.attention.variants.performer",
    "attnlab.attention.variants.local",
    "attnlab.attention.variants.retention",
    "attnlab.attention.variants.gla",
    "attnlab.attention.variants.deltanet",
    "attnlab.attention.variants.gated_deltanet",
    "attnlab.attention.variants.based",
    "attnlab.attention.variants.mamba2",
    "attnlab.attention.variants.fox",
    "attnlab.attention.variants.gated_deltaproduct",
    "attnlab.attention.variants.kda",
    "attnlab.attention.variants.rwkv7",
    "attnlab.attention.variants.nsa",
)
_SCALAR_TYPES = (bool, int, float, str)

A = TypeVar("A", bound=type[Attention])


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: type  # bool, int, float or str
    default: Any
    choices: tuple[Any, ...] | None = None  # from a Literal[...] annotation
    optional: bool = False  # `X | None`
    range: Range | None = None  # from Annotated[X, Range(...)]

    def describe(self) -> str:
        kind = "|".join(map(repr, self.choices)) if self.choices else self.type.__name__
        if self.optional:
            kind += "|None"
        bounds = f" ({self.range.describe()})" if self.range is not None and self.range.describe() else ""
        return f"{self.name}: {kind} = {self.default!r}{bounds}"


@dataclass
class Entry:
    cls: type[Attention]
    source: str  # "built-in", "plugin <distribution> <version>" or "module <name>" (registered at run time)
    hyperparameters: dict[str, Hyperparameter]
    context: tuple[str, ...]  # context keywords the variant wants (head_dim, heads, max_len)
    config_class: type = field(repr=False)


_registry: dict[str, Entry] = {}
_broken_plugins: dict[str, str] = {}  # entry-point name -> reason
_discovered = False
_current_source: str | None = None  # "plugin <dist> <version>" while an entry point loads


# ---- registration -------------------------------------------------------------------------------
def register_attention(name: str) -> Callable[[A], A]:
    """Class decorator adding an Attention subclass to the registry under `name`."""

    def decorate(cls: A) -> A:
        _register(name, cls, _current_source or _source_of_module(cls.__module__))
        return cls

    return decorate


def _source_of_module(module: str) -> str:
    """Source label of a variant registered outside plugin loading (a script, a notebook, a test)."""
    return "built-in" if module in BUILTIN_MODULES else f"module {module}"


def _register(name: str, cls: type[Attention], source: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Attention)):
        raise PluginError(f"attention '{name}' must be a subclass of attnlab.Attention, got {cls!r}")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise PluginError(f"attention name {name!r} must be letters, digits, '_' or '-'")
    if name in _registry:
        if _registry[name].cls is cls:
            return
        raise PluginError(
            f"attention '{name}' is already registered by {_registry[name].cls.__module__}."
            f"{_registry[name].cls.__qualname__} ({_registry[name].source}); choose another name"
        )
    if not isinstance(cls.capabilities, Capabilities):
        raise PluginError(f"attention '{name}': `capabilities` must be an attnlab.Capabilities instance")
    _check_gates(name, cls)
    params, context = _signature_of(name, cls)
    cls.name = name
    _registry[name] = Entry(cls, source, params, context, _make_config_class(name, cls, params))


def _check_gates(name: str, cls: type[Attention]) -> None:
    """Declared gates are GateSpecs whose names `forward` and `step` take as keywords (or take as
    `**gates` in a class that checks them by name: `takes_declared_gates`)."""
    gates = cls.gates
    if not isinstance(gates, dict) or not all(isinstance(spec, GateSpec) for spec in gates.values()):
        raise PluginError(f"attention '{name}': `gates` must map names to attnlab.GateSpec instances")
    for gate in gates:
        for method in ("forward", "step") if cls.capabilities.incremental else ("forward",):
            parameters = inspect.signature(getattr(cls, method)).parameters
            parameter = parameters.get(gate)
            takes_all = getattr(cls, "takes_declared_gates", False) and any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
            )  # **gates, checked by name against `gates` (attention.recurrent.RecurrentAttention)
            if takes_all:
                continue
            if parameter is None or parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise PluginError(
                    f"attention '{name}': gate '{gate}' must be a keyword-only parameter of {method}()"
                )


def _signature_of(name: str, cls: type[Attention]) -> tuple[dict[str, Hyperparameter], tuple[str, ...]]:
    """Hyperparameters (keyword-only, typed, with defaults) and context keywords of cls.__init__."""
    if cls.__init__ is Attention.__init__ or cls.__init__ is object.__init__:
        return {}, ()
    signature = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    params: dict[str, Hyperparameter] = {}
    context: list[str] = []
    for p in list(signature.parameters.values())[1:]:  # skip self
        where = f"attention '{name}' ({cls.__module__}.{cls.__qualname__}), parameter '{p.name}'"
        if p.kind is inspect.Parameter.VAR_KEYWORD or p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise PluginError(f"{where}: **kwargs/*args would swallow typos; declare each parameter")
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise PluginError(f"{where}: must be keyword-only (put it after `*` in __init__)")
        if p.name in CONTEXT_PARAMETERS:
            context.append(p.name)
            continue
        if p.default is inspect.Parameter.empty:
            raise PluginError(f"{where}: needs a default value")
        if p.name not in hints:
            raise PluginError(f"{where}: needs a type annotation (bool, int, float, str or Literal[...])")
        params[p.name] = _hyperparameter(where, p.name, hints[p.name], p.default)
    return params, tuple(context)


def _split_annotated(where: str, hint: Any) -> tuple[Any, Range | None]:
    """Annotated[X, Range(...)] -> (X, the Range); anything else -> (hint, None)."""
    if typing.get_origin(hint) is not typing.Annotated:
        return hint, None
    base, *extras = typing.get_args(hint)
    ranges = [e for e in extras if isinstance(e, Range)]
    if len(ranges) != len(extras) or len(ranges) > 1:
        raise PluginError(f"{where}: Annotated[...] takes one attnlab Range(...), got {extras!r}")
    return base, ranges[0] if ranges else None


def _hyperparameter(where: str, name: str, hint: Any, default: Any) -> Hyperparameter:
    """The declaration of one hyperparameter: its type, choices, optionality and Range."""
    hint, declared = _split_annotated(where, hint)  # Annotated[int | None, Range(...)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # Annotated[int, Range(...)] | None
        members = [_split_annotated(where, a) for a in typing.get_args(hint)]
        inner = [r for _, r in members if r is not None]
        if inner and declared is None:
            declared = inner[0]
        hint = typing.Union[tuple(a for a, _ in members)]  # noqa: UP007 (built from a tuple)
    p = _plain_hyperparameter(where, name, hint, default)
    if declared is None:
        return p
    if p.type not in (int, float) or p.choices is not None:
        raise PluginError(f"{where}: Range(...) applies to int or float parameters only")
    if default is not None and declared.violation(default) is not None:
        raise PluginError(f"{where}: the default {default!r} {declared.violation(default)}")
    return dataclasses.replace(p, range=declared)


def _plain_hyperparameter(where: str, name: str, hint: Any, default: Any) -> Hyperparameter:
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) != 1 or len(args) != 2:
            raise PluginError(f"{where}: unions other than `X | None` are not supported")
        optional, hint = True, non_none[0]
        args = typing.get_args(hint)
    if typing.get_origin(hint) is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) != 1 or next(iter(kinds)) not in _SCALAR_TYPES:
            raise PluginError(f"{where}: Literal choices must all be bool, int, float or str")
        return Hyperparameter(name, next(iter(kinds)), default, tuple(args), optional)
    if hint not in _SCALAR_TYPES:
        raise PluginError(f"{where}: type {hint!r} unsupported; use bool, int, float, str or Literal[...]")
    return Hyperparameter(name, hint, default, None, optional)


def _make_config_class(name: str, cls: type[Attention], params: dict[str, Hyperparameter]) -> type:
    """The structured config `{name: ..., <hyperparameters>}` Hydra validates overrides against."""
    specs: list[tuple[str, Any, Any]] = [("name", str, field(default=name))]
    for p in params.values():
        annotation = p.type | None if p.optional else p.type  # type: ignore[operator]
        specs.append((p.name, annotation, field(default=p.default)))
    return make_dataclass(f"{cls.__name__}Config", specs)


# ---- discovery ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _source(label: str) -> Iterator[None]:
    global _current_source
    previous, _current_source = _current_source, label
    try:
        yield
    finally:
        _current_source = previous


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True  # set first: registering a variant may query the registry
    try:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
    except BaseException:
        _discovered = False  # a broken built-in is a bug: raise it now, and again on the next query
        raise
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        label = f"plugin {dist.metadata['Name']} {dist.version}" if dist is not None else f"plugin {ep.value}"
        if ep.name in _registry and _registry[ep.name].source != label:  # taken before this plugin loaded
            taken_by = _registry[ep.name].source
            _broken_plugins[ep.name] = f"the name is taken by a {taken_by} variant"
            warnings.warn(
                f"attnlab: attention plugin '{ep.name}' ({label}) skipped: the name is taken by a {taken_by} variant",
                stacklevel=2,
            )
            continue
        try:
            with _source(label):
                loaded = ep.load()
                if ep.name not in _registry:
                    _register(ep.name, loaded, label)
        except Exception as exc:  # a broken plugin must never break the others
            _broken_plugins[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"attnlab: attention plugin '{ep.name}' ({label}, {ep.value}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                stacklevel=2,
            )


def rediscover() -> None:
    """Forget plugin discovery and run it again (after installing a plugin in a live process)."""
    global _discovered
    for name in [n for n, e in _registry.items() if e.source.startswith("plugin ")]:
        del _registry[name]
    _broken_plugins.clear()
    _discovered = False
    _discover()


# ---- queries ------------------------------------------------------------------------------------
def available_attentions() -> list[str]:
    """Names of every registered variant, built-ins first (in their canonical order), then plugins."""
    _discover()
    rank = {module: i for i, module in enumerate(BUILTIN_MODULES)}
    # Import order may differ (a test or script importing a variant module first): sort built-ins.
    return sorted(_registry, key=lambda name: rank.get(_registry[name].cls.__module__, len(rank)))


def broken_plugins() -> dict[str, str]:
    """Plugins that failed to load: entry-point name -> reason."""
    _discover()
    return dict(_broken_plugins)


def registry_entry(name: str) -> Entry:
    _discover()
    if name not in _registry:
        raise ConfigError(
            f"unknown attention '{name}'{did_you_mean(name, _registry)}; "
            f"available: {', '.join(_registry)} (list them with `python -m attnlab.variants`)"
        )
    return _registry[name]


def find_attention(name: str) -> Entry:
    """The variant a user named: the one check of an attention name, wherever it comes from (the
    command line, a role, a layer pattern, the bench's, the study's or the conformance check's
    variants). An unknown name is a ConfigError with the closest match; a plugin that failed to load
    says so and why."""
    _discover()
    if name in _broken_plugins and name not in _registry:
        raise ConfigError(
            f"attention '{name}' is a plugin that failed to load ({_broken_plugins[name]}); fix or reinstall the "
            f"package that provides it, or choose another variant (`python -m attnlab.variants` lists them)"
        )
    return registry_entry(name)


def get_attention_class(name: str) -> type[Attention]:
    return registry_entry(name).cls


def variants_with(capability: str) -> list[str]:
    return [n for n in available_attentions() if getattr(_registry[n].cls.capabilities, capability)]


install_variant_lookup(variants_with)  # capability errors name the variants that can (attention.base)


def default_hyperparameters(name: str) -> dict[str, Any]:
    return {p.name: p.default for p in registry_entry(name).hyperparameters.values()}


# ---- building -----------------------------------------------------------------------------------
def validate_hyperparameters(
    name: str, params: dict[str, Any], *, max_len: int | None = None, prefix: str = "attention."
) -> dict[str, Any]:
    """Check names, types, choices and declared ranges of `params` for variant `name`; return them
    with defaults filled. With `max_len` (the model's positional size) the resource bounds of the
    declared ranges (`Range(max_len_ratio=...)`) are checked too, defaults included. Messages name
    each key as `<prefix><key>` (the bench passes `params.<name>.`)."""
    entry = registry_entry(name)
    allowed = entry.hyperparameters
    resolved = default_hyperparameters(name)
    for key, value in params.items():
        if key not in allowed:
            listing = ", ".join(p.describe() for p in allowed.values()) or "none"
            raise ConfigError(
                f"attention '{name}' has no parameter '{key}'{did_you_mean(key, allowed)}; its parameters: {listing}"
            )
        resolved[key] = _coerce(name, allowed[key], value, prefix)
    if max_len is not None:
        for key, p in allowed.items():
            value = resolved[key]
            why = None if p.range is None or value is None else p.range.max_len_violation(value, max_len)
            if why is not None:
                bound = int(p.range.max_len_ratio * max_len)
                example = min(p.default, bound) if p.default is not None else bound
                raise ConfigError(
                    f"{prefix}{key}={value} {why}; choose {prefix}{key}={example} or raise model.max_len "
                    f"('{name}': a count far beyond the sequence costs more than it buys)"
                )
    return resolved


def _coerce(name: str, p: Hyperparameter, value: Any, prefix: str = "attention.") -> Any:
    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{prefix}{p.name}={value!r} is invalid for '{name}': {reason}")

    if value is None:
        if p.optional:
            return None
        raise bad(f"expected {p.type.__name__}, got None")
    if p.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if p.type is not bool and isinstance(value, bool) or not isinstance(value, p.type):
        raise bad(f"expected {p.type.__name__}, got {type(value).__name__}")
    if p.choices is not None and value not in p.choices:
        raise bad(f"choose one of {list(p.choices)}{did_you_mean(value, map(str, p.choices))}")
    if p.type is float and not math.isfinite(value):  # nan/inf break every kernel
        raise bad(f"expected a finite number, got {value}")
    if p.type is int and not -(2**63) <= value < 2**63:  # past int64 every tensor op raises a TypeError
        raise bad(f"expected a 64-bit integer (at most {2**63 - 1})")
    why = None if p.range is None else p.range.violation(value)
    if why is not None:
        example = p.range.example(value, p.default)
        raise ConfigError(
            f"{prefix}{p.name}={value!r} {why}; e.g. {prefix}{p.name}={example!r} (attention '{name}')"
        )
    return value


def build_attention(name: str, **params: Any) -> Attention:
    """Build variant `name`. Context keywords (head_dim, heads, max_len) are passed on only to
    variants that declare them; every other keyword must be one of the variant's hyperparameters."""
    entry = registry_entry(name)
    context = {key: params.pop(key) for key in CONTEXT_PARAMETERS if key in params}
    missing = [key for key in entry.context if key not in context]
    if missing:
        raise ConfigError(
            f"attention '{name}' needs {', '.join(missing)} to be built (the layer passes them)"
        )
    # Resource bounds (Range.max_len_ratio) are checked here only for variants built for a max_len
    # (their weights depend on it); for the others, max_len is a property of the run's config, checked
    # there (attnlab.config.checks), so the bench may measure any length.
    built_for = context.get("max_len") if "max_len" in entry.context else None
    hyper = validate_hyperparameters(name, params, max_len=built_for)
    return entry.cls(**hyper, **{key: context[key] for key in entry.context})


def store_attention_configs() -> None:
    """Store every variant's structured config in Hydra's ConfigStore as group `attention`."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in available_attentions():
        store.store(group="attention", name=name, node=_registry[name].config_class, provider="attnlab")
