"""Per-layer patterns (hybrid stacks) and the layer options every variant gets (short convolution,
output gate, QK-norm): spelling, building, role checks, decoding, costs summed over layers, and the
stack contract points run with every registered variant."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import compose_run

from attnlab.attention import available_attentions, get_attention_class
from attnlab.check import FAIL, PASS, SKIP
from attnlab.check.__main__ import main as check_main
from attnlab.check.stack import run_stack_checks
from attnlab.errors import CapabilityError, ConfigError
from attnlab.flops import count_flops_inside
from attnlab.nn import AttentionSpec, CausalLM, EncoderDecoder, ModelConfig
from attnlab.nn.layer_options import CONV_STATE, LayerOptions
from attnlab.nn.pattern import config_label, parse_pattern, pattern_label
from attnlab.nn.state_size import decode_state_bytes

TINY = ModelConfig(d_model=16, heads=2, max_len=32, dropout=0.0, mlp_ratio=2)
MULTIHEAD = AttentionSpec.from_config("multihead")


def lm(**changes) -> CausalLM:
    torch.manual_seed(0)
    return CausalLM(30, dataclasses.replace(TINY, **changes), MULTIHEAD).eval()


def kernels(model) -> list[str]:
    return [block.self_attention.spec.name for block in model.blocks]


# ---- spelling -----------------------------------------------------------------------------------------
def test_every_spelling_of_a_pattern_names_the_same_layers():
    expected = ["gated_deltanet"] * 3 + ["multihead"]
    for pattern in (
        ["gated_deltanet", "gated_deltanet", "gated_deltanet", "multihead"],
        ["gated_deltanet*3", "multihead"],
        [{"name": "gated_deltanet", "repeat": 3}, {"name": "multihead"}],
        "gated_deltanet*3+multihead",
        ["gated_deltanet*2+gated_deltanet", "multihead"],
    ):
        assert [layer.name for layer in parse_pattern(pattern)] == expected, pattern


def test_per_layer_hyperparameters_and_options_and_the_label_reads_back():
    layers = parse_pattern(["local(window=8)*2", {"name": "multihead", "output_gate": True}])
    assert [layer.attention.params["window"] for layer in layers[:2]] == [8, 8]
    assert layers[2].options == LayerOptions(output_gate=True) and layers[0].options == LayerOptions()
    label = pattern_label(layers)
    assert label == "local(window=8)*2+multihead(output_gate=true)"
    assert parse_pattern(label) == layers  # the label is itself a pattern


def test_a_layer_naming_the_run_s_variant_takes_its_hyperparameters():
    run_variant = AttentionSpec.from_config({"name": "local", "window": 5})
    layers = parse_pattern(["local", "local(window=7)", "multihead"], attention=run_variant)
    assert [layer.attention.params.get("window") for layer in layers] == [5, 7, None]


def test_a_key_the_variant_declares_is_the_variant_s_not_the_layer_option():
    (layer,) = parse_pattern([{"name": "deltanet", "qk_norm": False}], options=LayerOptions(qk_norm=True))
    assert layer.attention.params["qk_norm"] is False and layer.options.qk_norm is True


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ([], "model.layers=[] names no layer"),
        (["gated_deltanet", "multihed"], "model.layers[1]: unknown attention 'multihed' (did you mean 'multihead'?)"),
        (["multihead*0"], "the repeat count 0 of 'multihead' must be an integer >= 1"),
        (["multihead*x"], "the repeat count 'x'"),
        ([{"window": 3}], "has no name"),
        (["local(window)"], "'window' is not key=value"),
        (["local(window=0)"], "model.layers[0].window=0 must be >= 1"),
        ([{"name": "multihead", "short_conv": -2}], "model.layers[0].short_conv=-2 must be 0 (off) or an integer >= 2"),
        ([{"name": "multihead", "output_gate": "yes"}], "model.layers[0].output_gate=yes must be true or false"),
        ([3], "is not a layer"),
    ],
)  # fmt: skip
def test_bad_patterns_are_one_line_errors(pattern, fragment):
    with pytest.raises(ConfigError) as error:
        parse_pattern(pattern)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_label_becomes_the_overrides_that_run_it(tmp_path):
    from attnlab.nn.pattern import is_pattern, pattern_overrides

    assert not is_pattern("gated_deltanet") and is_pattern("gated_deltanet*3+multihead")
    overrides = pattern_overrides("local(window=8)*2+multihead")
    assert overrides == ["model.layers=['local(window=8)*2',multihead]"]
    cfg = compose_run(tmp_path, ["task=mqar", *overrides])
    assert config_label(cfg.model, AttentionSpec.from_config(cfg.attention)) == "local(window=8)*2+multihead"


# ---- building: decoder-only and encoder-decoder -----------------------------------------------------
def test_a_causal_lm_gets_one_variant_per_layer_and_the_pattern_sets_its_depth():
    model = lm(layers=["gated_deltanet*3", "multihead"], decoder_layers=2, token_shift=True)
    assert kernels(model) == ["gated_deltanet"] * 3 + ["multihead"]
    assert len(model.shifts) == 4
    assert kernels(lm()) == ["multihead", "multihead"]  # no pattern: `attention` at decoder_layers layers


def test_a_non_causal_variant_in_a_decoder_layer_names_the_layer():
    with pytest.raises(
        CapabilityError, match=r"^model.layers\[1\]: attention 'nystrom' does not support causal"
    ):
        lm(layers=["linear", "nystrom"])


def test_encoder_decoder_patterns_shared_or_per_stack():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, layers=["linear", "multihead"])
    model = EncoderDecoder(30, cfg, MULTIHEAD)
    assert kernels(model.encoder) == kernels(model.decoder) == ["linear", "multihead"]
    cfg = dataclasses.replace(
        TINY, layers=["linear"], encoder=dataclasses.replace(TINY.encoder, layers=["nystrom*3"])
    )
    model = EncoderDecoder(30, cfg, MULTIHEAD)  # nystrom is fine in the encoder, not in the decoder
    assert kernels(model.encoder) == ["nystrom"] * 3 and kernels(model.decoder) == ["linear"]
    cfg = dataclasses.replace(TINY, decoder=dataclasses.replace(TINY.decoder, layers=["nystrom"]))
    with pytest.raises(CapabilityError, match=r"^model.decoder.layers\[0\]: attention 'nystrom'"):
        EncoderDecoder(30, cfg, MULTIHEAD)
    cfg = dataclasses.replace(
        TINY, layers=["linear"], decoder=dataclasses.replace(TINY.decoder, self_attention="local")
    )
    with pytest.raises(ConfigError, match="drop model.decoder.self_attention"):
        EncoderDecoder(30, cfg, MULTIHEAD)


def test_encoder_decoder_hybrid_generates_as_it_trains():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, layers=["gated_deltanet", "multihead"], short_conv=3, output_gate=True)
    model = EncoderDecoder(30, cfg, MULTIHEAD).eval()
    src, tgt = torch.randint(0, 30, (2, 7)), torch.randint(0, 30, (2, 6))
    with torch.no_grad():
        memory = model.encoder(src)
        parallel = model.decoder(tgt, memory)  # (B, T, V)
        state = model.decoder.start(memory, None)
        stepped = []
        for t in range(tgt.shape[1]):
            logits, state = model.decoder.step(tgt[:, t], state)
            stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped, 1), parallel, atol=1e-4, rtol=0)


# ---- layer options ------------------------------------------------------------------------------------
def test_layer_options_add_their_modules_and_only_then():
    plain = lm()
    assert not any(".wrap." in name for name in plain.state_dict())  # state dicts unchanged
    model = lm(short_conv=4, output_gate=True, qk_norm=True)
    wrap = model.blocks[0].self_attention.wrap
    assert wrap.conv.conv.weight.shape == (3 * 16, 1, 4) and wrap.gate.out_features == 16
    assert wrap.q_norm.weight.shape == (8,)  # per head dimension


def test_short_conv_is_causal_and_its_step_equals_its_parallel_pass():
    from attnlab.nn.layer_options import ShortConv

    torch.manual_seed(0)
    conv, x = ShortConv(6, 3), torch.randn(2, 9, 6)
    out = conv(x)  # (B, N, C)
    changed = x.clone()
    changed[:, 5:] += 1.0
    torch.testing.assert_close(conv(changed)[:, :5], out[:, :5])
    cache, stepped = conv.init_state(2, device=x.device, dtype=x.dtype), []
    for t in range(9):
        y, cache = conv.step(x[:, t : t + 1], cache)
        stepped.append(y)
    torch.testing.assert_close(torch.cat(stepped, 1), out, atol=1e-6, rtol=0)


def test_short_conv_cache_is_in_the_state_and_in_its_bytes():
    model = lm(layers=["linear", "multihead"], short_conv=4)
    state = model.start(1, device=torch.device("cpu"), dtype=torch.float32)
    assert state.self_states[0][CONV_STATE].shape == (1, 3, 3 * 16)  # (B, K-1, 3C)
    without = decode_state_bytes(lm(layers=["linear", "multihead"]), 16)["decode_state_bytes"]
    with_conv = decode_state_bytes(model, 16)["decode_state_bytes"]
    assert with_conv - without == 2 * 3 * 3 * 16 * 4  # two layers, K-1 = 3 rows of q, k, v, fp32


@pytest.mark.parametrize("options", [{"short_conv": 2}, {"output_gate": True}, {"qk_norm": True}])
def test_layer_options_reach_results_through_the_model_config(tmp_path, options):
    overrides = [f"model.{k}={str(v).lower()}" for k, v in options.items()]
    cfg = compose_run(tmp_path, ["task=mqar", "model.layers=[linear,multihead]", *overrides])
    model = ModelConfig.from_config(cfg.model)
    assert LayerOptions.from_config(model) == LayerOptions(**options)
    assert config_label(cfg.model, AttentionSpec.from_config(cfg.attention)) == "linear+multihead"


# ---- costs summed over layers -------------------------------------------------------------------------
def test_decoding_state_and_flops_of_a_hybrid_are_the_sums_of_its_layers():
    hybrid, first, second = (
        lm(layers=["gated_deltanet", "multihead"]), lm(layers=["gated_deltanet"]), lm(layers=["multihead"])
    )  # fmt: skip
    sizes = [decode_state_bytes(m, 24) for m in (hybrid, first, second)]
    assert sizes[0]["decode_state_bytes"] == sizes[1]["decode_state_bytes"] + sizes[2]["decode_state_bytes"]
    assert sizes[0]["decode_state_kind"] == "incremental_state"
    from attnlab.attention import Attention

    ids = torch.randint(0, 30, (2, 16))
    flops = [count_flops_inside(m, Attention, lambda m=m: m(ids)) for m in (hybrid, first, second)]
    assert flops[0] == flops[1] + flops[2] > 0


# ---- the stack contract with every variant ------------------------------------------------------------
OPTION_SETS = {"short_conv": LayerOptions(short_conv=3), "output_gate": LayerOptions(output_gate=True),
               "qk_norm": LayerOptions(qk_norm=True)}  # fmt: skip


@pytest.mark.parametrize("option", OPTION_SETS)
@pytest.mark.parametrize("name", available_attentions())
def test_every_variant_keeps_the_contract_with_each_layer_option(name, option):
    results = {r.point: r for r in run_stack_checks(name, OPTION_SETS[option])}
    assert not [r for r in results.values() if r.status == FAIL], [r.line() for r in results.values()]
    assert results["stack-encoder-gradients"].status == PASS
    capabilities = get_attention_class(name).capabilities
    if capabilities.causal:
        assert results["stack-causality"].status == results["stack-gradients"].status == PASS
        assert results["stack-decoding"].status == (PASS if capabilities.incremental else SKIP)


def test_a_hybrid_with_every_option_keeps_the_contract():
    results = run_stack_checks(
        ["gated_deltanet*2", "local(window=4)", "multihead"],
        LayerOptions(short_conv=4, output_gate=True, qk_norm=True),
    )
    assert [r.status for r in results] == [PASS] * 4, [r.line() for r in results]


def test_check_cli_holds_a_pattern(capsys):
    assert check_main(["--layers", "linear*2,local(window=4)", "--short-conv", "2", "--output-gate"]) == 0
    out = capsys.readouterr().out
    assert "linear*2+local(window=4)" in out and "PASS  stack-decoding" in out and "4 passed, 0 failed" in out
    assert check_main(["--layers", "linear,multihed"]) == 2
    assert "did you mean 'multihead'" in capsys.readouterr().err


# ---- a run ----------------------------------------------------------------------------------------------
def test_a_hybrid_run_records_its_pattern_and_summed_costs(tmp_path):
    import json

    from test_lm import MQAR_FAST

    from attnlab.run.results import results_path
    from attnlab.run.train import run

    overrides = [
        *MQAR_FAST,
        "model.layers=[gated_deltanet,multihead]",
        "model.short_conv=4",
        "model.output_gate=true",
    ]
    results = run(compose_run(tmp_path, overrides))
    attention = json.loads(results_path(tmp_path / "run").read_text())["attention"]
    assert attention["name"] == attention["pattern"] == "gated_deltanet+multihead"
    layers = attention["layers"]["decoder"]
    assert [layer["name"] for layer in layers] == ["gated_deltanet", "multihead"]
    assert all(
        layer["options"] == {"short_conv": 4, "output_gate": True, "qk_norm": False} for layer in layers
    )
    assert attention["capabilities"]["cross"] is False  # what every layer can do
    # d_model 32, 2 heads of 16, N = 32, fp32: gated_deltanet's (1, 2, 16, 16) state, multihead's keys and
    # values, and each layer's convolution cache of K-1 = 3 rows of q, k, v
    expected = 2 * 16 * 16 * 4 + 2 * 32 * 2 * 16 * 4 + 2 * 3 * 3 * 32 * 4
    assert results["cost"]["decode_state_bytes"] == expected
