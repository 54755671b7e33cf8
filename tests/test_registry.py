"""The registry: names, validation, plugin discovery, Hydra configs and the `attnlab.variants` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from typing import Literal

import pytest
import torch
from conftest import BROKEN_SITE, EXAMPLE_SITE, plugin_pythonpath

from attnlab import Attention, Capabilities, available_attentions, build_attention, register_attention
from attnlab.attention import registry
from attnlab.attention.registry import (
    broken_plugins,
    get_attention_class,
    registry_entry,
    store_attention_configs,
)
from attnlab.errors import CapabilityError, ConfigError, PluginError

BUILT_INS = [
    "full", "multihead", "linear", "lowrank", "nystrom", "performer", "local",
    "retention", "gla", "deltanet", "gated_deltanet", "based", "mamba2", "fox",
    "gated_deltaproduct", "kda", "rwkv7", "nsa",
]  # fmt: skip


@pytest.fixture(autouse=True)
def restore_registry():
    """Variants registered by a test are forgotten afterwards."""
    available_attentions()
    saved = dict(registry._registry)
    yield
    registry._registry.clear()
    registry._registry.update(saved)


def test_built_ins_first_then_plugins():
    names = available_attentions()
    assert names[: len(BUILT_INS)] == BUILT_INS
    assert "sigmoid" in names[len(BUILT_INS) :]
    assert registry_entry("full").source == "built-in"
    assert registry_entry("sigmoid").source == "plugin attnlab-example-plugin 0.1"


# ---- registration ---------------------------------------------------------------------------------
def test_duplicate_names_are_refused():
    with pytest.raises(PluginError, match="'linear' is already registered"):

        @register_attention("linear")
        class Another(Attention):
            pass


def test_registering_at_run_time_is_labelled_by_module():
    @register_attention("scratch")
    class Scratch(Attention):
        def __init__(self, *, width: int = 3):
            super().__init__()

    assert registry_entry("scratch").source == f"module {__name__}"
    assert registry_entry("scratch").hyperparameters["width"].default == 3


def bad_signature(init_source: str) -> type:
    namespace: dict = {"Attention": Attention, "Literal": Literal}
    exec(f"class Bad(Attention):\n    def __init__{init_source}:\n        super().__init__()\n", namespace)
    return namespace["Bad"]


@pytest.mark.parametrize(
    "signature, message",
    [
        ("(self, **kwargs)", r"\*\*kwargs/\*args would swallow typos"),
        ("(self, *args)", r"\*\*kwargs/\*args"),
        ("(self, size: int = 3)", "must be keyword-only"),
        ("(self, *, size=3)", "needs a type annotation"),
        ("(self, *, size: int)", "needs a default value"),
        ("(self, *, size: list = [])", "unsupported"),
        ("(self, *, size: int | str = 3)", "unions other than"),
        ("(self, *, mode: Literal['a', 1] = 'a')", "Literal choices"),
    ],
)
def test_malformed_signatures_are_refused_at_registration(signature: str, message: str):
    with pytest.raises(PluginError, match=message):
        register_attention("bad")(bad_signature(signature))
    assert "bad" not in available_attentions()


def test_non_attention_classes_and_bad_names_are_refused():
    with pytest.raises(PluginError, match="subclass of attnlab.Attention"):
        register_attention("thing")(torch.nn.Linear)
    with pytest.raises(PluginError, match="letters, digits"):
        register_attention("has space")(type("X", (Attention,), {}))
    with pytest.raises(PluginError, match="Capabilities instance"):
        register_attention("caps")(type("Y", (Attention,), {"capabilities": {"causal": True}}))


def test_capabilities_are_class_level_and_readable_before_building():
    for name in available_attentions():
        cls = get_attention_class(name)
        assert isinstance(cls.capabilities, Capabilities)
    assert get_attention_class("linear").capabilities.causal
    assert not get_attention_class("nystrom").capabilities.causal
    assert get_attention_class("performer").capabilities.names() == [
        "causal",
        "key_padding_mask",
        "cross",
        "incremental",
    ]


def test_capability_error_names_variant_and_alternatives():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(
        CapabilityError, match=r"'nystrom' does not support causal .*variants that support it: full"
    ):
        build_attention("nystrom", heads=2)(q, q, q, causal=True)


# ---- building and validation ----------------------------------------------------------------------
def test_unknown_variant_lists_available_and_closest():
    with pytest.raises(ConfigError) as error:
        build_attention("perfomer", head_dim=8)
    message = str(error.value)
    assert "unknown attention 'perfomer'" in message and "did you mean 'performer'" in message
    for name in BUILT_INS + ["sigmoid"]:
        assert name in message


def test_unknown_parameter_names_closest():
    with pytest.raises(ConfigError, match=r"no parameter 'feature_mao' \(did you mean 'feature_map'\?\)"):
        build_attention("linear", feature_mao="relu")
    with pytest.raises(ConfigError, match="its parameters: features: int = 128"):
        build_attention("performer", head_dim=8, nb_features=64)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("performer", {"features": "many"}, "expected int, got str"),
        ("performer", {"features": 1.5}, "expected int, got float"),
        ("performer", {"features": True}, "expected int, got bool"),
        ("performer", {"redraw": 1}, "expected bool, got int"),
        ("linear", {"eps": "small"}, "expected float, got str"),
        ("linear", {"eps": None}, "expected float, got None"),
        ("linear", {"feature_map": "rleu"}, r"choose one of \['elu', 'relu'\] \(did you mean 'relu'\?\)"),
    ],
)
def test_wrong_types_and_choices(name: str, params: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        build_attention(name, head_dim=8, **params)


def test_valid_values_are_accepted_and_coerced():
    linear = build_attention("linear", feature_map="relu", eps=1)  # int for a float is fine
    assert linear.feature_map == "relu" and linear.eps == 1.0 and isinstance(linear.eps, float)
    sigmoid = build_attention("sigmoid", max_len=16, bias=None)  # `float | None`
    assert sigmoid.bias == pytest.approx(-2.772588, abs=1e-5)


def test_context_parameters_are_required_only_where_declared():
    build_attention("linear", head_dim=8, heads=2, max_len=32)  # unused context is dropped
    with pytest.raises(ConfigError, match="needs head_dim"):
        build_attention("performer")


# ---- Hydra -------------------------------------------------------------------------------------------
@pytest.fixture
def hydra_compose(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    (tmp_path / "config.yaml").write_text("defaults:\n  - _self_\n")
    store_attention_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        yield lambda *overrides: compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()


def test_every_variant_is_in_the_config_store():
    from hydra.core.config_store import ConfigStore

    store_attention_configs()
    stored = ConfigStore.instance().list("attention")
    assert sorted(stored) == sorted(f"{name}.yaml" for name in available_attentions())


def test_hydra_composes_and_validates_attention_configs(hydra_compose):
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ValidationError

    cfg = hydra_compose("+attention=linear", "attention.feature_map=relu", "attention.eps=1e-5")
    assert (
        cfg.attention.name == "linear" and cfg.attention.feature_map == "relu" and cfg.attention.eps == 1e-5
    )
    params = {key: value for key, value in cfg.attention.items() if key != "name"}
    assert build_attention(cfg.attention.name, head_dim=8, **params).feature_map == "relu"
    cfg = hydra_compose("+attention=performer")
    assert dict(cfg.attention) == {
        "name": "performer",
        "features": 128,
        "redraw": False,
        "seed": 0,
        "chunk_size": 64,
    }
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        hydra_compose("+attention=performer", "attention.features=many")
    assert "features" in str(error.value) + str(error.value.__cause__)
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        hydra_compose("+attention=performer", "attention.featurs=64")  # unknown key
    assert "featurs" in str(error.value) + str(error.value.__cause__)
    with pytest.raises(ConfigError, match="choose one of"):  # Literal choices: checked when built
        cfg = hydra_compose("+attention=linear", "attention.feature_map=tanh")
        build_attention("linear", feature_map=cfg.attention.feature_map)


# ---- plugins -----------------------------------------------------------------------------------------
def test_example_plugin_is_discovered_through_entry_point_metadata():
    from importlib import metadata

    names = [ep.name for ep in metadata.entry_points(group="attnlab.attention")]
    assert "sigmoid" in names and "broken" not in names
    entry = registry_entry("sigmoid")
    assert entry.cls.__module__ == "attnlab_example_plugin.sigmoid"
    assert entry.context == ("max_len",) and list(entry.hyperparameters) == ["bias"]
    assert broken_plugins() == {}


def test_broken_plugin_is_reported_and_the_others_still_work(broken_plugin):
    with pytest.warns(UserWarning, match=r"attention plugin 'broken' \(plugin attnlab-broken-plugin 0.1"):
        registry.rediscover()
    assert "broken" in broken_plugins() and "no_such_dependency" in broken_plugins()["broken"]
    names = available_attentions()
    assert "broken" not in names and names[: len(BUILT_INS)] == BUILT_INS and "sigmoid" in names
    q = torch.randn(1, 2, 5, 8)
    for name in ("linear", "sigmoid"):
        assert torch.isfinite(build_attention(name, head_dim=8, heads=2, max_len=8)(q, q, q)).all()
    with pytest.raises(ConfigError, match="unknown attention 'broken'"):
        build_attention("broken")


def test_broken_plugin_is_gone_after_the_test():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # discovery must be clean again
        registry.rediscover()
    assert broken_plugins() == {} and "sigmoid" in available_attentions()


def test_plugin_clashing_with_a_built_in_name_is_skipped(tmp_path):
    from conftest import activated, make_site

    site = make_site(
        tmp_path, "attnlab-clash", "2.0", {"linear": "attnlab_example_plugin.sigmoid:SigmoidAttention"}
    )
    with (
        activated(site),
        pytest.warns(UserWarning, match="'linear' .* skipped: the name is taken by a built-in"),
    ):
        registry.rediscover()
    assert registry_entry("linear").source == "built-in"


# ---- python -m attnlab.variants ----------------------------------------------------------------------
def run_variants(*args: str, sites=(EXAMPLE_SITE,)) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": plugin_pythonpath(*sites), "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "attnlab.variants", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_variants_cli_lists_plugins_and_broken_ones():
    result = run_variants("--json", sites=(EXAMPLE_SITE, BROKEN_SITE))
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    rows = {row["name"]: row for row in listing["variants"]}
    assert list(rows)[: len(BUILT_INS)] == BUILT_INS
    assert rows["sigmoid"]["source"] == "plugin attnlab-example-plugin 0.1"
    assert rows["performer"]["parameters"] == {"features": 128, "redraw": False, "seed": 0, "chunk_size": 64}
    assert rows["full"]["exact"] and rows["performer"]["reference_tolerance"] == 0.3
    assert "broken" in listing["broken_plugins"] and "broken" not in rows
    assert "attention plugin 'broken' failed to load" in result.stderr

    table = run_variants(sites=(EXAMPLE_SITE, BROKEN_SITE))
    assert table.returncode == 0, table.stderr
    assert "plugin attnlab-example-plugin 0.1" in table.stdout
    for name in BUILT_INS + ["sigmoid", "features: int = 128", "causal, padding, cross, incremental"]:
        assert name in table.stdout
    after_table = table.stdout.rsplit("└", 1)[-1]
    assert "warning: attention plugin 'broken' failed to load" in after_table and "ImportError" in after_table

    clean = run_variants()
    assert (
        clean.returncode == 0 and "warning" not in clean.stdout + clean.stderr and "sigmoid" in clean.stdout
    )
