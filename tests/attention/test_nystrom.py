"""`nystrom` (Nyströmformer): exact below the landmark count, close to softmax on smooth inputs,
the iterative pseudo-inverse, masked landmarks (never NaN), half precision, no N x N tensor."""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.attention import build_attention, get_attention_class
from attnlab.attention.base import allowed_keys, masked_softmax
from attnlab.attention.variants.nystrom import iterative_pinv, segment_means
from attnlab.errors import CapabilityError


def softmax_reference(q, k, v, key_padding_mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
    allowed = allowed_keys(
        q.shape[-2], k.shape[-2], causal=False, key_padding_mask=key_padding_mask, device=q.device
    )
    return masked_softmax(scores, allowed) @ v


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def smooth(B, H, N, D, generator, amplitude=1.0):
    """Features varying slowly along the sequence: the attention matrix is smooth, hence low rank."""
    t = torch.arange(N) / N
    freq = torch.rand(B, H, 1, D, generator=generator) * 2
    phase = torch.rand(B, H, 1, D, generator=generator) * 2 * math.pi
    return amplitude * torch.sin(2 * math.pi * freq * t[:, None] + phase)  # (B, H, N, D)


def test_declared_capabilities():
    cls = get_attention_class("nystrom")
    assert cls.complexity == "O(N·m·d)"
    caps = cls.capabilities
    assert (caps.causal, caps.key_padding_mask, caps.cross, caps.incremental) == (False, True, True, False)


@pytest.mark.parametrize(("nq", "nk"), [(16, 16), (5, 16), (16, 5), (16, 200), (200, 16)])
def test_exact_softmax_when_not_longer_than_the_landmarks(nq, nk):
    q, k, v = randn(2, 3, nq, 8, seed=0), randn(2, 3, nk, 8, seed=1), randn(2, 3, nk, 6, seed=2)
    mask = torch.zeros(2, nk, dtype=torch.bool)
    mask[0, nk // 2 :] = True
    attn = build_attention("nystrom", heads=3, landmarks=16)
    for key_padding_mask in (None, mask):
        out = attn(q, k, v, key_padding_mask=key_padding_mask)
        torch.testing.assert_close(out, softmax_reference(q, k, v, key_padding_mask), rtol=0, atol=1e-12)


def test_iterative_pinv_converges_to_the_pseudo_inverse():
    a = torch.softmax(randn(4, 16, 16) * 2, dim=-1)
    torch.testing.assert_close(iterative_pinv(a, 30), torch.linalg.pinv(a), rtol=0, atol=1e-8)
    # A well-conditioned matrix needs only the paper's 6 iterations.
    b = torch.softmax(6 * torch.eye(16, dtype=torch.float64) + randn(4, 16, 16, seed=1), dim=-1)
    torch.testing.assert_close(iterative_pinv(b, 6), torch.linalg.inv(b), rtol=0, atol=1e-8)
    # Rank-deficient (missing landmarks give zero rows/columns) and all-zero matrices stay finite.
    c = b.clone()
    c[:, 3] = 0
    c[:, :, 5] = 0
    torch.testing.assert_close(iterative_pinv(c, 40), torch.linalg.pinv(c), rtol=0, atol=1e-8)
    assert (iterative_pinv(torch.zeros(2, 4, 4), 6) == 0).all()


def test_close_to_softmax_on_smooth_inputs():
    # Measured (fp32, 5 seeds): max abs error 0.006-0.007 with 6 iterations and ~1e-4 with 20, while
    # the exact output differs from plain averaging (uniform attention) by 0.07-0.12.
    B, H, N, D = 2, 4, 500, 16  # 500: not a multiple of the 32 landmarks
    g = torch.Generator().manual_seed(0)
    q, k = smooth(B, H, N, D, g), smooth(B, H, N, D, g)
    v = torch.randn(B, H, N, D, generator=g)
    ref = softmax_reference(q, k, v)
    uniform_error = (ref - v.mean(dim=2, keepdim=True)).abs().max()
    error_6 = (build_attention("nystrom", heads=H, landmarks=32)(q, k, v) - ref).abs().max()
    error_20 = (
        (build_attention("nystrom", heads=H, landmarks=32, pinv_iterations=20)(q, k, v) - ref).abs().max()
    )
    assert error_6 < 0.015 and error_6 < uniform_error / 5
    assert error_20 < 5e-4


def test_segment_means_count_only_real_positions():
    x = randn(2, 1, 10, 3)
    real = torch.ones(2, 10, dtype=torch.bool)
    real[0, 5:] = False  # segments of 10 positions into 4: sizes 3, 2, 3, 2
    means, present = segment_means(x, 4, real)
    torch.testing.assert_close(means[1, 0, 0], x[1, 0, 0:3].mean(0))
    torch.testing.assert_close(means[0, 0, 1], x[0, 0, 3:5].mean(0))
    torch.testing.assert_close(means[0, 0, 2], torch.zeros(3, dtype=x.dtype))  # no real key: no landmark
    assert present.tolist() == [[True, True, False, False], [True, True, True, True]]


def test_padding_never_reaches_real_outputs_and_never_gives_nan():
    B, H, N, D = 3, 2, 96, 8
    q, k, v = (randn(B, H, N, D, seed=s).requires_grad_(True) for s in range(3))
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[0, 50:] = True  # whole trailing landmark segments without a real key
    mask[1, ::3] = True  # scattered padding
    mask[2, :] = True  # nothing real at all
    attn = build_attention("nystrom", heads=H, landmarks=16)
    out = attn(q, k, v, key_padding_mask=mask)
    assert torch.isfinite(out).all()
    assert (out[2] == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    # Self-attention: garbage in padded q, k and v changes nothing at real positions.
    q2, k2, v2 = (t.detach().clone() for t in (q, k, v))
    for t in (q2, k2, v2):
        t.masked_fill_(mask[:, None, :, None], 1e4)
    again = attn(q2, k2, v2, key_padding_mask=mask)
    real = ~mask[:, None, :, None]
    torch.testing.assert_close(
        again.masked_fill(~real, 0), out.detach().masked_fill(~real, 0), rtol=0, atol=1e-10
    )


def test_cross_attention_with_padding():
    q, k, v = randn(2, 2, 70, 8, seed=0), randn(2, 2, 130, 8, seed=1), randn(2, 2, 130, 5, seed=2)
    mask = torch.zeros(2, 130, dtype=torch.bool)
    mask[1, 90:] = True
    attn = build_attention("nystrom", heads=2, landmarks=8)
    out = attn(q, k, v, key_padding_mask=mask)
    assert out.shape == (2, 2, 70, 5) and torch.isfinite(out).all()
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 90:] = 50.0
    v2[1, :, 90:] = 50.0
    torch.testing.assert_close(attn(q, k2, v2, key_padding_mask=mask), out, rtol=0, atol=1e-10)


def test_conv_residual():
    B, H, N, D = 2, 3, 40, 4
    q, k, v = (randn(B, H, N, D, seed=s) for s in range(3))
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[0, 30:] = True
    plain = build_attention("nystrom", heads=H, landmarks=8)
    conv = build_attention("nystrom", heads=H, landmarks=8, conv_kernel=5).double()
    assert conv.conv.weight.shape == (H, 1, 5, 1)  # one depthwise filter per head
    out = conv(q, k, v, key_padding_mask=mask)
    residual = out - plain(q, k, v, key_padding_mask=mask)
    expected = torch.nn.functional.conv2d(
        v.masked_fill(mask[:, None, :, None], 0), conv.conv.weight, padding=(2, 0), groups=H
    )
    torch.testing.assert_close(residual, expected, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="conv_kernel=0"):
        conv(q[:, :, :20], k, v)
    with pytest.raises(ValueError, match="odd"):
        build_attention("nystrom", heads=H, conv_kernel=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_half_precision_is_finite_and_close_to_fp32(dtype):
    q, k, v = (randn(2, 4, 256, 32, seed=s, dtype=dtype).requires_grad_(True) for s in range(3))
    attn = build_attention("nystrom", heads=4)
    out = attn(q, k, v)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    fp32 = attn(*(t.detach().float() for t in (q, k, v)))
    torch.testing.assert_close(
        out.detach().float(), fp32, rtol=0, atol=0.05 if dtype == torch.bfloat16 else 0.01
    )


def test_refuses_causal():
    q = randn(1, 1, 64, 4)
    with pytest.raises(CapabilityError, match="causal"):
        build_attention("nystrom", heads=1)(q, q, q, causal=True)
