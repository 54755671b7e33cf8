"""attnlab variants inside Hugging Face transformers models (attnlab.hf, model=hf).

Tiny random models built offline (from_config, and round-tripped through save_pretrained): a
Llama-style decoder with grouped-query attention, GPT-2 and a BERT-style encoder. Everything but the
missing-extra test skips when transformers is not installed (`pip install 'attnlab[hf]'`).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from helpers import compose_run

from attnlab.attention import available_attentions, get_attention_class
from attnlab.errors import CapabilityError, ConfigError
from attnlab.run.app import preflight, run_args

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(
    not HAS_TRANSFORMERS, reason="transformers is not installed (pip install 'attnlab[hf]')"
)
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds contention
VOCAB, PAD, BOS, EOS = 40, 0, 1, 2
ATOL = 2e-5  # fp32 round-off through two layers


def configs() -> dict:
    from transformers import BertConfig, GPT2Config, LlamaConfig

    special = {"pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS}
    return {
        "llama": LlamaConfig(  # grouped-query attention: 2 key/value heads for 4 query heads
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **special,
        ),
        "gpt2": GPT2Config(  # scores scaled by 1/(layer+1) too: the kernels' 1/sqrt(d) is corrected
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
            scale_attn_by_inverse_layer_idx=True, **special,
        ),
        "bert": BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, pad_token_id=PAD,
        ),
    }  # fmt: skip


DECODERS, ENCODERS = ("llama", "gpt2"), ("bert",)


def build(arch: str, implementation: str = "sdpa"):
    """A tiny random model (seed 0) in eval mode."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    import attnlab.hf  # noqa: F401  (registers attnlab_<name>)

    auto = AutoModelForMaskedLM if arch in ENCODERS else AutoModelForCausalLM
    torch.manual_seed(0)
    return auto.from_config(configs()[arch], attn_implementation=implementation).eval()


def batch(arch: str, *, n: int = 12, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (2, n), generator=generator)  # (B, N), no special ids


def logits(model, ids, mask=None, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, **kwargs).logits  # (B, N, V)


def gated(name: str) -> bool:
    return bool(get_attention_class(name).gates)


def capable(name: str, capability: str) -> bool:
    return getattr(get_attention_class(name).capabilities, capability)


# ---- registration ---------------------------------------------------------------------------------
@needs_transformers
def test_every_variant_is_registered_with_its_mask_function():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    import attnlab.hf

    names = attnlab.hf.register()
    assert names == [f"attnlab_{n}" for n in available_attentions()]
    assert "attnlab_sigmoid" in names  # the test plugin (an entry point) too
    for name in names:  # without a mask function transformers would hand the variant no mask at all
        assert name in AttentionInterface._global_mapping and name in AttentionMaskInterface._global_mapping


# ---- exactness: attnlab's softmax variants are transformers' sdpa -------------------------------------
@needs_transformers
@pytest.mark.parametrize("variant", ["multihead", "full"])
@pytest.mark.parametrize("arch", [*DECODERS, *ENCODERS])
def test_exact_variants_equal_sdpa_after_save_pretrained(arch: str, variant: str, tmp_path):
    reference = build(arch)
    ids = batch(arch)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # the second row is right-padded
    expected = logits(reference, ids, mask)
    reference.save_pretrained(tmp_path)
    loaded = type(reference).from_pretrained(tmp_path, attn_implementation=f"attnlab_{variant}").eval()
    got = logits(loaded, ids, mask)
    torch.testing.assert_close(got[0], expected[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1, :8], expected[1, :8], atol=ATOL, rtol=0)


# ---- causality through the HF model ---------------------------------------------------------------
@needs_transformers
@pytest.mark.parametrize("arch", DECODERS)
@pytest.mark.parametrize(
    "variant", [n for n in available_attentions() if capable(n, "causal") and not gated(n)]
)
def test_changing_a_future_token_never_changes_past_logits(arch: str, variant: str):
    model = build(arch, f"attnlab_{variant}")
    ids = batch(arch)
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] + 1 - 3) % (VOCAB - 3) + 3
    before, after = logits(model, ids), logits(model, changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, 7:], before[:, 7:])  # the change is seen from position 7 on


