"""The conformance suite: every registered variant, plugins included, is held to the contract.

The contract points ship with the package (attnlab/check/checks.py, `python -m attnlab.check`):
this module runs them over `attnlab.available_attentions()` at collection time, one test per
(variant, point), so a new variant (built-in or installed plugin) is tested for free. The points:
the declaration, shape and dtype, batch independence, causality (gradients, perturbation, chunk
boundaries; a variant without the capability must RAISE on causal=True), key padding, cross
attention, incremental decoding equal to the causal parallel pass (beams included), exactness of
exact variants, each declared `reference_tolerance` vs `full`, finite gradients, bf16/fp16 close
to fp32, and FLOP coverage (every product a variant runs is one attnlab/flops.py counts).

Below them, checks of particular variants against their own written-out definitions: linear vs
its RNN form, performer vs its explicit kernel, `full` per head vs `multihead`.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import B, D, H, N, qkv, randn

from attnlab import build_attention
from attnlab.check import conformance_cases, run_check
from attnlab.check.inputs import ATOL, build, padding_mask, smooth_fixture


@pytest.mark.parametrize(("name", "point"), conformance_cases())
def test_contract(name: str, point: str):
    run_check(name, point)


# ---- particular variants against their own definitions -----------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_full_per_head_equals_multihead(causal: bool):
    q, k, v = qkv(B, H, N, seed=7)
    mask = padding_mask(N, [N, N - 4])
    multi = build("multihead")(q, k, v, causal=causal, key_padding_mask=mask)
    full = build("full")
    for head in range(H):
        sl = slice(head, head + 1)
        single = full(q[:, sl], k[:, sl], v[:, sl], causal=causal, key_padding_mask=mask)
        torch.testing.assert_close(single, multi[:, sl], atol=ATOL, rtol=0)


def linear_attention_rnn(q, k, v, *, causal: bool, phi, eps: float):
    """Katharopoulos et al.'s recurrent form, one position at a time (non-causal: the final sums)."""
    S = torch.zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1], dtype=torch.float64)  # (B, H, D, Dv)
    z = torch.zeros(q.shape[0], q.shape[1], q.shape[-1], dtype=torch.float64)  # (B, H, D)
    fq, fk, v = phi(q.double()), phi(k.double()), v.double()
    outs = []
    for j in range(k.shape[2]):
        S = S + fk[:, :, j, :, None] * v[:, :, j, None, :]
        z = z + fk[:, :, j]
        if causal:
            outs.append((fq[:, :, j, None] @ S).squeeze(2) / ((fq[:, :, j] * z).sum(-1, keepdim=True) + eps))
    if causal:
        return torch.stack(outs, dim=2).float()
    return ((fq @ S) / ((fq * z[:, :, None]).sum(-1, keepdim=True) + eps)).float()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("feature_map", ["elu", "relu"])
@pytest.mark.parametrize("chunk_size", [1, 5, 64])  # several chunks, ragged last chunk, one chunk
def test_linear_matches_its_rnn_form(causal: bool, feature_map: str, chunk_size: int):
    from attnlab.attention.variants.linear import FEATURE_MAPS

    q, k, v = qkv(B, H, N, seed=8)
    attention = build("linear", feature_map=feature_map, chunk_size=chunk_size)
    expected = linear_attention_rnn(q, k, v, causal=causal, phi=FEATURE_MAPS[feature_map], eps=attention.eps)
    torch.testing.assert_close(attention(q, k, v, causal=causal), expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_performer_matches_its_explicit_kernel(causal: bool, chunk_size: int):
    """FAVOR+ written out: phi(x) = exp(W x - |x|²/2)/√r with x = q/d^¼; a masked N x N kernel."""
    q, k, v = qkv(B, H, N, seed=9, qk_scale=0.5)
    attention = build("performer", chunk_size=chunk_size)
    W = attention.projection.double()  # (r, d)

    def phi(x):
        x = x.double() / D**0.25
        return torch.exp(x @ W.T - x.square().sum(-1, keepdim=True) / 2) / math.sqrt(W.shape[0])

    kernel = phi(q) @ phi(k).transpose(-2, -1)  # (B, H, N, N)
    if causal:
        kernel = kernel.tril()
    expected = (kernel @ v.double()) / kernel.sum(-1, keepdim=True)
    torch.testing.assert_close(attention(q, k, v, causal=causal), expected.float(), atol=ATOL, rtol=1e-5)


def test_performer_converges_to_softmax_with_more_features():
    """More random features, smaller error: the estimator is unbiased (orthogonal rows, Haar QR)."""
    q, k, v = smooth_fixture(1)
    expected = build("full")(q, k, v)
    errors = [
        (build_attention("performer", head_dim=D, features=r)(q, k, v) - expected).abs().mean().item()
        for r in (16, 2048)
    ]
    assert errors[1] < errors[0] / 4, errors


def test_performer_projection_fixed_saved_and_redrawn():
    a, b = build("performer"), build("performer")
    assert "projection" in a.state_dict()
    torch.testing.assert_close(a.projection, b.projection)  # same seed, same projection
    c = build("performer", seed=1)
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(c.projection, a.projection)
    q, k, v = qkv(seed=11)
    fixed = build("performer").train()
    before = fixed.projection.clone()
    fixed(q, k, v)
    assert torch.equal(fixed.projection, before), "redraw=False never changes the projection"
    redrawn = build("performer", redraw=True).train()
    torch.manual_seed(123)  # redraws come from torch's global generator
    redrawn(q, k, v)
    assert not torch.equal(redrawn.projection, before), "redraw=True draws at each training forward"
    after = redrawn.projection.clone()
    redrawn.eval()(q, k, v)
    assert torch.equal(redrawn.projection, after), "evaluation keeps the last projection"


def test_performer_causal_stabiliser_is_data_independent():
    """Huge future keys must not rescale the past (a global key max in causal mode would)."""
    attention = build_attention("performer", head_dim=64)
    q, k, v = (randn(1, 1, 8, 64, seed=s) for s in (12, 13, 14))
    out = attention(q, k, v, causal=True)
    k2 = k.clone()
    w = attention.projection[attention.projection.norm(dim=1).argmax()]  # (64,) the longest row
    k2[:, :, 4:] = w * 64**0.25  # key/d^¼ = w: the largest exponent any key can have (|w|²/2)
    # A global key max would rescale the past: equal only up to round-off (1e-6 here), or far worse
    # when the past underflows. The data-independent shift gives bit-identical past outputs.
    torch.testing.assert_close(attention(q, k2, v, causal=True)[:, :, :4], out[:, :, :4], atol=0, rtol=0)
    assert torch.isfinite(attention(q * 50, k * 50, v, causal=True)).all()
    assert torch.isfinite(attention(q * 50, k * 50, v)).all()
