"""Greedy and beam search over the Decoder's incremental API, for every causal-capable variant."""

from __future__ import annotations

import pytest
import torch

from attnlab import available_attentions, get_attention_class
from attnlab.nn import AttentionSpec, DecoderRoles, EncoderDecoder, ModelConfig
from attnlab.tasks.generation import beam_search, generate, greedy

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


CAUSAL = [n for n in available_attentions() if get_attention_class(n).capabilities.causal]
PAD, BOS, EOS = 0, 1, 2
VOCAB, MAX_NEW = 23, 12


def build(name: str, *, seed: int = 0) -> EncoderDecoder:
    """A small untrained model (dropout off, so incremental and full-forward logits agree to round-off)."""
    torch.manual_seed(seed)
    attention = {"name": name, "window": 4} if name == "local" else {"name": name}
    cross = None if get_attention_class(name).capabilities.cross else "multihead"  # local: no cross attention
    cfg = ModelConfig(
        d_model=32, heads=2, encoder_layers=1, decoder_layers=2, dropout=0.0, max_len=64,
        decoder=DecoderRoles(cross_attention=cross),
    )  # fmt: skip
    return EncoderDecoder(VOCAB, cfg, AttentionSpec.from_config(attention)).eval()


def encode(model: EncoderDecoder, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, VOCAB, (3, 9), generator=g)  # (B, N)
    mask = torch.zeros_like(src, dtype=torch.bool)
    mask[1, 6:] = True  # one padded row
    return model.encoder(src, mask), mask


def greedy_by_recomputation(model: EncoderDecoder, memory, mask) -> list[list[int]]:
    """Reference: argmax of the full (teacher-forced) decoder forward re-run on the whole prefix each step."""
    ids = torch.full((memory.shape[0], 1), BOS)
    done = torch.zeros(memory.shape[0], dtype=torch.bool)
    for _ in range(MAX_NEW):
        logits = model.decoder(ids, memory, mask)[:, -1].clone()  # (B, V)
        logits[:, [BOS, PAD]] = float("-inf")
        token = logits.argmax(-1).masked_fill(done, PAD)
        ids = torch.cat([ids, token[:, None]], 1)
        done |= token == EOS
    rows = ids[:, 1:].tolist()
    return [row[: row.index(EOS)] if EOS in row else row for row in rows]


@pytest.mark.parametrize("name", CAUSAL)
@torch.no_grad()
def test_incremental_greedy_matches_full_forward(name):
    model = build(name)
    memory, mask = encode(model)
    fast = greedy(model.decoder, memory, mask, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new_tokens=MAX_NEW)
    assert fast == greedy_by_recomputation(model, memory, mask)
    assert any(len(row) > 3 for row in fast)  # the comparison covered several steps


@pytest.mark.parametrize("name", CAUSAL)
@torch.no_grad()
def test_beam_of_one_is_greedy(name):
    model = build(name, seed=2)
    memory, mask = encode(model, seed=3)
    common = {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD, "max_new_tokens": MAX_NEW}
    expected = greedy(model.decoder, memory, mask, **common)
    assert beam_search(model.decoder, memory, mask, beam=1, length_penalty=1.0, **common) == expected
    assert beam_search(model.decoder, memory, mask, beam=1, length_penalty=0.0, **common) == expected


@torch.no_grad()
def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy_on_a_peaked_model():
    """Beam search over a decoder whose logits we control: it must find the better two-step path."""

    class Toy:
        """Step 1: token 5 (p=.6) or 6 (p=.4); after 5 everything is flat, after 6 EOS is certain."""

        class positions:
            max_len = 64

        def start(self, memory, mask):
            from attnlab.nn import DecodingState

            return DecodingState(
                memory, mask, [], None, ids=torch.zeros(memory.shape[0], 0, dtype=torch.long)
            )

        def step(self, token, state):
            B = token.shape[0]
            logits = torch.full((B, 8), -1e4)
            t = state.ids.shape[1]
            for b in range(B):
                prev = int(token[b])
                if t == 0:
                    logits[b, 5], logits[b, 6] = torch.log(torch.tensor(0.6)), torch.log(torch.tensor(0.4))
                elif prev == 6:
                    logits[b, EOS] = 0.0
                else:
                    logits[b, 3:8] = 0.0  # flat over 5 tokens: p(EOS) never dominant
                    logits[b, EOS] = 0.0
            ids = torch.cat([state.ids, token[:, None]], 1)
            return logits, state.replace(ids=ids)

    memory = torch.zeros(2, 3, 4)
    common = {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD, "max_new_tokens": 4}
    assert greedy(Toy(), memory, None, **common)[0][0] == 5
    best = beam_search(Toy(), memory, None, beam=3, length_penalty=0.0, **common)
    assert best == [[6], [6]]  # 0.4 * 1.0 beats 0.6 * (1/6) * ...


@pytest.mark.parametrize("name", ["linear", "performer", "local"])
@torch.no_grad()
def test_state_does_not_grow_with_generated_length(name):
    model = build(name)
    memory, mask = encode(model)
    state = model.decoder.start(memory, mask)
    token = torch.full((memory.shape[0],), BOS)
    sizes = []
    for _ in range(8):
        _, state = model.decoder.step(token, state)
        sizes.append(sum(t.numel() for s in state.self_states for t in s.values()))
    assert len(set(sizes)) == 1, f"{name}: decoding state grew over steps: {sizes}"


@torch.no_grad()
def test_recomputation_fallback_gives_the_same_tokens(caplog):
    model = build("multihead")
    memory, mask = encode(model)
    common = {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD, "max_new_tokens": MAX_NEW}
    incremental = generate(model.decoder, memory, mask, beam=3, **common)
    model.decoder.incremental = False  # as for a variant without incremental state
    with caplog.at_level("INFO"):
        recomputed = generate(model.decoder, memory, mask, beam=3, **common)
    assert recomputed == incremental
    assert "recomputes the prefix" in caplog.text


def test_max_new_tokens_is_capped_by_the_positional_table():
    model = build("multihead")
    memory, mask = encode(model)
    out = greedy(model.decoder, memory, mask, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new_tokens=10_000)
    assert all(len(row) <= 63 for row in out)
