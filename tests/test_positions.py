"""model.positional: rope / alibi / none for every variant that accepts them, RoPE's maths and offsets.

The layer-level contract (decoding equals the parallel pass under rope and alibi, beams included;
alibi refused by kernels that do not declare it) is in the conformance suite (positions-rope,
positions-alibi); here: the same at the model level, past model.max_len, and the maths itself.
"""

from __future__ import annotations

import pytest
import torch
from conftest import randn

from attnlab.attention import available_attentions, get_attention_class
from attnlab.attention.alibi import alibi_bias, alibi_slopes
from attnlab.check.inputs import build, qkv
from attnlab.errors import ConfigError
from attnlab.nn import AttentionSpec, CausalLM, Encoder, EncoderDecoder, ModelConfig
from attnlab.nn.rotary import POSITION_KEY, Rotary
from attnlab.tasks.generation import beam_search, greedy

MAX_LEN = 16
LONGER = 24  # past MAX_LEN: rope, alibi and none size nothing by it
SCHEMES = ("rope", "alibi", "none")


def config(positional: str, **changes) -> ModelConfig:
    return ModelConfig(
        d_model=32, heads=2, encoder_layers=1, decoder_layers=2, dropout=0.0, max_len=MAX_LEN,
        positional=positional, **changes,
    )  # fmt: skip


def spec_of(name: str) -> AttentionSpec:
    # lowrank's projections have max_len rows: a rank within them
    return AttentionSpec.from_config({"name": name, "k": 8} if name == "lowrank" else name)


def test_rope_scores_depend_on_relative_positions_only():
    rotary = Rotary(16, base=10000.0)
    q, k = randn(1, 2, 6, 16, seed=0), randn(1, 2, 6, 16, seed=1)
    positions = torch.arange(6)
    scores = rotary(q, positions) @ rotary(k, positions).transpose(-2, -1)  # (1, 2, 6, 6)
    for shift in (1, 37, 5000):
        shifted = rotary(q, positions + shift) @ rotary(k, positions + shift).transpose(-2, -1)
        torch.testing.assert_close(shifted, scores, atol=1e-4, rtol=1e-4)
    moved = rotary(q, positions) @ rotary(k, positions + 1).transpose(-2, -1)
    assert not torch.allclose(moved, scores, atol=1e-3), "rope must make scores depend on m - n"
    torch.testing.assert_close(rotary(q, positions).norm(dim=-1), q.norm(dim=-1))  # a rotation


def test_rope_per_row_positions_equal_shared_ones():
    rotary = Rotary(8, base=500.0)
    x = randn(3, 2, 4, 8, seed=2)
    rows = torch.arange(4).expand(3, 4) + torch.tensor([[0], [5], [9]])  # (3, 4) each row its own offset
    for b, offset in enumerate((0, 5, 9)):
        torch.testing.assert_close(rotary(x, rows)[b], rotary(x[b : b + 1], torch.arange(4) + offset)[0])


def test_alibi_slopes_are_the_papers():
    torch.testing.assert_close(alibi_slopes(8), 2.0 ** -torch.arange(1.0, 9.0))
    six = alibi_slopes(6)
    assert six.shape == (6,) and len(set(six.tolist())) == 6 and ((six > 0) & (six < 1)).all()
    bias = alibi_bias(torch.tensor([0.5]), 1, 4)  # one query, the newest of 4 positions
    torch.testing.assert_close(bias, torch.tensor([[[-1.5, -1.0, -0.5, 0.0]]]))


@pytest.mark.parametrize("causal", [False, True])
def test_local_alibi_equals_the_banded_biased_softmax(causal: bool):
    window, n, slopes = 5, 19, alibi_slopes(2)
    q, k, v = qkv(2, 2, n, seed=3)
    out = build("local", window=window)(q, k, v, causal=causal, alibi=slopes)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    band = (j <= i) & (j > i - window) if causal else (j - i).abs() <= window // 2
    scores = q @ k.transpose(-2, -1) / 4.0 - slopes[:, None, None] * (i - j).abs()  # (2, 2, n, n)
    expected = torch.softmax(scores.masked_fill(~band, float("-inf")), -1) @ v
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def _cases():
    for name in available_attentions():
        for scheme in SCHEMES:
            yield name, scheme


