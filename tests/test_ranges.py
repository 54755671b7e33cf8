"""Hyperparameter ranges declared in a variant's signature (`Annotated[int, Range(ge=1)]`): read by
the registry, checked before anything is built, the same for plugins as for built-ins."""

from __future__ import annotations

from typing import Annotated

import pytest
from torch import Tensor

from attnlab import Attention, Range, build_attention, register_attention
from attnlab.attention import registry
from attnlab.errors import ConfigError, PluginError


@pytest.fixture
def register():
    """register_attention for a test; the names are removed again afterwards."""
    added: list[str] = []

    def add(name: str, cls: type) -> type:
        added.append(name)
        return register_attention(name)(cls)

    yield add
    for name in added:
        registry._registry.pop(name, None)


class _Kernel(Attention):
    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal=False, key_padding_mask=None) -> Tensor:
        return v


def test_a_plugin_gets_the_declared_ranges_checked(register):
    class Ranged(_Kernel):
        def __init__(
            self,
            *,
            width: Annotated[int, Range(ge=2, le=64)] = 8,
            temperature: Annotated[float, Range(gt=0)] = 1.0,
            limit: Annotated[int, Range(ge=1)] | None = None,
        ):
            super().__init__()

    register("ranged_test", Ranged)
    params = registry.registry_entry("ranged_test").hyperparameters
    assert params["width"].describe() == "width: int = 8 (>= 2 and <= 64)"
    assert params["limit"].optional and params["limit"].range == Range(ge=1)
    with pytest.raises(
        ConfigError, match=r"attention.width=1 must be >= 2 and <= 64; e.g. attention.width=8"
    ):
        build_attention("ranged_test", width=1)
    with pytest.raises(ConfigError, match=r"attention.temperature=0.0 must be > 0"):
        build_attention("ranged_test", temperature=0)
    with pytest.raises(ConfigError, match=r"attention.limit=0 must be >= 1"):
        build_attention("ranged_test", limit=0)
    build_attention("ranged_test", width=64, temperature=0.5, limit=None)


def test_max_len_bounds_apply_where_max_len_is_known(register):
    class Landmarks(_Kernel):
        def __init__(self, *, count: Annotated[int, Range(ge=1, max_len_ratio=1)] = 16):
            super().__init__()

    register("landmarks_test", Landmarks)
    registry.validate_hyperparameters("landmarks_test", {"count": 500})  # no max_len: no bound
    with pytest.raises(
        ConfigError, match=r"attention.count=500 must be <= model.max_len=128; choose attention.count=16"
    ):
        registry.validate_hyperparameters("landmarks_test", {"count": 500}, max_len=128)
    with pytest.raises(ConfigError, match=r"params.landmarks_test.count=0 must be >= 1"):
        registry.validate_hyperparameters("landmarks_test", {"count": 0}, prefix="params.landmarks_test.")


def test_a_malformed_declaration_is_refused_at_registration(register):
    class DefaultOutside(_Kernel):
        def __init__(self, *, window: Annotated[int, Range(ge=1)] = 0):
            super().__init__()

    class RangeOnText(_Kernel):
        def __init__(self, *, mode: Annotated[str, Range(ge=1)] = "a"):
            super().__init__()

    class NotARange(_Kernel):
        def __init__(self, *, window: Annotated[int, "at least one"] = 4):
            super().__init__()

    with pytest.raises(PluginError, match=r"parameter 'window': the default 0 must be >= 1"):
        register("default_outside_test", DefaultOutside)
    with pytest.raises(PluginError, match=r"Range\(...\) applies to int or float parameters only"):
        register("range_on_text_test", RangeOnText)
    with pytest.raises(PluginError, match=r"takes one attnlab Range"):
        register("not_a_range_test", NotARange)


def test_odd_ranges_suggest_the_next_odd_value():
    assert Range(ge=1, odd=True, also=(0,)).violation(0) is None
    assert Range(ge=1, odd=True, also=(0,)).violation(4) == "must be odd and >= 1 (or 0)"
    assert Range(ge=1, odd=True, also=(0,)).example(4, 0) == 5


@pytest.mark.parametrize("name", registry.available_attentions())
def test_every_variant_default_is_inside_its_declared_range(name):
    for p in registry.registry_entry(name).hyperparameters.values():
        if p.range is not None and p.default is not None:
            assert p.range.violation(p.default) is None, (name, p)