@needs_transformers
@pytest.mark.parametrize("arch", DECODERS)
@pytest.mark.parametrize("variant", [n for n in available_attentions() if not capable(n, "causal")])
def test_a_non_causal_variant_in_a_decoder_is_refused(arch: str, variant: str):
    import attnlab.hf

    with pytest.raises(CapabilityError, match=f"attention '{variant}' does not support causal"):
        attnlab.hf.use(build(arch), variant)


@needs_transformers
@pytest.mark.parametrize("variant", [n for n in available_attentions() if gated(n)])
def test_a_gated_variant_is_refused_with_one_line(variant: str):
    import attnlab.hf

    with pytest.raises(
        CapabilityError, match=f"attention '{variant}' needs gate projections of the layer input"
    ):
        attnlab.hf.use(build("llama"), variant)


# ---- padding --------------------------------------------------------------------------------------
def padding_capable() -> list[str]:
    return [n for n in available_attentions() if capable(n, "key_padding_mask") and not gated(n)]


@needs_transformers
@pytest.mark.parametrize("arch", [*DECODERS, *ENCODERS])
@pytest.mark.parametrize("variant", padding_capable())
def test_padded_rows_equal_unpadded_rows(arch: str, variant: str):
    """Right padding (and left padding with position ids, for decoders): the real tokens' logits are
    those of the same row run alone."""
    if arch in DECODERS and not capable(variant, "causal"):
        pytest.skip("not causal-capable: refused in a decoder")
    model = build(arch, f"attnlab_{variant}")
    row = batch(arch, n=8)[:1]  # (1, 8)
    alone = logits(model, row)[0]  # (8, V)
    pad = torch.full((1, 4), PAD)
    right = torch.cat([row, pad], dim=1)
    right_mask = torch.cat([torch.ones_like(row), torch.zeros_like(pad)], dim=1)
    torch.testing.assert_close(logits(model, right, right_mask)[0, :8], alone, atol=1e-5, rtol=0)
    if arch in DECODERS:
        left = torch.cat([pad, row], dim=1)
        left_mask = torch.cat([torch.zeros_like(pad), torch.ones_like(row)], dim=1)
        positions = (left_mask.cumsum(-1) - 1).clamp(min=0)
        got = logits(model, left, left_mask, position_ids=positions)[0, 4:]
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=0)


# ---- generation -----------------------------------------------------------------------------------
GREEDY = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "pad_token_id": PAD}


