"""Held to outside references: flash-linear-attention's pure-PyTorch naive implementations.

fla's package import needs Triton, so each `fla/ops/<name>/naive.py` is loaded directly by path from
the installed distribution (pinned, test-only: `make test-fla-reference`, or
`pip install --no-deps fla-core==0.5.2 einops==0.8.2`); without it these tests skip, saying so.
Outputs AND gradients (w.r.t. q, k, v and the raw gates) must agree in fp32 within 1e-5 (the 2026
variants of issue 31: 1e-4). fla's nsa/naive.py imports a Triton mean pooling: it loads with a
plain-PyTorch stand-in written here (`mean_pooling`, below).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import build_attention
from attnlab.attention.ops import chunk_gla
from attnlab.attention.variants.deltanet import normalise_qk
from attnlab.attention.variants.nsa import (
    NativeSparseAttention,
    SelectedAttention,
    block_summaries,
    compressed_attention,
    compressed_visible,
    forced_blocks,
    select_blocks,
)

FLA_VERSION = "0.5.2"
INSTALL = f"pip install --no-deps fla-core=={FLA_VERSION} einops==0.8.2 (or: make test-fla-reference)"
B, H, N, D = 2, 3, 70, 16  # several chunks of 64... and a ragged one; 16-wide sub-blocks
TOL = {"atol": 1e-5, "rtol": 1e-5}
# The 2026 variants (issue 31) are held to 1e-4: their step sizes reach ~8, so outputs reach ~10 and
# the two summation orders (chunked here, one step at a time there) differ by fp32 round-off of 1e-4.
TOL_2026 = {"atol": 1e-4, "rtol": 1e-4}

pytestmark = pytest.mark.usefixtures("one_thread")


def fla_naive(op: str, stubs: dict[str, types.ModuleType] | None = None):
    """fla/ops/<op>/naive.py of the installed fla-core, loaded by path (no Triton import); `stubs`
    stand in for the fla modules it imports that need Triton, while it loads."""
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"flash-linear-attention (fla-core) is not installed: {INSTALL}")
    if importlib.util.find_spec("einops") is None:
        pytest.skip(f"einops (imported by fla's naive.py files) is not installed: {INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / "ops" / op / "naive.py"
    module_spec = importlib.util.spec_from_file_location(f"fla_naive_{op}", path)
    module = importlib.util.module_from_spec(module_spec)
    with mock.patch.dict(sys.modules, stubs or {}):
        module_spec.loader.exec_module(module)
    return module


def leaves(*shapes, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen).requires_grad_() for shape in shapes]


def assert_same(ours: torch.Tensor, theirs: torch.Tensor, inputs: list[torch.Tensor], tol=TOL):
    """Equal outputs, and equal gradients of the same random projection of them."""
    torch.testing.assert_close(ours, theirs, **tol)
    weight = torch.randn(ours.shape, generator=torch.Generator().manual_seed(99))
    ours_grads = torch.autograd.grad((ours * weight).sum(), inputs, retain_graph=True)
    theirs_grads = torch.autograd.grad((theirs * weight).sum(), inputs)
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, b, **tol)


def btHd(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, ·) <-> (B, N, H, ·): fla's recurrent ops take time before heads."""
    return x.transpose(1, 2)


def test_retention_equals_fla_naive_retention():
    naive = fla_naive("retention").naive_retention
    q, k, v = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D))
    ours = build_attention("retention", heads=H, output_norm=False)(q, k, v, causal=True)
    assert_same(ours, naive(q, k, v), [q, k, v])


def test_mamba2_equals_fla_naive_recurrent_simple_gla():
    """SSD is simple GLA with the step size scaling the keys: Δ = softplus(dt + dt_bias),
    g = -exp(A_log) Δ, S_t = e^{g_t} S_{t-1} + (Δ_t k_t) v_tᵀ."""
    naive = fla_naive("simple_gla").naive_recurrent_simple_gla
    q, k, v, raw = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N))
    torch.manual_seed(0)  # A_log and dt_bias are drawn at build time
    attention = build_attention("mamba2", heads=H, skip=False, output_norm=False)
    ours = attention(q, k, v, causal=True, dt=raw * 4)  # wide gates: steps from ~0 to ~8
    dt = F.softplus(raw * 4 + attention.dt_bias[:, None])  # (B, H, N)
    g = -attention.A_log.exp()[:, None] * dt
    theirs = btHd(naive(btHd(q), btHd(k * dt[..., None]), btHd(v), btHd(g))[0])
    assert_same(ours, theirs, [q, k, v, raw], TOL_2026)


