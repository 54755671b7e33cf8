"""`nsa` (Native Sparse Attention): the chunked form against its dense written-out definition
(outputs and gradients), the selected branch's hand-written backward, the selection itself, decoding,
and the conformance suite again with blocks small enough that the top-n choice is exercised at N=12.
fla's naive.py: tests/attention/test_fla_reference.py."""

from __future__ import annotations

import math
from typing import Annotated

import pytest
import torch

from attnlab.attention import build_attention, get_attention_class, registry
from attnlab.attention.base import Range
from attnlab.attention.gates import random_gates
from attnlab.attention.variants.nsa import (
    NativeSparseAttention,
    SelectedAttention,
    block_summaries,
    compressed_visible,
    forced_blocks,
    gate_mix,
    reference_branches,
    select_blocks,
)
from attnlab.bench.memory import peak_memory
from attnlab.check import CHECKS, run_check

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"block_size": 4, "selected_blocks": 4, "window": 6}  # 70 positions: 18 blocks, a ragged one


def qkv(B=2, H=3, N=70, D=8, *, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, N, D, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))


def some_padding(B: int, N: int) -> torch.Tensor:
    """(B, N) True = padding: right padding in row 0, scattered padding in the others."""
    mask = torch.rand(B, N, generator=torch.Generator().manual_seed(1)) < 0.2
    mask[0] = torch.arange(N) >= N - 9
    return mask


def test_declaration():
    cls = get_attention_class("nsa")
    caps = cls.capabilities
    assert (caps.causal, caps.key_padding_mask, caps.cross, caps.incremental) == (True, True, False, True)
    assert not (caps.alibi or caps.segments)
    assert sorted(cls.gates) == ["g_cmp", "g_slc", "g_swa"]
    assert cls.complexity == "O(N²·d/l + N·(n·l + w)·d)"


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 128])  # one query a chunk, ragged chunks, one chunk
def test_chunked_branches_equal_the_dense_definition(causal: bool, padded: bool, chunk_size: int):
    q, k, v = qkv()
    mask = some_padding(2, 70) if padded else None
    attention = build_attention("nsa", **SMALL, chunk_size=chunk_size)
    ours = attention.branches(q, k, v, causal=causal, key_padding_mask=mask)
    theirs = reference_branches(q, k, v, **SMALL, causal=causal, key_padding_mask=mask)
    for name, a, b in zip(("compressed", "selected", "sliding"), ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"{name} branch")


@pytest.mark.parametrize("causal", [True, False])
def test_gradients_equal_the_dense_definition(causal: bool):
    """Outputs and gradients (q, k, v and the raw gates) of the whole layer kernel, fp32."""
    q, k, v = (x.requires_grad_() for x in qkv())
    gates = {name: g.requires_grad_() for name, g in random_gates(NativeSparseAttention, 2, 3, 70, 8).items()}
    mask = some_padding(2, 70)
    ours = build_attention("nsa", **SMALL, chunk_size=16)(
        q, k, v, causal=causal, key_padding_mask=mask, **gates
    )
    dense = reference_branches(q, k, v, **SMALL, causal=causal, key_padding_mask=mask)
    theirs = gate_mix(dense, (gates["g_cmp"], gates["g_slc"], gates["g_swa"]))
    real = ~mask[:, None, :, None]  # padded queries' outputs are anything finite
    torch.testing.assert_close(ours * real, theirs * real, atol=1e-5, rtol=1e-5)
    weight = torch.randn(ours.shape, generator=torch.Generator().manual_seed(9)) * real
    leaves = [q, k, v, *gates.values()]
    for a, b in zip(
        torch.autograd.grad((ours * weight).sum(), leaves),
        torch.autograd.grad((theirs * weight).sum(), leaves),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_selected_attention_backward_passes_gradcheck(causal: bool):
    """The hand-written backward against finite differences (float64), padded keys and -1 slots included."""
    q, k, v = (x.requires_grad_() for x in qkv(1, 2, 13, 3, dtype=torch.float64))
    blocks = torch.randint(-1, 5, (1, 2, 13, 3), generator=torch.Generator().manual_seed(2))
    real = ~some_padding(1, 13)
    positions = torch.arange(13)
    args = (blocks, positions, real, 3, causal, 0.7, 4)
    assert torch.autograd.gradcheck(lambda q, k, v: SelectedAttention.apply(q, k, v, *args), (q, k, v))


def test_selection_ranks_blocks_past_the_forced_ones():
    """Each query keeps the first block, its own and the previous one, then the best-scored complete
    blocks; a block not yet complete (beyond the own one) is never chosen."""
    q, k, _ = qkv(1, 1, 40, 8)
    L, n = 4, 5
    kc, present = block_summaries(k, L)
    positions = torch.arange(40)
    visible = compressed_visible(positions, kc.shape[2], L, present, causal=True)
    chosen = select_blocks(q @ kc.transpose(-2, -1), visible, forced_blocks(positions, kc.shape[2], L), n)
    for t in range(40):
        picked = {int(c) for c in chosen[0, 0, t] if c >= 0}
        own = t // L
        forced = {0, own, own - 1} - {-1}
        complete = [c for c in range(own + 1) if (c + 1) * L - 1 <= t]
        scores = {c: float(q[0, 0, t] @ kc[0, 0, c]) for c in complete if c not in forced}
        best = sorted(scores, key=scores.get, reverse=True)[: n - len(forced)]
        assert picked == forced | set(best), t
    assert (chosen[0, 0, 39] >= 0).all() and len(set(chosen[0, 0, 39].tolist())) == n


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_decoding_equals_the_parallel_pass(block_size: int):
    """Step by step (blocks completing, summaries cached) = forward(causal=True), at N past several blocks."""
    q, k, v = qkv(2, 2, 30, 8)
    gates = random_gates(NativeSparseAttention, 2, 2, 30, 8)
    attention = build_attention("nsa", block_size=block_size, selected_blocks=3 + block_size % 2, window=5)
    state = attention.init_state(2, 2, 8, device=q.device, dtype=q.dtype)
    outs = []
    for t in range(30):
        one = {name: g[:, :, t : t + 1] for name, g in gates.items()}
        out, state = attention.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state, **one)
        outs.append(out)
    parallel = attention(q, k, v, causal=True, **gates)
    torch.testing.assert_close(torch.cat(outs, 2), parallel, atol=1e-5, rtol=1e-5)
    assert state["kc"].shape[2] == 30 // block_size  # one summary per complete block


