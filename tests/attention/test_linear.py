"""`linear`: its custom elu+1 feature map matches autograd's, and the chunked causal form its RNN form
at lengths spanning several chunks (the conformance suite covers the rest)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnlab.attention import build_attention
from attnlab.attention.variants.linear import EluPlusOne


def test_elu_plus_one_gradient_matches_autograd():
    x = torch.randn(4, 37, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(EluPlusOne.apply, (x,))
    reference = torch.autograd.grad((F.elu(x) + 1).pow(2).sum(), x)[0]
    ours = torch.autograd.grad(EluPlusOne.apply(x).pow(2).sum(), x)[0]
    torch.testing.assert_close(ours, reference)


def test_causal_chunks_equal_the_recurrent_form_over_many_chunks():
    attention = build_attention("linear", chunk_size=8)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 45, 8, dtype=torch.float64, generator=generator) for _ in range(3))
    out = attention(q, k, v, causal=True)  # (B, H, N, D)
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    state = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    normaliser = torch.zeros(2, 3, 8, dtype=torch.float64)
    for t in range(45):
        state = state + phi_k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, D, Dv)
        normaliser = normaliser + phi_k[:, :, t]
        expected = (phi_q[:, :, t, None, :] @ state).squeeze(2) / (
            (phi_q[:, :, t] * normaliser).sum(-1, keepdim=True) + 1e-6
        )
        torch.testing.assert_close(out[:, :, t], expected)  # fp64 in, fp64 accumulation
