"""`local` (sliding-window attention): exactness against a dense band-masked softmax, the rolling
decoding state, padding, half precision, and that no N x N tensor is ever built."""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.attention import build_attention, get_attention_class
from attnlab.attention.base import masked_softmax
from attnlab.errors import CapabilityError


def band_reference(q, k, v, *, window, causal, key_padding_mask=None):
    """Dense softmax attention with an explicit band mask: the definition `local` must equal."""
    n = q.shape[-2]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    band = (j <= i) & (j > i - window) if causal else (i - j).abs() <= window // 2  # (N, N)
    allowed = band[None, None]  # (1, 1, N, N)
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]  # (B, 1, N, N)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, N)
    return masked_softmax(scores, allowed) @ v


def qkv(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))


def test_declared_capabilities():
    cls = get_attention_class("local")
    assert cls.complexity == "O(N·w·d)"
    caps = cls.capabilities
    assert (caps.causal, caps.key_padding_mask, caps.cross, caps.incremental) == (True, True, False, True)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 2, 3, 8, 13, 64])
def test_equals_band_masked_softmax(window, causal):
    q, k, v = qkv(2, 3, 37, 8)  # 37: not a multiple of any block size
    mask = torch.rand(2, 37, generator=torch.Generator().manual_seed(1)) < 0.25
    attn = build_attention("local", window=window)
    for key_padding_mask in (None, mask):
        out = attn(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
        ref = band_reference(q, k, v, window=window, causal=causal, key_padding_mask=key_padding_mask)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_window_covering_the_sequence_is_full_attention():
    q, k, v = qkv(1, 2, 20, 4)
    full = build_attention("full")
    wide = build_attention("local", window=64)
    torch.testing.assert_close(wide(q, k, v), full(q, k, v), rtol=0, atol=1e-12)
    torch.testing.assert_close(wide(q, k, v, causal=True), full(q, k, v, causal=True), rtol=0, atol=1e-12)


def test_value_dim_may_differ():
    q, k, _ = qkv(2, 2, 19, 8)
    v = torch.randn(2, 2, 19, 5, dtype=torch.float64)
    out = build_attention("local", window=4)(q, k, v, causal=True)
    torch.testing.assert_close(out, band_reference(q, k, v, window=4, causal=True), rtol=0, atol=1e-12)


@pytest.mark.parametrize("window", [1, 4, 7])
def test_incremental_steps_equal_causal_forward(window):
    B, H, N, D = 2, 3, 23, 8  # N > window: the rolling window must drop old keys
    q, k, v = qkv(B, H, N, D)
    attn = build_attention("local", window=window)
    state = attn.init_state(B, H, D, device=q.device, dtype=q.dtype)
    outs = []
    for t in range(N):
        out, state = attn.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
        outs.append(out)
        held = min(t + 1, window)  # O(w): the last `window` keys, fewer before that many were seen
        assert state["k"].shape == state["v"].shape == (B, H, held, D)
    assert state["count"].tolist() == [N] * B
    torch.testing.assert_close(torch.cat(outs, dim=2), attn(q, k, v, causal=True), rtol=0, atol=1e-12)


def test_incremental_state_reorders_by_batch():
    B, H, D = 3, 2, 4
    q, k, v = qkv(B, H, 6, D)
    attn = build_attention("local", window=4)
    state = attn.init_state(B, H, D, device=q.device, dtype=q.dtype)
    for t in range(5):
        _, state = attn.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
    index = torch.tensor([2, 0, 1])
    reordered = attn.reorder_state(state, index)
    out, _ = attn.step(q[index, :, 5:6], k[index, :, 5:6], v[index, :, 5:6], reordered)
    expected = attn(q, k, v, causal=True)[index, :, 5:6]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_incremental_half_precision_state_keeps_dtype():
    attn = build_attention("local", window=3)
    q, k, v = qkv(1, 2, 5, 4, dtype=torch.bfloat16)
    state = attn.init_state(1, 2, 4, device=q.device, dtype=torch.bfloat16)
    for t in range(5):
        out, state = attn.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
    assert out.dtype == torch.bfloat16 and state["k"].dtype == torch.bfloat16
    torch.testing.assert_close(out, attn(q, k, v, causal=True)[:, :, -1:], rtol=0.02, atol=0.02)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_is_ignored_and_fully_padded_rows_are_zero(causal):
    q, k, v = qkv(2, 2, 30, 4)
    for t in (q, k, v):
        t.requires_grad_(True)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, 20:] = True
    mask[1, :] = True  # a sequence with no real key at all
    attn = build_attention("local", window=6)
    out = attn(q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    # Changing padded keys/values changes nothing at real positions.
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[0, :, 20:] = 1e4
    v2[0, :, 20:] = -1e4
    again = attn(q.detach(), k2, v2, causal=causal, key_padding_mask=mask)
    torch.testing.assert_close(again[0, :, :20], out[0, :, :20].detach(), rtol=0, atol=1e-12)


def test_causal_does_not_see_the_future():
    q, k, v = qkv(1, 2, 25, 4)
    attn = build_attention("local", window=8)
    out = attn(q, k, v, causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 15:] += 3.0
    v2[:, :, 15:] += 3.0
    torch.testing.assert_close(attn(q, k2, v2, causal=True)[:, :, :15], out[:, :, :15], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_is_finite_and_close(dtype, causal):
    q, k, v = qkv(2, 4, 256, 32, dtype=dtype)
    for t in (q, k, v):
        t.requires_grad_(True)
    attn = build_attention("local", window=32)
    out = attn(q, k, v, causal=causal)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))
    ref = band_reference(*(t.detach().double() for t in (q, k, v)), window=32, causal=causal)
    tolerance = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out.detach().double(), ref, rtol=0, atol=tolerance)