def test_value_dim_may_differ():
    q, k, _ = qkv()
    v = torch.randn(2, 3, 70, 5, generator=torch.Generator().manual_seed(3))
    ours = build_attention("nsa", **SMALL, chunk_size=16).branches(q, k, v, causal=True)
    theirs = reference_branches(q, k, v, **SMALL, causal=True)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_half_precision_decoding_keeps_its_dtype_and_follows_the_parallel_pass():
    """A bf16 KV cache (block means kept in fp32, as the parallel pass computes them)."""
    q, k, v = qkv(1, 2, 24, 8, dtype=torch.bfloat16)
    gates = {name: g.bfloat16() for name, g in random_gates(NativeSparseAttention, 1, 2, 24, 8).items()}
    attention = build_attention("nsa", block_size=4, selected_blocks=4, window=5)
    state = attention.init_state(1, 2, 8, device=q.device, dtype=torch.bfloat16)
    outs = []
    for t in range(24):
        one = {name: g[:, :, t : t + 1] for name, g in gates.items()}
        out, state = attention.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state, **one)
        outs.append(out)
    assert outs[-1].dtype == torch.bfloat16 and state["k"].dtype == torch.bfloat16
    assert state["kc"].dtype == torch.float32
    parallel = attention(q, k, v, causal=True, **gates)
    torch.testing.assert_close(torch.cat(outs, 2).float(), parallel.float(), atol=0.02, rtol=0)


def test_long_sequence_never_holds_n_squared():
    """At 4K the forward + backward peaks far below one (N, N) score matrix per head."""
    N, D = 4096, 16
    q, k, v = (x.requires_grad_() for x in qkv(1, 1, N, D))
    gates = random_gates(NativeSparseAttention, 1, 1, N, D)
    attention = build_attention("nsa")

    def run():
        attention(q, k, v, causal=True, **gates).sum().backward()

    peak_mib, _ = peak_memory(run, torch.device("cpu"))
    assert peak_mib * 2**20 < N * N * 4 / 4, peak_mib  # a quarter of one fp32 (N, N) matrix


class SmallBlocks(NativeSparseAttention):
    """`nsa` with blocks of 2 and one chosen block beyond the forced three: at the suite's N=12 the
    compressed branch, the top-n choice and several query chunks are all exercised."""

    def __init__(
        self,
        *,
        block_size: Annotated[int, Range(ge=1)] = 2,
        selected_blocks: Annotated[int, Range(ge=3)] = 4,
        window: Annotated[int, Range(ge=1)] = 3,
        chunk_size: Annotated[int, Range(ge=1)] = 5,
    ):
        super().__init__(
            block_size=block_size, selected_blocks=selected_blocks, window=window, chunk_size=chunk_size
        )


@pytest.fixture
def small_blocks():
    registry.available_attentions()
    saved = dict(registry._registry)
    registry._register("nsa_small_blocks", SmallBlocks, "module tests")
    yield "nsa_small_blocks"
    registry._registry.clear()
    registry._registry.update(saved)


@pytest.mark.parametrize("point", list(CHECKS))
def test_conformance_with_small_blocks(small_blocks: str, point: str):
    run_check(small_blocks, point)


def test_bad_hyperparameters_are_one_line_errors():
    from attnlab.errors import ConfigError

    for params, fragment in (
        ({"block_size": 0}, "attention.block_size=0 must be >= 1"),
        ({"selected_blocks": 2}, "attention.selected_blocks=2 must be >= 3"),
        ({"window": 0}, "attention.window=0 must be >= 1"),
        ({"chunk_size": 0}, "attention.chunk_size=0 must be >= 1"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            build_attention("nsa", **params)
    assert math.isfinite(build_attention("nsa").block_size)