def test_fox_equals_fla_naive_forgetting_attn():
    """Causal forgetting attention: softmax(q·k/√d + c_i - c_j), c the cumulative log forget gate."""
    naive = fla_naive("forgetting_attn").naive_forgetting_attn
    q, k, v, raw = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N))
    attention = build_attention("fox", heads=H, block_size=32)  # several query blocks and a ragged one
    ours = attention(q, k, v, causal=True, f=raw * 4)
    log_f = F.logsigmoid(raw * 4 + attention.f_bias[:, None])  # (B, H, N)
    theirs = btHd(naive(btHd(q), btHd(k), btHd(v), btHd(log_f)))
    assert_same(ours, theirs, [q, k, v, raw], TOL_2026)


def test_gated_deltaproduct_equals_fla_naive_recurrent_gated_delta_product():
    """Two delta-rule steps per token (k, v, β then k2, v2, β2), the decay once per token."""
    naive = fla_naive("gated_delta_product").naive_recurrent_gated_delta_product
    q, k, v, k2, v2, raw_g, raw_b, raw_b2 = leaves(*[(B, H, N, D)] * 5, (B, H, N), (B, H, N), (B, H, N))
    torch.manual_seed(0)  # A_log and dt_bias are drawn at build time
    attention = build_attention("gated_deltaproduct", heads=H, output_norm=False)
    ours = attention(q, k, v, causal=True, g=raw_g, beta=raw_b, beta2=raw_b2, k2=k2, v2=v2)
    unit = lambda x: F.normalize(F.silu(x), dim=-1, eps=1e-6)  # noqa: E731  (SiLU, then L2)
    g = -attention.A_log.exp()[:, None] * F.softplus(raw_g + attention.dt_bias[:, None])  # (B, H, N)
    steps = lambda a, b: torch.stack([a, b], dim=3).flatten(2, 3)  # noqa: E731  (B, H, 2N, ·)
    theirs = naive(
        btHd(unit(q) * D**-0.5),  # fla's naive reads q unscaled
        btHd(steps(unit(k), unit(k2))),
        btHd(steps(v, v2)),
        btHd(g),
        btHd(steps(torch.sigmoid(raw_b), torch.sigmoid(raw_b2))),
        scale=None, cu_seqlens=None, num_householder=2,
    )[0]  # fmt: skip
    assert_same(ours, btHd(theirs), [q, k, v, k2, v2, raw_g, raw_b, raw_b2], TOL_2026)


def test_kda_equals_fla_naive_recurrent_kda():
    """The delta rule with a decay per key dimension: log α = -exp(A_log) softplus(g + dt_bias)."""
    naive = fla_naive("kda").naive_recurrent_kda
    q, k, v, raw_g, raw_b = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N))
    torch.manual_seed(0)  # A_log and dt_bias are drawn at build time
    attention = build_attention("kda", heads=H, head_dim=D, output_norm=False)
    ours = attention(q, k, v, causal=True, g=raw_g, beta=raw_b)
    unit = lambda x: F.normalize(F.silu(x), dim=-1, eps=1e-6)  # noqa: E731  (SiLU, then L2)
    g = -attention.A_log.exp()[:, None, None] * F.softplus(raw_g + attention.dt_bias[:, None, :])
    theirs = naive(btHd(unit(q)), btHd(unit(k)), btHd(v), btHd(g), btHd(torch.sigmoid(raw_b)))[0]
    assert_same(ours, btHd(theirs), [q, k, v, raw_g, raw_b], TOL_2026)


def test_rwkv7_equals_fla_dplr_recurrence():
    """RWKV-7 as fla's generalised delta rule: α = -κ̂, β = κ̂ ⊙ a, log decay -e^-0.5 σ(w)."""
    naive = fla_naive("generalized_delta_rule/dplr").dplr_recurrence
    q, k, v, raw_w, raw_a = leaves(*[(B, H, N, D)] * 5)
    attention = build_attention("rwkv7", heads=H, head_dim=D, output_norm=False)
    with torch.no_grad():  # away from their initial values, so both learned mixes are exercised
        attention.k_k.uniform_(0.5, 1.0)
        attention.k_a.uniform_(0.5, 1.5)
    ours = attention(q, k, v, causal=True, w=raw_w, a=raw_a)
    a = torch.sigmoid(raw_a)
    removal = F.normalize(k * attention.k_k[:, None, :], dim=-1, eps=1e-6)
    write = k * (1 + (a - 1) * attention.k_a[:, None, :])
    g = -0.6065306597126334 * torch.sigmoid(raw_w)
    theirs, _ = naive(q, write, v, -removal, removal * a, g)  # fla's dplr takes (B, H, N, D) and scales q
    assert_same(ours, theirs, [q, k, v, raw_w, raw_a], TOL_2026)