def test_refuses_what_it_cannot_do():
    attn = build_attention("local", window=4)
    q, k, v = qkv(1, 1, 8, 4)
    with pytest.raises(CapabilityError, match="cross"):
        attn(q, k[:, :, :5], v[:, :, :5])
    with pytest.raises(ValueError, match="window"):
        build_attention("local", window=0)


@pytest.mark.parametrize(("before", "after"), [(1, 0), (1, 1), (0, 0)])
def test_neighbour_windows_gradient(before, after):
    from attnlab.attention.ops.window.chunk import NeighbourWindows

    x = torch.randn(2, 3, 12, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: NeighbourWindows.apply(t, 4, before, after), (x,))
    windows = NeighbourWindows.apply(x, 4, before, after).view(2, 3, 3, before + 1 + after, 4, 4)
    torch.testing.assert_close(windows[:, :, 1, before], x[:, :, 4:8])  # a window's own block
    if before:
        assert (windows[:, :, 0, 0] == 0).all()  # nothing before the first block


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 7, 64, 130])
def test_lengths_around_the_block_size(n, causal):
    q, k, v = qkv(2, 2, n, 8)
    out = build_attention("local", window=16)(q, k, v, causal=causal)
    torch.testing.assert_close(out, band_reference(q, k, v, window=16, causal=causal))


requires_c = pytest.mark.skipif(
    __import__("attnlab.attention.cpu", fromlist=["available"]).available() is False,
    reason="no C compiler: the blocked kernel runs through PyTorch's SDPA only",
)


@requires_c
@pytest.mark.parametrize(
    ("causal", "window", "n", "padded"),
    [
        (True, 8, 50, False),
        (True, 5, 37, True),
        (False, 8, 50, True),
        (False, 7, 29, False),
        (True, 64, 200, True),
    ],
)
def test_the_c_kernel_equals_the_dense_band_reference_with_its_gradients(causal, window, n, padded):
    """On float32 CPU tensors `local` runs its blocked kernel in C (cpu/functions.py BlockedWindowAttention): outputs
    and the gradients of q, k, v equal the dense band-masked softmax's (float64), with keys past the
    last block, padded keys, and a query whose every key is padded (its output is 0)."""
    q, k, v = (t.float() for t in qkv(2, 3, n, 16, seed=3))
    mask = None
    if padded:
        mask = torch.zeros(2, n, dtype=torch.bool)
        mask[0, n - 6 :] = True
        mask[1, : window + 2] = True  # the first queries of sequence 1 see no real key when causal
    attention = build_attention("local", window=window)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attention(*leaves, causal=causal, key_padding_mask=mask)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad((out * weights).sum(), leaves)
    ref_leaves = [t.double().requires_grad_() for t in (q, k, v)]
    ref = band_reference(*ref_leaves, window=window, causal=causal, key_padding_mask=mask)
    ref_grads = torch.autograd.grad((ref * weights.double()).sum(), ref_leaves)
    for got, want in zip((out, *grads), (ref, *ref_grads), strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-6)
    if padded and causal:
        assert not out[1, :, : window + 2].any()


@requires_c
def test_the_c_kernels_flops_count_the_pairs_they_compute(monkeypatch):
    """The blocked kernel's custom ops (attention/cpu/kernels.py) count 2 FLOPs per (query, key) pair computed and
    feature: each block's queries against the window keys inside the sequence (fewer at the edges),
    forward (scores, weights x values) and backward (five products)."""
    from attnlab.attention.cpu import kernels as c_loops
    from attnlab.flops import count_flops

    B, H, N, D, window = 1, 2, 50, 16, 8
    C, before = 7, 1  # a causal window of 8 reaches 7 keys back: blocks of 7 and the block before
    L = -(-N // C) * C
    pairs = sum(C * (min(L, (b + 1) * C) - max(0, (b - before) * C)) for b in range(L // C))
    calls = []
    for name in ("window_attention_forward", "window_attention_backward"):
        kernel = getattr(c_loops, name)
        monkeypatch.setattr(c_loops, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    q, k, v = (t.float().requires_grad_() for t in qkv(B, H, N, D, seed=5))
    attention = build_attention("local", window=window)
    counted = count_flops(lambda: attention(q, k, v, causal=True).sum().backward())
    assert calls == ["window_attention_forward", "window_attention_backward"]
    assert counted == 2 * B * H * pairs * (D + D) + 2 * B * H * pairs * (3 * D + 2 * D)


@requires_c
def test_windows_too_large_for_the_c_kernels_memory_take_the_pytorch_path(monkeypatch):
    """The C kernel keeps a block's scores and their gradient per thread (2·C·W floats); past
    local.WINDOW_SCRATCH_FLOATS the blocked SDPA path runs instead, with the same result."""
    from attnlab.attention.cpu import functions as local
    from attnlab.attention.cpu import kernels as c_loops

    calls = []
    kernel = c_loops.window_attention_forward
    monkeypatch.setattr(c_loops, "window_attention_forward", lambda *a: calls.append(1) or kernel(*a))
    q, k, v = (t.float() for t in qkv(1, 2, 40, 8, seed=6))
    attention = build_attention("local", window=16)
    in_c = attention(q, k, v, causal=True)
    assert calls == [1]
    monkeypatch.setattr(local, "WINDOW_SCRATCH_FLOATS", 100)
    torch.testing.assert_close(attention(q, k, v, causal=True), in_c, rtol=1e-5, atol=1e-6)
    assert calls == [1]
