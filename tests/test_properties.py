"""Property tests over random shapes, masks and lengths, for every registered variant (plugins included):
finite outputs, causality, padding invariance, and agreement with softmax for exact variants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab import available_attentions, build_attention, get_attention_class
from attnlab.attention.gates import with_example_gates

VARIANTS = available_attentions()
MAX_LEN = 64  # lowrank needs its default k=64 <= max_len
D = 8
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


def build(name: str):
    attention = build_attention(name, head_dim=D, heads=heads_of(name), max_len=MAX_LEN)
    return with_example_gates(attention.eval())  # gated variants get gates derived from the keys


def heads_of(name: str) -> int:
    return get_attention_class(name).fixed_heads or 2


def capable(name: str, capability: str) -> bool:
    return bool(getattr(get_attention_class(name).capabilities, capability))


@st.composite
def cases(draw, name: str):
    batch = draw(st.integers(1, 3))
    n = draw(st.integers(2, MAX_LEN))
    lengths = draw(st.lists(st.integers(1, n), min_size=batch, max_size=batch))
    lengths[draw(st.integers(0, batch - 1))] = n  # at least one full row
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    g = torch.Generator().manual_seed(seed)
    shape = (batch, heads_of(name), n, D)
    q, k, v = (torch.randn(*shape, generator=g) * s for s in (scale, scale, 1.0))
    mask = torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]  # (B, N) True = padding
    return q, k, v, mask, lengths


@pytest.mark.parametrize("name", VARIANTS)
def test_outputs_are_finite_for_random_shapes_and_masks(name):
    attention = build(name)

    @SETTINGS
    @given(cases(name), st.booleans())
    def check(case, causal):
        q, k, v, mask, _ = case
        causal = causal and capable(name, "causal")
        mask = mask if capable(name, "key_padding_mask") else None
        out = attention(q, k, v, causal=causal, key_padding_mask=mask)
        assert out.shape == q.shape and torch.isfinite(out).all()

    check()


@pytest.mark.parametrize("name", [n for n in VARIANTS if capable(n, "causal")])
def test_causal_outputs_do_not_see_the_future(name):
    attention = build(name)

    @SETTINGS
    @given(cases(name), st.data())
    def check(case, data):
        q, k, v, _, _ = case
        n = q.shape[2]
        t = data.draw(st.integers(0, n - 1))
        out = attention(q, k, v, causal=True)
        k2, v2 = k.clone(), v.clone()
        k2[:, :, t + 1 :] = torch.randn_like(k2[:, :, t + 1 :]) * 3
        v2[:, :, t + 1 :] = torch.randn_like(v2[:, :, t + 1 :]) * 3
        q2 = q.clone()
        q2[:, :, t + 1 :] = torch.randn_like(q2[:, :, t + 1 :])
        out2 = attention(q2, k2, v2, causal=True)
        torch.testing.assert_close(out2[:, :, : t + 1], out[:, :, : t + 1], atol=1e-4, rtol=1e-4)

    check()


@pytest.mark.parametrize("name", [n for n in VARIANTS if capable(n, "key_padding_mask")])
def test_padded_keys_do_not_change_real_outputs(name):
    attention = build(name)

    @SETTINGS
    @given(cases(name), st.booleans())
    def check(case, causal):
        q, k, v, mask, lengths = case
        causal = causal and capable(name, "causal")
        out = attention(q, k, v, causal=causal, key_padding_mask=mask)
        k2, v2 = k.clone(), v.clone()
        noise = mask[:, None, :, None]  # (B, 1, N, 1): only padded keys change
        k2 = torch.where(noise, torch.randn_like(k2) * 5, k2)
        v2 = torch.where(noise, torch.randn_like(v2) * 5, v2)
        out2 = attention(q, k2, v2, causal=causal, key_padding_mask=mask)
        for b, length in enumerate(lengths):
            torch.testing.assert_close(out2[b, :, :length], out[b, :, :length], atol=1e-4, rtol=1e-4)

    check()


def softmax_reference(q, k, v, causal, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    if causal:
        n = q.shape[2]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("name", [n for n in VARIANTS if get_attention_class(n).exact])
def test_exact_variants_agree_with_softmax(name):
    attention = build(name)

    @SETTINGS
    @given(cases(name), st.booleans())
    def check(case, causal):
        q, k, v, mask, lengths = case
        causal = causal and capable(name, "causal")
        out = attention(q, k, v, causal=causal, key_padding_mask=mask)
        expected = softmax_reference(q, k, v, causal, mask)
        for b, length in enumerate(lengths):
            torch.testing.assert_close(out[b, :, :length], expected[b, :, :length], atol=1e-4, rtol=1e-4)

    check()