def prompt() -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts, the second left-padded by two tokens (how generate batches prompts)."""
    ids = batch("llama", n=6, seed=3)
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = PAD, 0
    return ids, mask


@needs_transformers
@pytest.mark.parametrize("arch", DECODERS)
def test_generate_with_multihead_equals_sdpa(arch: str):
    ids, mask = prompt()
    model = build(arch)
    expected = model.generate(input_ids=ids, attention_mask=mask, **GREEDY)
    model.set_attn_implementation("attnlab_multihead")
    assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, **GREEDY), expected)


@needs_transformers
@pytest.mark.parametrize("variant", ["linear", "local"])
def test_recurrent_generate_from_the_kv_cache_matches_its_full_forward(variant: str):
    """transformers' cache holds keys and values, not the running state: each step recomputes it from
    the cached keys, and must give the scores of recomputing the whole prefix (use_cache=False)."""
    ids, mask = prompt()
    model = build("llama", f"attnlab_{variant}")
    options = {**GREEDY, "return_dict_in_generate": True, "output_logits": True}
    cached = model.generate(input_ids=ids, attention_mask=mask, **options)
    recomputed = model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **options)
    assert torch.equal(cached.sequences, recomputed.sequences)
    for step_cached, step_recomputed in zip(cached.logits, recomputed.logits):
        torch.testing.assert_close(step_cached, step_recomputed, atol=1e-5, rtol=0)


@needs_transformers
def test_a_causal_variant_without_a_decoding_state_refuses_the_kv_cache():
    ids, mask = prompt()
    model = build("llama", "attnlab_sigmoid")  # the test plugin: causal, no incremental decoding
    with pytest.raises(
        CapabilityError, match="cannot continue from transformers' KV cache; generate with use_cache=False"
    ):
        model.generate(input_ids=ids, attention_mask=mask, **GREEDY)
    out = model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **GREEDY)
    assert out.shape == (2, 12)


# ---- what attnlab's contract cannot express is refused ------------------------------------------------
@needs_transformers
def test_a_sliding_window_model_is_refused():
    from transformers import AutoModelForCausalLM, MistralConfig

    config = MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, attn_implementation="attnlab_multihead").eval()
    with pytest.raises(CapabilityError, match="sliding"):
        logits(model, batch("llama"))


# ---- hyperparameters -------------------------------------------------------------------------------
@needs_transformers
def test_use_validates_hyperparameters_and_save_pretrained_keeps_them(tmp_path):
    import attnlab.hf

    model = attnlab.hf.use(build("llama"), "linear", feature_map="relu")
    kernels = [m.attnlab["linear"].kernel for m in model.modules() if hasattr(m, "attnlab")]
    assert len(kernels) == 2 and all(k.feature_map == "relu" for k in kernels)
    model.save_pretrained(tmp_path)
    # config.json keeps the parameters (attnlab_attention); the implementation is named when loading
    loaded = type(model).from_pretrained(tmp_path, attn_implementation="attnlab_linear").eval()
    ids = batch("llama")
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), atol=1e-6, rtol=0)
    assert loaded.model.layers[0].self_attn.attnlab["linear"].kernel.feature_map == "relu"
    with pytest.raises(ConfigError, match="has no parameter 'featuremap'"):
        attnlab.hf.use(model, "linear", featuremap="relu")


@needs_transformers
def test_load_restores_the_variant_and_its_trained_kernel_weights(tmp_path):
    """from_pretrained alone drops kernel weights (the kernels do not exist yet); attnlab.hf.load
    builds them first, then restores lowrank's projections from the checkpoint."""
    import attnlab.hf

    model = attnlab.hf.use(build("bert"), "lowrank", k=8)
    model.save_pretrained(tmp_path)
    ids = batch("bert")
    loaded = attnlab.hf.load(str(tmp_path), type(model)).eval()
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), atol=0, rtol=0)
    base = attnlab.hf.load(str(tmp_path)).eval()  # AutoModel: the saved keys carry the head's prefix
    with torch.no_grad():
        expected = model.bert(input_ids=ids).last_hidden_state
        torch.testing.assert_close(base(input_ids=ids).last_hidden_state, expected, atol=0, rtol=0)


# ---- model=hf in attnlab's own runs ------------------------------------------------------------------
def run_overrides(tmp_path, *extra: str) -> list[str]:
    return [
        "model=hf",
        "trainer.max_steps=5",
        "trainer.val_check_interval=5",
        "logger=none",
        "callbacks.progress=null",
        "trainer.enable_progress_bar=false",
        "callbacks.cost.warmup_steps=1",
        "model.max_len=64",
        "model.config.hidden_size=32",
        "model.config.intermediate_size=64",
        "task.data.limit.train=32",
        "task.data.limit.validation=16",
        "task.data.limit.test=16",
        "task.data.batch_size=16",
        f"paths.run_dir={tmp_path / 'run'}",
        f"paths.data_cache={tmp_path / 'cache'}",
        *extra,
    ]