def test_gla_equals_fla_naive_recurrent_gla():
    naive = fla_naive("gla").naive_recurrent_gla
    q, k, v, raw = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N, D))
    attention = build_attention("gla", output_norm=False)
    ours = attention(q, k, v, causal=True, g=raw * 8)  # wide gates: the clamp is reached too
    gk = (F.logsigmoid(raw * 8) / attention.gate_temperature).clamp(min=attention.min_log_decay)
    theirs = btHd(naive(btHd(q), btHd(k), btHd(v), btHd(gk))[0])
    assert_same(ours, theirs, [q, k, v, raw])


def test_scalar_gated_chunk_equals_fla_naive_recurrent_simple_gla():
    naive = fla_naive("simple_gla").naive_recurrent_simple_gla
    q, k, v, raw = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N))
    g = F.logsigmoid(raw)  # (B, H, N)
    ours = chunk_gla(q, k, v, g, scale=D**-0.5, chunk_size=16)[0]
    theirs = btHd(naive(btHd(q), btHd(k), btHd(v), g.transpose(1, 2))[0])
    assert_same(ours, theirs, [q, k, v, raw])


def test_deltanet_equals_fla_delta_rule_recurrence():
    naive = fla_naive("delta_rule").delta_rule_recurrence
    q, k, v, raw = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N))
    ours = build_attention("deltanet", output_norm=False)(q, k, v, causal=True, beta=raw)
    qn, kn = normalise_qk(q, k, True, True)
    theirs = naive(qn, kn, v, torch.sigmoid(raw))[0]
    assert_same(ours, theirs, [q, k, v, raw])


def test_gated_deltanet_equals_fla_naive_recurrent_gated_delta_rule():
    naive = fla_naive("gated_delta_rule").naive_recurrent_gated_delta_rule
    q, k, v, raw_g, raw_beta = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N), (B, H, N))
    torch.manual_seed(0)
    attention = build_attention("gated_deltanet", heads=H, output_norm=False)
    ours = attention(q, k, v, causal=True, g=raw_g, beta=raw_beta)
    qn, kn = normalise_qk(q, k, True, True)
    g = -attention.A_log.exp()[:, None] * F.softplus(raw_g + attention.dt_bias[:, None])  # (B, H, N)
    theirs = btHd(
        naive(btHd(qn), btHd(kn), btHd(v), torch.sigmoid(raw_beta).transpose(1, 2), g.transpose(1, 2))[0]
    )
    assert_same(ours, theirs, [q, k, v, raw_g, raw_beta])


def test_based_linear_part_equals_fla_naive_parallel_based():
    naive = fla_naive("based").naive_parallel_based
    q, k, v = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D))
    torch.manual_seed(0)
    attention = build_attention("based", head_dim=D, feature_dim=8, window=0)
    ours = attention(q, k, v, causal=True)
    fq, fk = attention.features(q, k)  # the learned projections to feature_dim
    assert_same(ours, naive(fq, fk, v), [q, k, v])


# ---- nsa: fla/ops/nsa/naive.py --------------------------------------------------------------------
def mean_pooling(x: torch.Tensor, chunk_size: int, cu_seqlens=None) -> torch.Tensor:
    """What fla's Triton `mean_pooling` computes, in plain PyTorch (its naive_nsa imports it; fla-core
    has no PyTorch version): x (B, T, H, D) -> the mean of each block of chunk_size positions,
    the last block over its min(chunk_size, T - c·chunk_size) positions: (B, ceil(T/chunk_size), H, D)."""
    assert cu_seqlens is None
    blocks = [x[:, s : s + chunk_size].mean(1) for s in range(0, x.shape[1], chunk_size)]
    return torch.stack(blocks, 1)


def fla_nsa():
    """fla's naive NSA, its Triton-backed imports replaced by `mean_pooling` above (flash_attn is optional
    there: its sliding window needs it, so fla's window is never run here)."""

    def not_varlen(*args, **kwargs):
        raise NotImplementedError("variable-length inputs are not compared")

    utils = types.ModuleType("fla.ops.utils")
    utils.prepare_chunk_offsets = not_varlen
    pooling = types.ModuleType("fla.ops.utils.pooling")
    pooling.mean_pooling = mean_pooling
    with pytest.warns(ImportWarning, match="Flash Attention"):
        return fla_naive("nsa", {"fla.ops.utils": utils, "fla.ops.utils.pooling": pooling})


NSA_BLOCK, NSA_SELECTED = 8, 5  # 70 positions: 9 blocks, the last one ragged


