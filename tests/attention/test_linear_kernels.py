"""The linear-attention kernels (attention/ops/linear/chunk.py) behind `linear` and `performer`: the
in-place scan, the hand-written backwards against autograd on a plain quadratic reference (causal and
not, with and without padded keys and feature maps), exact causality, and that a retained graph can be
differentiated twice (the backwards never write to saved tensors)."""

from __future__ import annotations

import pytest
import torch

from attnlab.attention.ops.linear.chunk import FEATURES, causal_linear_attention, linear_attention
from attnlab.attention.ops.passes import inclusive_scan_


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 70])
@pytest.mark.parametrize("reverse", [False, True])
def test_inclusive_scan_matches_cumsum(n, reverse):
    x = torch.randn(3, n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    expected = x.flip(1).cumsum(1).flip(1) if reverse else x.cumsum(1)
    torch.testing.assert_close(inclusive_scan_(x.clone(), reverse=reverse), expected)


def reference(q, k, v, eps, feature_map, *, causal=True, key_padding_mask=None):
    """Plain autograd, quadratic: the (masked) kernel matrix, normalised row by row."""
    if feature_map is not None:
        q, k = FEATURES[feature_map](q), FEATURES[feature_map](k)
    weights = q @ k.transpose(-2, -1)  # (B, H, Nq, Nk)
    if causal:
        weights = weights.tril()
    if key_padding_mask is not None:
        weights = weights.masked_fill(key_padding_mask[:, None, None, :], 0.0)
    return (weights @ v) / (weights.sum(-1, keepdim=True) + eps)


def inputs(n, *, features=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 3, n, 6, dtype=torch.float64, generator=generator) for _ in range(2))
    if features:  # already positive features
        q, k = q.exp(), k.exp()
    v = torch.randn(2, 3, n, 5, dtype=torch.float64, generator=generator)
    return [t.requires_grad_() for t in (q, k, v)]


def assert_matches(out, expected, leaves):
    """Same outputs and same gradients w.r.t. `leaves` for a random output gradient; returns ours."""
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, leaves, grad)
    for a, b in zip(ours, torch.autograd.grad(expected, leaves, grad), strict=True):
        torch.testing.assert_close(a, b)
    return ours


@pytest.mark.parametrize("feature_map", [None, "elu", "relu"])
@pytest.mark.parametrize(("n", "chunk"), [(24, 8), (29, 8), (5, 8), (16, 1)])
def test_forward_and_gradients_match_autograd(feature_map, n, chunk):
    q, k, v = inputs(n, features=feature_map is None)
    out = causal_linear_attention(q, k, v, chunk, 1e-6, feature_map)
    expected = reference(q, k, v, 1e-6, feature_map)
    assert_matches(out, expected, (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("feature_map", [None, "elu", "relu"])
def test_padded_keys_match_autograd(causal, feature_map):
    q, k, v = inputs(21, features=feature_map is None, seed=3)
    mask = torch.zeros(2, 21, dtype=torch.bool)
    mask[0, 15:] = True  # right padding
    mask[1, :4] = True  # left padding
    if causal:
        out = causal_linear_attention(q, k, v, 8, 1e-6, feature_map, mask)
    else:
        out = linear_attention(q, k, v, 1e-6, feature_map, mask)
    expected = reference(q, k, v, 1e-6, feature_map, causal=causal, key_padding_mask=mask)
    ours = assert_matches(out, expected, (q, k, v))  # queries that see no real key: 0 / eps = 0 in both
    assert (ours[1][0, :, 15:] == 0).all() and (ours[2][0, :, 15:] == 0).all()  # padded keys: no gradient


@pytest.mark.parametrize("feature_map", [None, "elu", "relu"])
@pytest.mark.parametrize(("nq", "nk"), [(17, 17), (9, 23)])
def test_non_causal_matches_autograd(feature_map, nq, nk):
    q, _, _ = inputs(nq, features=feature_map is None, seed=1)
    _, k, v = inputs(nk, features=feature_map is None, seed=2)
    out = linear_attention(q, k, v, 1e-6, feature_map)
    expected = reference(q, k, v, 1e-6, feature_map, causal=False)
    assert_matches(out, expected, (q, k, v))


def test_gradcheck():
    q, k, v = inputs(11)
    assert torch.autograd.gradcheck(
        lambda q, k, v: causal_linear_attention(q, k, v, 4, 1e-6, "elu"), (q, k, v)
    )


def test_only_requested_gradients_are_computed():
    q, k, v = inputs(12)
    v = v.detach()
    out = causal_linear_attention(q, k, v, 4, 1e-6, "elu")
    dq, dk = torch.autograd.grad(out.sum(), (q, k))
    eq, ek = torch.autograd.grad(reference(q, k, v, 1e-6, "elu").sum(), (q, k))
    torch.testing.assert_close(dq, eq)
    torch.testing.assert_close(dk, ek)


@pytest.mark.parametrize("causal", [False, True])
def test_a_retained_graph_gives_the_same_gradients_twice(causal):
    q, k, v = inputs(20)
    out = (
        causal_linear_attention(q, k, v, 8, 1e-6, "elu") if causal else linear_attention(q, k, v, 1e-6, "elu")
    )
    first = torch.autograd.grad(out.square().sum(), (q, k, v), retain_graph=True)
    second = torch.autograd.grad(out.square().sum(), (q, k, v))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_the_future_reaches_neither_the_past_outputs_nor_their_gradients_exactly():
    """Bitwise, not up to round-off: changing positions >= t changes no output before t, and the
    gradient of the outputs before t w.r.t. later inputs is exactly zero (float32, several chunks)."""
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=generator) for _ in range(3))
    t = 19
    changed = [x.clone() for x in (q, k, v)]
    for x in changed:
        x[:, :, t:] = torch.randn(x[:, :, t:].shape, generator=generator) * 100
    before = causal_linear_attention(q, k, v, 8, 1e-6, "elu")
    after = causal_linear_attention(*changed, 8, 1e-6, "elu")
    assert torch.equal(before[:, :, :t], after[:, :, :t])
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = causal_linear_attention(*leaves, 8, 1e-6, "elu")
    grads = torch.autograd.grad(out[:, :, :t].sum(), leaves)
    for g in grads:
        assert torch.count_nonzero(g[:, :, t:]) == 0


