"""FLOP counting (attnlab/flops.py): what FlopCounterMode alone would count as 0 is counted, and a
causal SDPA call counts the (query, key) pairs its mask keeps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import build_attention
from attnlab.flops import causal_pairs, count_flops, formulas


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


@pytest.mark.parametrize(("nq", "nk"), [(1, 1), (2, 5), (5, 2), (7, 7)])
def test_causal_pairs_count_the_top_left_mask(nq, nk):
    assert causal_pairs(nq, nk) == int(torch.ones(nq, nk).tril().sum())


def test_causal_sdpa_counts_the_pairs_its_mask_keeps_forward_and_backward():
    B, H, N, D = 2, 3, 16, 8
    q, k, v = (torch.randn(B, H, N, D, requires_grad=True) for _ in range(3))
    dense = 4 * B * H * N * N * D  # QKᵀ and PV, 2 FLOPs per multiply-add
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == dense
    causal = count_flops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert causal == 4 * B * H * D * N * (N + 1) // 2
    both = count_flops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward())
    assert 2 * both == 7 * causal  # the backward's 5 products (scores again, dV, dP, dQ, dK): 2.5x the 2
    mask = torch.ones(N, N, dtype=torch.bool).tril()  # an explicit mask: the kernel computes every block
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) == dense


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("_scaled_dot_product_flash_attention", (0.0, True)),  # dropout_p, is_causal
        ("_scaled_dot_product_efficient_attention", (None, False, 0.0, True)),  # attn_bias, lse, p, causal
    ],
)
def test_the_cuda_kernels_formulas_are_causal_aware_too(op, args):
    """No GPU needed: the formulas only read shapes and flags (meta tensors here)."""
    q, k, v = (torch.empty(1, 2, 6, 4, device="meta") for _ in range(3))
    formula = formulas()[getattr(torch.ops.aten, op)]
    dense = formula(q, k, v, *args[:-1], False)
    assert dense == 4 * 2 * 6 * 6 * 4
    assert formula(q, k, v, *args) == dense * causal_pairs(6, 6) // 36
    assert formula(q, k, v, *args[:-1], is_causal=True) == formula(q, k, v, *args)


def test_kernels_are_found_by_type_not_by_attribute_name():
    """A model that keeps its attention under any attribute name still has its FLOPs counted."""
    from torch import nn

    from attnlab.attention import Attention
    from attnlab.flops import count_flops_inside

    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)  # not attention: never counted
            self.mixer = build_attention("linear", chunk_size=4)

        def forward(self, x):  # x (B, H, N, D)
            x = self.proj(x)
            return self.mixer(x, x, x, causal=True)

    model, x = Mixer(), torch.randn(1, 2, 16, 8)
    kernel_only = count_flops(lambda: model.mixer(*(model.proj(x),) * 3, causal=True)) - count_flops(
        lambda: model.proj(x)
    )
    assert count_flops_inside(model, Attention, lambda: model(x)) == kernel_only > 0
    assert count_flops_inside(model, nn.Linear, lambda: model(x)) == count_flops(lambda: model.proj(x))


@pytest.mark.parametrize("gated", [False, True])
def test_the_delta_rules_c_loops_count_what_their_pytorch_loops_compute(monkeypatch, gated):
    """The chunk loops in C (attention/cpu/kernels.py) are custom ops with their own FLOP formulas: forward and
    backward, they count exactly the products of the PyTorch loops they replace, which PyTorch's own
    counter sees as batched products (every product in the loop, chunk by chunk, and the batched ones
    that read a state)."""
    from attnlab.attention import cpu
    from attnlab.attention.cpu import kernels as c_loops
    from attnlab.attention.ops.delta_rule import chunk_delta_rule

    if not cpu.available():
        pytest.skip("no C compiler: the loops run in PyTorch only")
    B, H, N, D, Dv, C = 1, 2, 48, 16, 24, 8
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, N, dim, generator=gen, requires_grad=True) for dim in (D, D, Dv))
    beta = torch.rand(B, H, N, generator=gen).requires_grad_()
    g = -torch.rand(B, H, N, generator=gen).requires_grad_() if gated else None

    def step():
        out, S = chunk_delta_rule(q, k, v, beta, g, scale=D**-0.5, chunk_size=C)
        (out.sum() + S.sum()).backward()

    calls = []
    for name in ("delta_rule_forward_loop", "delta_rule_backward_loop"):
        loop = getattr(c_loops, name)
        monkeypatch.setattr(
            c_loops, name, lambda *a, _loop=loop, _name=name: calls.append(_name) or _loop(*a)
        )
    in_c = count_flops(step)
    assert calls == ["delta_rule_forward_loop", "delta_rule_backward_loop"]
    monkeypatch.setattr(cpu, "kernels_for", lambda *tensors: None)
    assert count_flops(step) == in_c > 0
    assert len(calls) == 2  # the PyTorch loops this time


def test_baseds_c_loops_count_the_batched_forms_products_less_those_they_skip(monkeypatch):
    """Based's chunk loops in C (attention/cpu/kernels.py) count what its batched PyTorch form computes, less what
    the loops skip and plus what they recompute. The batched form runs its products over the flat axis
    of all chunks: the sums into each sequence's first chunk and out of its last (2G - 1 (C, F) x
    (F, Dv + 1) products forward, 4G - 1 backward) and the gradient of [v 1]'s column of ones (one column
    per chunk but the last), which the loops leave out; the loops recompute the scores q kᵀ in the
    backward (d per pair) where the batched form saves them, and their κᵀ dn is Dv wide, not Dv + 1."""
    from attnlab.attention import cpu
    from attnlab.attention.cpu import kernels as c_loops
    from attnlab.attention.ops.based import chunk_based

    if not cpu.available():
        pytest.skip("no C compiler: the loops run in PyTorch only")
    B, H, nc, C, d, Dv = 1, 3, 5, 8, 4, 12
    G, F_ = B * H, c_loops.taylor_feature_count(d)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, nc * C, dim, generator=gen, requires_grad=True) for dim in (d, d, Dv))

    def forward():
        return chunk_based(q, k, v, scale=d**-0.5, chunk_size=C)

    calls = []
    for name in ("based_forward_loop", "based_backward_loop"):
        loop = getattr(c_loops, name)
        monkeypatch.setattr(
            c_loops, name, lambda *a, _loop=loop, _name=name: calls.append(_name) or _loop(*a)
        )
    forward_in_c, step_in_c = count_flops(forward), count_flops(lambda: forward().sum().backward())
    assert calls == ["based_forward_loop", "based_forward_loop", "based_backward_loop"]
    monkeypatch.setattr(cpu, "kernels_for", lambda *tensors: None)
    forward_batched, step_batched = count_flops(forward), count_flops(lambda: forward().sum().backward())
    assert len(calls) == 3  # the batched form this time
    forward_skipped = 2 * C * F_ * (Dv + 1) * (2 * G - 1)
    backward_skipped = 2 * C * F_ * ((Dv + 1) * (4 * G - 1) + G * (nc - 1)) + 2 * G * nc * C * C * (1 - d)
    assert forward_batched - forward_in_c == forward_skipped
    assert (step_batched - forward_batched) - (step_in_c - forward_in_c) == backward_skipped
    assert forward_in_c > 0 and step_in_c > forward_in_c