@needs_transformers
@pytest.mark.parametrize(("preset", "causal"), [("hf", True), ("hf_gpt2", True), ("hf_bert", False)])
def test_model_presets_build_an_encoder_of_their_kind(preset: str, causal: bool, tmp_path):
    from attnlab.nn.hf_models import hf_encoder

    cfg = compose_run(tmp_path, [f"model={preset}", "model.max_len=64", "attention=linear"], fast=False)
    encoder = hf_encoder(VOCAB, cfg.model, cfg.attention)
    assert encoder.causal is causal
    ids = batch("llama")
    padding = torch.zeros_like(ids, dtype=torch.bool)
    assert encoder(ids, padding).shape == (*ids.shape, encoder.d_model)


@needs_transformers
def test_a_config_key_the_architecture_lacks_is_an_error(tmp_path):
    from attnlab.nn.hf_models import hf_encoder

    cfg = compose_run(tmp_path, ["model=hf", "model.config.model_type=bert"], fast=False)
    with pytest.raises(ConfigError, match="model.config.num_key_value_heads is not a bert config key"):
        hf_encoder(VOCAB, cfg.model, cfg.attention)


@needs_transformers
def test_model_hf_classify_runs_end_to_end(tmp_path):
    from attnlab.run.results import read_results

    status, error = run_args(run_overrides(tmp_path, "task=classify", "attention=linear"))
    assert (status, error) == (0, "")
    results = read_results(tmp_path / "run")
    assert results["attention"]["name"] == "linear"
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0
    assert results["cost"]["attention_flops_per_token"] > 0  # the kernels inside the HF model are counted
    assert results["cost"]["train_tokens_per_s"] > 0


@needs_transformers
def test_model_hf_lm_runs_end_to_end(tmp_path):
    from attnlab.run.results import read_results

    status, error = run_args(run_overrides(tmp_path, "task=lm", "attention=linear"))
    assert (status, error) == (0, "")
    results = read_results(tmp_path / "run")
    assert results["task"] == "lm" and results["attention"]["name"] == "linear"
    assert 1.0 < results["metrics"]["test/ppl"] < float("inf")
    assert results["cost"]["attention_flops_per_token"] > 0


@needs_transformers
def test_an_encoder_cannot_be_a_language_model(tmp_path):
    from attnlab.nn.hf_models import hf_causal_lm

    cfg = compose_run(tmp_path, ["model=hf_bert", "task=lm", "attention=linear"], fast=False)
    with pytest.raises(ConfigError, match="is not a causal decoder, so it cannot be a language model"):
        hf_causal_lm(VOCAB, cfg.model, cfg.attention)


@needs_transformers
def test_model_hf_loads_a_saved_pretrained_encoder(tmp_path):
    """model.pretrained=<dir written by save_pretrained> (a hub id takes the same path, untestable
    offline): a BERT-style encoder is bidirectional, so a non-causal variant serves it; its embedding
    table (40 ids) grows to the task's byte vocabulary."""
    from attnlab.run.results import read_results

    build("bert").save_pretrained(tmp_path / "bert")
    overrides = run_overrides(tmp_path, "task=classify", "attention=lowrank", "attention.k=16")
    status, error = run_args([*overrides, f"model.pretrained={tmp_path / 'bert'}"])
    assert (status, error) == (0, "")
    results = read_results(tmp_path / "run")
    assert results["attention"]["name"] == "lowrank" and results["metrics"]["test/acc"] >= 0.0


@needs_transformers
def test_model_hf_with_a_variant_the_model_cannot_use_is_one_line(tmp_path):
    status, error = run_args(run_overrides(tmp_path, "task=classify", "attention=lowrank"))
    assert status == 2 and "\n" not in error
    assert error.startswith("error: attention 'lowrank' does not support causal")


def test_model_hf_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` sees when absent
    with pytest.raises(
        ConfigError, match=r"model=hf needs Hugging Face transformers.*pip install 'attnlab\[hf\]'"
    ):
        preflight(["model=hf"], hydra_config=False)
