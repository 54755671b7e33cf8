"""FLOP counting (attnlab/flops.py): what FlopCounterMode alone would count as 0 is counted."""

from __future__ import annotations

import pytest
import torch

from attnlab.attention import build_attention
from attnlab.flops import count_flops


@pytest.mark.parametrize(
    ("inplace", "out_of_place", "shapes"),
    [
        (torch.Tensor.baddbmm_, torch.baddbmm, ((3, 4, 6), (3, 4, 5), (3, 5, 6))),
        (torch.Tensor.addmm_, torch.addmm, ((4, 6), (4, 5), (5, 6))),
    ],
)
def test_in_place_products_count_like_their_out_of_place_forms(inplace, out_of_place, shapes):
    acc, a, b = (torch.randn(*shape) for shape in shapes)
    expected = 2 * a.shape[:-1].numel() * a.shape[-1] * b.shape[-1]  # 2·(batch·M)·K·N
    assert count_flops(lambda: out_of_place(acc, a, b)) == expected
    assert count_flops(lambda: inplace(acc, a, b)) == expected


def test_every_product_of_the_chunked_causal_forward_is_counted():
    B, H, N, D, C = 1, 2, 32, 8, 8
    G = B * H * N // C  # chunks over every (batch, head)
    attention = build_attention("linear", chunk_size=C)
    q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
    expected = 2 * (
        (G - 1) * D * C * D  # phi(k)ᵀv of every chunk but the last: one product over the flat chunk axis
        + G * C * D * C  # in-chunk scores
        + G * C * D * D  # queries times carried sums
        + G * C * C * D  # scores times values (the in-place baddbmm_)
    )
    assert count_flops(lambda: attention(q, k, v, causal=True)) == expected