@pytest.mark.parametrize(("name", "scheme"), list(_cases()))
def test_every_variant_runs_each_scheme_past_max_len(name: str, scheme: str):
    """A model of every variant, with each scheme it accepts, reads sequences longer than model.max_len;
    a causal LM decodes them step by step exactly as its parallel pass (rope: the state's offsets)."""
    cls = get_attention_class(name)
    if scheme == "alibi" and not cls.capabilities.alibi:
        with pytest.raises(ConfigError, match=f"attention '{name}' does not.*attention= one of"):
            CausalLM(50, config(scheme), spec_of(name)) if cls.capabilities.causal else Encoder(
                50, config(scheme), spec_of(name)
            )
        return
    torch.manual_seed(0)
    length = MAX_LEN if name == "lowrank" else LONGER
    ids = torch.randint(0, 50, (2, length))
    if not cls.capabilities.causal:
        out = Encoder(50, config(scheme), spec_of(name)).eval()(ids)
        assert out.shape == (2, length, 32) and torch.isfinite(out).all()
        return
    model = CausalLM(50, config(scheme), spec_of(name)).eval()
    with torch.no_grad():
        parallel = model(ids)  # (2, N, V)
        assert parallel.shape == (2, length, 50) and torch.isfinite(parallel).all()
        if not cls.capabilities.incremental:
            return
        state = model.start(2, device=ids.device, dtype=torch.float32)
        stepped = []
        for t in range(length):
            logits, state = model.step(ids[:, t], state)
            stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped, 1), parallel, atol=1e-4, rtol=1e-4)
    assert (POSITION_KEY in state.self_states[0]) == (scheme == "rope")


def test_absolute_schemes_still_stop_at_max_len():
    model = CausalLM(50, config("learned"), spec_of("multihead"))
    with pytest.raises(ConfigError, match="exceeds model.max_len=16"):
        model(torch.zeros(1, LONGER, dtype=torch.long))


@pytest.mark.parametrize("scheme", ["rope", "alibi"])
def test_reordered_beams_continue_at_their_positions(scheme: str):
    """Seq2seq decoding: after DecodingState.select reorders the rows (beam search), each row's next
    logits equal the decoder's parallel pass over that row's own prefix."""
    torch.manual_seed(0)
    model = EncoderDecoder(40, config(scheme), spec_of("multihead")).eval()
    src = torch.randint(3, 40, (3, 7))
    prefix, suffix = torch.randint(3, 40, (3, 4)), torch.randint(3, 40, (3, 3))
    index = torch.tensor([2, 0, 0])
    with torch.no_grad():
        memory = model.encoder(src)
        state = model.decoder.start(memory, None)
        for t in range(prefix.shape[1]):
            _, state = model.decoder.step(prefix[:, t], state)
        state = state.select(index)
        stepped = []
        for t in range(suffix.shape[1]):
            logits, state = model.decoder.step(suffix[:, t], state)
            stepped.append(logits)
        expected = model.decoder(torch.cat([prefix[index], suffix], 1), memory[index])[:, prefix.shape[1] :]
    torch.testing.assert_close(torch.stack(stepped, 1), expected, atol=1e-4, rtol=1e-4)


def test_beam_search_of_one_is_greedy_under_rope():
    torch.manual_seed(0)
    model = EncoderDecoder(40, config("rope"), spec_of("linear")).eval()
    src = torch.randint(3, 40, (2, 9))
    memory = model.encoder(src)
    ids = {"bos_id": 1, "eos_id": 2, "pad_id": 0, "max_new_tokens": 8}
    assert beam_search(model.decoder, memory, None, beam=1, **ids) == greedy(
        model.decoder, memory, None, **ids
    )
    assert len(beam_search(model.decoder, memory, None, beam=3, **ids)) == 2
