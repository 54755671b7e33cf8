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


def reference_beam_search(next_logp, sources: int, *, beam: int, length_penalty: float) -> list[list[int]]:
    """Reference: one source at a time, hypotheses as Python lists, `next_logp(source, prefix)` -> (V,)
    log-probabilities computed from scratch for each prefix. Each step every live hypothesis extends
    by every allowed token and a finished one stays as it is; the `beam` best by
    score / length**length_penalty (EOS counted in the length) go on; the best of the last beam wins."""

    def rank(hypothesis):
        tokens, score, _ = hypothesis
        return float(score) / max(len(tokens), 1) ** length_penalty

    outputs = []
    for b in range(sources):
        hypotheses = [([], torch.tensor(0.0), False)]  # (tokens, summed log-prob (fp32), finished)
        for _ in range(MAX_NEW):
            if all(finished for _, _, finished in hypotheses):
                break
            candidates = []
            for tokens, score, finished in hypotheses:
                if finished:
                    candidates.append((tokens, score, True))
                    continue
                logp = next_logp(b, tokens)  # (V,)
                candidates += [
                    (tokens + [t], score + logp[t], t == EOS) for t in range(VOCAB) if t not in (BOS, PAD)
                ]
            hypotheses = sorted(candidates, key=rank, reverse=True)[:beam]
        tokens, _, finished = max(hypotheses, key=rank)
        outputs.append(tokens[:-1] if finished else tokens)
    return outputs


def model_logp(model: EncoderDecoder, memory, mask):
    """next_logp of the reference: the full (teacher-forced) decoder forward over BOS + prefix."""

    def next_logp(b: int, tokens: list[int]):
        ids = torch.tensor([[BOS, *tokens]])  # (1, t)
        logits = model.decoder(ids, memory[b : b + 1], mask[b : b + 1])[0, -1].clone()  # (V,)
        logits[[BOS, PAD]] = float("-inf")
        return torch.log_softmax(logits, -1)

    return next_logp


def flat_head(model: EncoderDecoder) -> EncoderDecoder:
    """An untied, small-scale output head: flatter next-token distributions, so beams part from greedy."""
    head = torch.nn.Linear(model.decoder.lm_head.in_features, VOCAB, bias=False)
    torch.nn.init.normal_(head.weight, std=0.3, generator=torch.Generator().manual_seed(0))
    model.decoder.lm_head = head
    return model


@pytest.mark.parametrize("name", CAUSAL)
@torch.no_grad()
def test_beam_search_equals_the_reference_on_each_variant(name):
    """The batched search (every source's beams as one batch, each variant's incremental state
    reordered by beam) returns what the per-source search over recomputed prefixes returns."""
    model = flat_head(build(name, seed=4))
    memory, mask = encode(model, seed=5)
    common = {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD, "max_new_tokens": MAX_NEW}
    fast = beam_search(model.decoder, memory, mask, beam=3, length_penalty=1.0, **common)
    assert fast == reference_beam_search(model_logp(model, memory, mask), 3, beam=3, length_penalty=1.0)


class ScriptedDecoder:
    """A decoder whose next-token log-probabilities are a fixed random function of (source, prefix),
    with EOS likelier as the prefix grows: hypotheses finish at different steps, so finished and live
    beams are ranked together and the length penalty decides."""

    class positions:
        max_len = 64

    def logp(self, source: int, prefix: list[int]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(hash((source, *prefix)) % 2**31)
        logits = 1.5 * torch.randn(VOCAB, generator=gen)  # (V,)
        logits[EOS] += 0.5 * len(prefix) - 2.0
        logits[[BOS, PAD]] = float("-inf")
        return torch.log_softmax(logits, -1)

    def start(self, memory, mask):
        from attnlab.nn import DecodingState

        return DecodingState(memory, mask, [], None, ids=torch.zeros(memory.shape[0], 0, dtype=torch.long))

    def __init__(self):
        self.rows_per_step: list[int] = []

    def step(self, token, state):
        self.rows_per_step.append(token.shape[0])
        ids = torch.cat([state.ids, token[:, None]], 1)  # (B, t): BOS + prefix
        sources = state.memory[:, 0, 0].long().tolist()  # memory carries each row's source number
        logits = torch.stack(
            [self.logp(b, [t for t in row[1:] if t != PAD]) for b, row in zip(sources, ids.tolist())]
        )
        return logits, state.replace(ids=ids)


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("beam", [2, 4])
@torch.no_grad()
def test_beam_search_equals_the_reference_with_finished_hypotheses(beam, length_penalty):
    decoder, sources = ScriptedDecoder(), 6
    memory = torch.arange(sources, dtype=torch.float)[:, None, None].expand(sources, 2, 3)  # (B, 2, 3)
    common = {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD, "max_new_tokens": MAX_NEW}
    fast = beam_search(decoder, memory, None, beam=beam, length_penalty=length_penalty, **common)
    expected = reference_beam_search(decoder.logp, sources, beam=beam, length_penalty=length_penalty)
    assert fast == expected
    assert len({len(row) for row in expected}) > 2  # outputs of several lengths: EOS chosen at several steps
    assert decoder.rows_per_step[-1] < sources * beam  # sources that had ended left the batch


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
    sizes = sizes[4:]  # local's window (4 in build) fills in its first 4 steps, then stays full
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
