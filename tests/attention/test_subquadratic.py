"""Every built-in approximation is sub-quadratic in memory in practice: at N=4096 no operation,
forward or backward, padded or causal, returns a tensor anywhere near N x N."""

from __future__ import annotations

import pytest
import torch
from helpers import LargestTensor

from attnlab.attention import available_attentions, build_attention, get_attention_class, registry_entry
from attnlab.attention.gates import with_example_gates

N = 4096
# Settings that exercise each variant's optional paths (nystrom's conv residual).
PARAMS = {"nystrom": {"conv_kernel": 33}, "local": {"window": 128}}
APPROXIMATIONS = [
    name for name in available_attentions()
    if registry_entry(name).source == "built-in" and not get_attention_class(name).exact
]  # fmt: skip


@pytest.mark.parametrize("name", APPROXIMATIONS)
def test_no_quadratic_tensor_forward_or_backward(name):
    caps = get_attention_class(name).capabilities
    q, k, v = (torch.randn(1, 1, N, 16, requires_grad=True) for _ in range(3))
    mask = torch.zeros(1, N, dtype=torch.bool)
    mask[:, -100:] = True
    attention = with_example_gates(
        build_attention(name, head_dim=16, heads=1, max_len=N, **PARAMS.get(name, {}))
    )
    for causal in (False, True) if caps.causal else (False,):
        with LargestTensor() as largest:
            out = attention(q, k, v, causal=causal, key_padding_mask=mask if caps.key_padding_mask else None)
            out.sum().backward()
        assert largest.numel < N * N / 4, f"{name}: {largest.op} made a tensor of {largest.numel} elements"