def test_non_contiguous_inputs():
    q, k, v = (t.detach().transpose(1, 2).contiguous().transpose(1, 2) for t in inputs(16))
    assert not q.is_contiguous()
    copies = [t.clone() for t in (q, k)]
    out = causal_linear_attention(q, k, v, 8, 1e-6, "elu")
    torch.testing.assert_close(out, reference(q, k, v, 1e-6, "elu"))
    for t, c in zip((q, k), copies, strict=True):  # the in-place feature map works on its own copy
        assert torch.equal(t, c)


def test_inputs_are_not_modified():
    q, k, v = (t.detach() for t in inputs(16))
    copies = [t.clone() for t in (q, k, v)]
    causal_linear_attention(q, k, v, 8, 1e-6, "elu")
    for t, c in zip((q, k, v), copies, strict=True):
        assert torch.equal(t, c)


def test_padding_keeps_the_feature_map_exact():
    """N not a multiple of the chunk: padded (zero) raw inputs give phi = 1 > 0 at the end, which the
    causal mask keeps away from every real output."""
    q, k, v = (t.detach() for t in inputs(13))
    out = causal_linear_attention(q, k, v, 8, 1e-6, "elu")
    torch.testing.assert_close(out, reference(q, k, v, 1e-6, "elu"))
    assert out.shape == (2, 3, 13, 5)


def test_relu_gradient_at_zero_follows_pytorch():
    q, k, v = inputs(8)
    with torch.no_grad():
        q[:, :, 0, 0] = 0.0
    out = causal_linear_attention(q, k, v, 4, 1e-6, "relu")
    ours = torch.autograd.grad(out.sum(), q)[0]
    theirs = torch.autograd.grad(reference(q, k, v, 1e-6, "relu").sum(), q)[0]
    torch.testing.assert_close(ours, theirs)


def test_float32_matches_float64():
    q, k, v = (t.detach() for t in inputs(40))
    out = causal_linear_attention(q.float(), k.float(), v.float(), 8, 1e-6, "elu")
    torch.testing.assert_close(out.double(), reference(q, k, v, 1e-6, "elu"), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("feature_map", ["elu", "relu"])
def test_a_strided_incoming_gradient_matches_autograd(feature_map):
    """A layer's (B, N, H, D) -> (B, H, N, D) transpose sends the kernel a strided gradient and strided
    v: the kernel takes them and matches autograd."""
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 40, 3, 8, generator=gen).transpose(1, 2) for _ in range(3))  # (B, H, N, D)
    grad = torch.randn(2, 40, 3, 8, generator=gen).transpose(1, 2)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    causal_linear_attention(*leaves, 16, 1e-6, feature_map=feature_map).backward(grad)
    ref_leaves = [t.double().contiguous().requires_grad_() for t in (q, k, v)]  # the reference: plain layout
    reference(*ref_leaves, 1e-6, feature_map).backward(grad.double())
    for got, want in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-4, atol=1e-5)
