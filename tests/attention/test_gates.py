"""The gate contract: a variant declares projections of the layer input (Attention.gates); the layer
owns them and passes them as keyword tensors to forward and step; other variants see no change."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnlab import Attention, Capabilities, GateSpec, build_attention, register_attention
from attnlab.attention.gates import KeyDerivedGates, random_gates, with_example_gates
from attnlab.errors import PluginError
from attnlab.nn.layer import MultiHeadAttention
from attnlab.nn.spec import AttentionSpec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["gla", "deltanet", "gated_deltanet"])
def test_layer_owns_the_gate_projections_and_decoding_sees_the_same_gates(name):
    torch.manual_seed(0)
    layer = MultiHeadAttention(32, 4, AttentionSpec(name, {}), max_len=64).eval()
    gates = type(layer.kernel).gates
    assert set(layer.gate_proj) == set(gates)
    x = torch.randn(2, 10, 32)
    for gate, tensor in layer.gates_of(x).items():
        assert tensor.shape == gates[gate].shape(2, 4, 10, 8)
    parallel = layer(x, causal=True)
    state = layer.init_state(2, device=x.device, dtype=x.dtype)
    steps = []
    for t in range(10):
        out, state = layer.step(x[:, t : t + 1], state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), parallel, atol=1e-5, rtol=1e-5)
    parallel.sum().backward()  # the gate projections learn
    for proj in layer.gate_proj.values():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())


def test_gla_gate_projection_is_low_rank():
    layer = MultiHeadAttention(32, 4, AttentionSpec("gla", {"gate_rank": 3}), max_len=16)
    assert [p.shape for p in layer.gate_proj["g"].parameters()] == [(3, 32), (32, 3), (32,)]


def test_ungated_layers_are_unchanged():
    layer = MultiHeadAttention(32, 4, AttentionSpec("linear", {}), max_len=16)
    assert layer.gate_proj is None and layer.gates_of(torch.randn(1, 3, 32)) == {}
    assert not any("gate" in key for key in layer.state_dict())
    kernel = build_attention("linear", head_dim=8)
    assert with_example_gates(kernel) is kernel


def test_a_bare_gated_call_says_what_to_do():
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match=r"'deltanet' needs its gate tensor\(s\) beta.*KeyDerivedGates"):
        build_attention("deltanet")(q, q, q, causal=True)
    wrapped = KeyDerivedGates(build_attention("deltanet"))
    assert torch.isfinite(wrapped(q, q, q, causal=True)).all()


def test_random_gates_have_the_declared_shapes():
    cls = type(build_attention("gated_deltanet", heads=2))
    gates = random_gates(cls, 3, 2, 7, 8)
    assert {name: t.shape for name, t in gates.items()} == {"g": (3, 2, 7), "beta": (3, 2, 7)}


def test_registration_checks_the_gate_declaration():
    class NoKeyword(Attention):
        capabilities = Capabilities(causal=True)
        gates = {"beta": GateSpec()}

        def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal=False, key_padding_mask=None) -> Tensor:
            return v

    with pytest.raises(PluginError, match="gate 'beta' must be a keyword-only parameter of forward"):
        register_attention("test_gate_without_keyword")(NoKeyword)

    class NotASpec(NoKeyword):
        gates = {"beta": "sigmoid"}

    with pytest.raises(PluginError, match="GateSpec"):
        register_attention("test_gate_not_a_spec")(NotASpec)


@pytest.mark.parametrize("target", ["attention", "block"])
def test_the_bench_measures_gated_variants(tmp_path, target):
    """The bench calls kernels bare (target=attention) and pre-fills decoding states by stepping the
    kernel (both targets): gated variants get key-derived gates there, the layer's gates in a block."""
    import os

    from hydra import compose, initialize_config_module
    from rich.console import Console

    from attnlab.bench import run

    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        cfg = compose(
            config_name="bench",
            overrides=[
                "variants=[gla,gated_deltanet]", "lengths=[16,32]", "mode=[forward+backward,decode]",
                "causal=true", f"target={target}", "baselines=[linear]", "crossover_baseline=linear",
                "repeats=1", "warmup=1", "logger=none", "threads=1", "device=cpu", "time_budget_s=600",
            ],
        )  # fmt: skip
    rows = run(cfg, out_dir=tmp_path, console=Console(file=open(os.devnull, "w"), width=200))["rows"]  # noqa: SIM115
    assert {r["status"] for r in rows} == {"ok"} and {r["variant"] for r in rows} == {
        "linear",
        "gla",
        "gated_deltanet",
    }


@pytest.mark.parametrize("name", ["retention", "gla", "deltanet", "gated_deltanet", "mamba2", "kda"])
def test_a_recurrent_variant_takes_its_declared_gates_by_name_and_refuses_others(name):
    """RecurrentAttention's forward/step take the gates the class declares as keywords, once for every
    variant; a gate it does not declare is an error, never swallowed."""
    kernel = build_attention(name, heads=2, head_dim=8, max_len=16)
    q = k = v = torch.randn(1, 2, 5, 8)
    gates = random_gates(type(kernel), 1, 2, 5, 8)
    assert kernel(q, k, v, causal=True, **gates).shape == (1, 2, 5, 8)
    with pytest.raises(TypeError, match="does not declare"):
        kernel(q, k, v, causal=True, **gates, betta=torch.zeros(1, 2, 5))
    state = kernel.init_state(1, 2, 8, device=q.device, dtype=q.dtype)
    first = {n: t[:, :, :1] for n, t in gates.items()}
    with pytest.raises(TypeError, match="does not declare"):
        kernel.step(q[:, :, :1], k[:, :, :1], v[:, :, :1], state, **first, gg=torch.zeros(1, 2, 1))
