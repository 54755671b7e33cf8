"""`lowrank` (Linformer): projection slicing, padding zeroed before projecting, the k <= max_len
check, init scale, half precision, and that no N x N tensor is ever built."""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.attention import build_attention, get_attention_class
from attnlab.errors import CapabilityError, ConfigError


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def linformer_reference(q, k, v, e, f):
    """The Linformer formula written out, for unpadded inputs: E, F sliced to the key length."""
    n = k.shape[-2]
    keys = torch.einsum("nk,bhnd->bhkd", e[:n], k) / math.sqrt(n)  # (B, H, k, D)
    values = torch.einsum("nk,bhnd->bhkd", f[:n], v) / math.sqrt(n)  # (B, H, k, Dv)
    return torch.softmax(q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ values


def test_declared_capabilities():
    cls = get_attention_class("lowrank")
    assert cls.complexity == "O(N·k·d)"
    caps = cls.capabilities
    assert (caps.causal, caps.key_padding_mask, caps.cross, caps.incremental) == (False, True, True, False)


def test_projections_are_learned_and_shared_across_heads_and_batch():
    attn = build_attention("lowrank", max_len=50, k=8)
    assert [(name, tuple(p.shape)) for name, p in attn.named_parameters()] == [
        ("proj_k", (50, 8)),
        ("proj_v", (50, 8)),
    ]
    shared = build_attention("lowrank", max_len=50, k=8, share_kv=True)
    assert [name for name, _ in shared.named_parameters()] == ["proj_k"]
    q, k, v = (randn(2, 3, 20, 4, seed=s).float() for s in range(3))
    attn(q, k, v).sum().backward()
    assert all(torch.isfinite(p.grad).all() and p.grad[:20].abs().sum() > 0 for p in attn.parameters())
    assert all((p.grad[20:] == 0).all() for p in attn.parameters())  # rows past the length are unused


@pytest.mark.parametrize("n", [1, 7, 33, 64])
def test_any_length_up_to_max_len_slices_the_projections(n):
    attn = build_attention("lowrank", max_len=64, k=16).double()
    q, k, v = randn(2, 3, n, 8, seed=0), randn(2, 3, n, 8, seed=1), randn(2, 3, n, 5, seed=2)
    out = attn(q, k, v)
    assert out.shape == (2, 3, n, 5)
    torch.testing.assert_close(
        out, linformer_reference(q, k, v, attn.proj_k, attn.proj_v), rtol=0, atol=1e-12
    )
    shared = build_attention("lowrank", max_len=64, k=16, share_kv=True).double()
    expected = linformer_reference(q, k, v, shared.proj_k, shared.proj_k)
    torch.testing.assert_close(shared(q, k, v), expected, rtol=0, atol=1e-12)


def test_cross_attention_lengths_may_differ():
    attn = build_attention("lowrank", max_len=64, k=16).double()
    q, k, v = randn(2, 3, 100, 8, seed=0), randn(2, 3, 40, 8, seed=1), randn(2, 3, 40, 8, seed=2)
    out = attn(q, k, v)  # queries are never projected: Nq may even exceed max_len
    torch.testing.assert_close(
        out, linformer_reference(q, k, v, attn.proj_k, attn.proj_v), rtol=0, atol=1e-12
    )


def test_padding_is_zeroed_before_projecting():
    attn = build_attention("lowrank", max_len=64, k=16).double()
    q, k, v = (randn(2, 3, 40, 8, seed=s) for s in range(3))
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, 25:] = True
    mask[1, ::4] = True
    out = attn(q, k, v, key_padding_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2.masked_fill_(mask[:, None, :, None], 1e4)
    v2.masked_fill_(mask[:, None, :, None], -1e4)
    torch.testing.assert_close(attn(q, k2, v2, key_padding_mask=mask), out, rtol=0, atol=1e-12)
    # Right padding gives exactly the output of the unpadded sequence (averaging is over real keys).
    torch.testing.assert_close(out[0], attn(q[:1], k[:1, :, :25], v[:1, :, :25])[0], rtol=0, atol=1e-12)


def test_fully_padded_sequence_gives_zeros_and_finite_gradients():
    attn = build_attention("lowrank", max_len=32, k=8)
    q, k, v = (randn(2, 2, 32, 4, seed=s, dtype=torch.float32).requires_grad_(True) for s in range(3))
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[1] = True
    out = attn(q, k, v, key_padding_mask=mask)
    assert torch.isfinite(out).all() and (out[1] == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, *attn.parameters()))


def test_outputs_are_well_scaled_at_init():
    # Projected keys/values have the statistics of single keys/values whatever the length, so the
    # output neither vanishes nor explodes as N grows.
    torch.manual_seed(0)
    attn = build_attention("lowrank", max_len=2048, k=64)
    for n in (64, 2048):
        q, k, v = (torch.randn(2, 4, n, 32) for _ in range(3))
        std = attn(q, k, v).std().item()
        assert 0.1 < std < 1.0, (n, std)


def test_k_larger_than_max_len_is_a_clear_error():
    with pytest.raises(
        ConfigError, match=r"attention.k=128 must be <= model.max_len=64; choose attention.k=64"
    ):
        build_attention("lowrank", max_len=64, k=128)
    with pytest.raises(ConfigError, match="attention.k=0 must be >= 1"):
        build_attention("lowrank", max_len=64, k=0)


def test_keys_longer_than_max_len_are_a_clear_error():
    attn = build_attention("lowrank", max_len=16, k=4)
    q = randn(1, 1, 17, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"17 keys .* model.max_len=16"):
        attn(q, q, q)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_half_precision_is_finite_and_close_to_fp32(dtype):
    attn = build_attention("lowrank", max_len=256, k=64)
    q, k, v = (randn(2, 4, 256, 32, seed=s, dtype=dtype).requires_grad_(True) for s in range(3))
    out = attn.to(dtype)(q, k, v)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, *attn.parameters()))
    fp32 = attn.float()(*(t.detach().float() for t in (q, k, v)))
    torch.testing.assert_close(
        out.detach().float(), fp32, rtol=0, atol=0.05 if dtype == torch.bfloat16 else 0.01
    )


def test_refuses_causal():
    q = randn(1, 1, 8, 4, dtype=torch.float32)
    with pytest.raises(CapabilityError, match="causal"):
        build_attention("lowrank", max_len=8, k=4)(q, q, q, causal=True)