def our_selection(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Our causal top-n block indices (B, H, N, n), -1 = none."""
    kc, present = block_summaries(k, NSA_BLOCK)
    positions = torch.arange(q.shape[2])
    visible = compressed_visible(positions, kc.shape[2], NSA_BLOCK, present, causal=True)
    forced = forced_blocks(positions, kc.shape[2], NSA_BLOCK)
    return select_blocks(q @ kc.transpose(-2, -1), visible, forced, NSA_SELECTED)


def as_sets(blocks: torch.Tensor) -> list[set[int]]:
    return [{int(c) for c in row if c >= 0} for row in blocks.reshape(-1, blocks.shape[-1])]


def test_nsa_block_means_equal_fla_mean_pooling():
    (k,) = leaves((B, H, N, D))
    torch.testing.assert_close(block_summaries(k, NSA_BLOCK)[0], btHd(mean_pooling(btHd(k), NSA_BLOCK)))


def test_nsa_selection_equals_fla_naive_nsa_topk():
    """The same blocks per query (as sets: the order of the slots is no part of either), one query
    head per key head (fla ranks by the group's mean probability, here a group of one)."""
    naive = fla_nsa().naive_nsa_topk
    q, k = leaves((B, H, N, D), (B, H, N, D))
    theirs = naive(btHd(q), mean_pooling(btHd(k), NSA_BLOCK), NSA_SELECTED, NSA_BLOCK, scale=D**-0.5)
    assert as_sets(our_selection(q, k)) == as_sets(btHd(theirs))


def test_nsa_compressed_branch_equals_fla_naive_nsa_compression():
    naive = fla_nsa().naive_nsa_compression
    q, k, v = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D))
    kc, present = block_summaries(k, NSA_BLOCK)
    vc, _ = block_summaries(v, NSA_BLOCK)
    visible = compressed_visible(torch.arange(N), kc.shape[2], NSA_BLOCK, present, causal=True)
    ours = compressed_attention(q, kc, vc, visible)
    pooled = [mean_pooling(btHd(x), NSA_BLOCK) for x in (k, v)]
    theirs = btHd(naive(btHd(q), *pooled, NSA_BLOCK, scale=D**-0.5)[0])
    assert_same(ours, theirs, [q, k, v], TOL_2026)


def test_nsa_selected_branch_equals_fla_naive_nsa_selection():
    """Given the same block indices (ours, equal to fla's by the test above)."""
    naive = fla_nsa().naive_nsa_selection
    q, k, v = leaves((B, H, N, D), (B, H, N, D), (B, H, N, D))
    blocks = our_selection(q.detach(), k.detach())
    ours = SelectedAttention.apply(q, k, v, blocks, torch.arange(N), None, NSA_BLOCK, True, D**-0.5, 16)
    theirs = btHd(naive(btHd(q), btHd(k), btHd(v), btHd(blocks), NSA_BLOCK))
    assert_same(ours, theirs, [q, k, v], TOL_2026)


def test_nsa_equals_fla_naive_nsa():
    """The whole of fla's naive_nsa — block means, compressed branch, its own top-n selection,
    selected branch and the sigmoid-gated sum — against our kernel's compressed and selected branches
    gated the same way. fla's NSA needs groups of >= 16 query heads per key head and ranks blocks by
    the group's mean probability: 16 equal query heads here (each head's ranking is then the group's),
    each with its own gates. Sliding window left out on both sides (fla's runs only through flash_attn)."""
    naive = fla_nsa().naive_nsa
    G = 16
    q, k, v, raw_cmp, raw_slc = leaves((B, 1, N, D), (B, 1, N, D), (B, 1, N, D), (B, G, N), (B, G, N))
    attention = build_attention("nsa", block_size=NSA_BLOCK, selected_blocks=NSA_SELECTED, chunk_size=16)
    compressed, selected, _ = attention.branches(*(x.expand(B, G, N, D) for x in (q, k, v)), causal=True)
    ours = torch.sigmoid(raw_cmp)[..., None] * compressed + torch.sigmoid(raw_slc)[..., None] * selected
    theirs = naive(
        btHd(q.expand(B, G, N, D)), btHd(k), btHd(v),
        g_cmp=btHd(torch.sigmoid(raw_cmp)), g_slc=btHd(torch.sigmoid(raw_slc)),
        block_counts=NSA_SELECTED, block_size=NSA_BLOCK, window_size=0,
    )  # fmt: skip
    assert_same(ours, btHd(theirs), [q, k, v, raw_cmp, raw_slc], TOL_2026)
    assert sorted(NativeSparseAttention.gates) == ["g_cmp", "g_slc", "g_swa"]  # fla's three gates
