"""The C passes that stay (attention/cpu/: gla's log decay gate, the delta rule's passes and chunk loops,
Based's chunk loops, the sliding window inside based): each equals its PyTorch version, outputs and
gradients, and a missing or failing compiler, or ATTNLAB_FUSED_CPU=0, leaves the PyTorch versions in
place. (The C passes deleted as not paying, docs/c-passes.md, took their tests with them: there is no C
left to compare.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import cpu
from attnlab.attention.cpu import build
from attnlab.attention.cpu import kernels as c_loops
from attnlab.attention.ops import passes
from attnlab.attention.ops.based import chunk_based
from attnlab.attention.ops.delta_rule import chunk as delta_rule
from attnlab.attention.registry import build_attention
from attnlab.attention.variants import based as based_variant
from attnlab.attention.variants.gla import LogDecayGate

requires_c = pytest.mark.skipif(build.library() is None, reason="no C compiler: only the PyTorch passes run")
G, C, D, DV = 6, 8, 5, 7


@pytest.fixture
def torch_passes(monkeypatch):
    """A context in which every pass takes its PyTorch version."""

    def use_torch():
        monkeypatch.setattr(cpu, "kernels_for", lambda *tensors: None)

    return use_torch


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_a_call_autograd_records_keeps_its_gradient():
    x = randn(4, 6).requires_grad_()
    phi = passes.elu_plus_one(x)  # outside the kernels' autograd.Functions: PyTorch's version
    (grad,) = torch.autograd.grad(phi.sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad((F.elu(x) + 1).sum(), x)[0])


def test_a_missing_compiler_warns_once_and_keeps_the_pytorch_passes(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-attnlab")
    build.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C compiler found.*ATTNLAB_FUSED_CPU=0"):
            assert build.library() is None
        x = randn(3, 4) * 6
        reference = F.logsigmoid(x).div(16.0).clamp(min=-4.0)  # the PyTorch form
        torch.testing.assert_close(LogDecayGate.apply(x, 16.0, -4.0), reference)
    finally:
        build.library.cache_clear()


@requires_c
def test_a_failing_build_warns_with_the_compiler_output(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(build, "FLAGS", (*build.FLAGS, "-fno-such-flag-attnlab"))  # every flag set fails
    build.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no-such-flag-attnlab"):
            assert build.library() is None
        assert not list((tmp_path / "attnlab").glob("*.so"))  # nothing half-written left behind
    finally:
        build.library.cache_clear()


def test_attnlab_fused_cpu_0_turns_the_c_passes_off(monkeypatch):
    monkeypatch.setenv("ATTNLAB_FUSED_CPU", "0")
    build.library.cache_clear()
    try:
        assert build.library() is None
    finally:
        build.library.cache_clear()


@requires_c
def test_without_openmp_the_passes_are_built_for_one_thread(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(build, "PARALLEL", ("-fno-such-openmp-attnlab",))  # as with Apple clang
    build.library.cache_clear()
    try:
        assert build.library() is not None
        x = randn(5, 8) * 6
        reference = F.logsigmoid(x).div(16.0).clamp(min=-4.0)
        torch.testing.assert_close(LogDecayGate.apply(x, 16.0, -4.0), reference, rtol=3e-7, atol=1e-30)
    finally:
        build.library.cache_clear()


@requires_c
@pytest.mark.parametrize(("temperature", "floor"), [(16.0, -4.0), (1.0, -5.0), (16.0, -0.05)])
def test_glas_log_decay_gate_is_the_same_with_either_passes(torch_passes, temperature, floor):
    """gla's LogDecayGate: values within 2 ulp of logsigmoid, the clamp and its zero gradient in the same
    places, NaN kept; with the floor at -0.05 most of the inputs are clamped."""
    x = torch.cat([randn(4000, seed=15) * 6, torch.tensor([-100.0, -1e-8, 0.0, 1e-8, 40.0, float("nan")])])
    weight = randn(x.numel(), seed=16)

    def run():
        leaf = x.clone().requires_grad_()
        y = LogDecayGate.apply(leaf, temperature, floor)
        return y.detach(), torch.autograd.grad((y * weight).nansum(), leaf)[0]

    fused = run()
    torch_passes()
    for a, b in zip(fused, run(), strict=True):
        torch.testing.assert_close(a, b, rtol=3e-7, atol=1e-30, equal_nan=True)
    assert (fused[1] == 0).sum() > 0 and ((fused[1] == 0) == (run()[1] == 0)).all()


@requires_c
@pytest.mark.parametrize("gated", [False, True])
def test_the_delta_rules_score_passes_are_the_same_with_either_passes(torch_passes, gated):
    """ops/delta_rule: the in-chunk decay matrix (flushed, masked), the flush of small entries, and the
    backward through the in-chunk scores (gradients of Q Kᵀ and, symmetrised, K Kᵀ; d loss / d β and,
    gated, d loss / d b), gated or with the causal mask alone."""
    g = -torch.rand(3, 4, 16, generator=torch.Generator().manual_seed(17)) * 12  # steep enough to flush
    b = g.cumsum(-1)
    beta = torch.rand(3, 4, 16, generator=torch.Generator().manual_seed(23))
    x = randn(3, 4, 16, 16, seed=18) * torch.logspace(-30, 0, 16)  # entries down to ~1e-30
    dM, dP, M, P_raw = (randn(3, 4, 16, 16, seed=s) for s in range(19, 23))
    dP = dP.tril(-1)  # as ChunkDeltaRule makes it

    def run():
        gamma = delta_rule.decay_matrix(b)
        mask = gamma if gated else torch.ones(16, 16).tril()
        d = dM.clone(), dP.clone()
        d_beta, db = delta_rule.delta_scores_backward_(
            *d, M * mask, P_raw * mask, gamma if gated else None, beta
        )
        return gamma, delta_rule.flush_small_(x.clone()), *d, d_beta, *([db] if gated else [])

    fused = run()
    assert (fused[0] == 0).sum() > 3 * 4 * (16 * 15 // 2) + 100  # the upper triangle, and flushed decays
    assert torch.equal(fused[3], fused[3].mT) and not fused[3].diagonal(dim1=-2, dim2=-1).any()  # G + Gᵀ
    torch_passes()
    for a, b_ in zip(fused, run(), strict=True):
        torch.testing.assert_close(a, b_, rtol=3e-6, atol=1e-6)


@requires_c
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize(("chunk", "d", "dv"), [(7, 67, 70), (32, 64, 64), (5, 16, 24)])
def test_the_delta_rules_chunk_loops_are_the_same_with_either_passes(torch_passes, gated, chunk, d, dv):
    """ops/delta_rule's chunk-to-chunk loops in C (4 x 64 tiles, and the rows and columns left over)
    against the PyTorch loop: outputs, final state and every gradient, with an initial state."""
    B_, H_, N = 2, 2, 3 * chunk + 2  # a padded last chunk
    gen = torch.Generator().manual_seed(23)
    q, k, v = (torch.randn(B_, H_, N, dim, generator=gen) for dim in (d, d, dv))
    k = F.normalize(k, dim=-1)
    beta = torch.rand(B_, H_, N, generator=gen)
    g = -torch.rand(B_, H_, N, generator=gen) if gated else None
    S0 = torch.randn(B_, H_, d, dv, generator=gen) * 0.1
    weights = randn(B_, H_, N, dv, seed=24), randn(B_, H_, d, dv, seed=25)

    def run():
        leaves = [t.clone().requires_grad_() for t in (q, k, v, beta, S0) + ((g,) if gated else ())]
        gate = leaves[5] if gated else None
        out, S = delta_rule.chunk_delta_rule(
            *leaves[:4], gate, scale=d**-0.5, chunk_size=chunk, initial_state=leaves[4]
        )
        loss = (out * weights[0]).sum() + (S * weights[1]).sum()
        return [out.detach(), S.detach(), *torch.autograd.grad(loss, leaves)]

    fused = run()
    torch_passes()
    for a, b in zip(fused, run(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)


@requires_c
def test_the_flush_takes_a_batch_of_column_major_matrices_as_they_are(torch_passes):
    """torch.linalg.solve_triangular returns column-major matrices: flushed in C as they lie."""
    x = (randn(3, 16, 16, seed=26) * torch.logspace(-30, 0, 16)).mT  # not contiguous, its .mT is
    fused = delta_rule.flush_small_(x.clone().mT.contiguous().mT)
    torch_passes()
    torch.testing.assert_close(fused, delta_rule.flush_small_(x.clone()), rtol=0, atol=0)
    assert (fused == 0).sum() > 0 and not fused.is_contiguous()


def spy(monkeypatch, owner, name: str) -> list[str]:
    """Record each call of owner.name (then make it)."""
    calls, original = [], getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **kw: calls.append(name) or original(*a, **kw))
    return calls


@requires_c
@pytest.mark.parametrize(("chunk", "d", "dv"), [(7, 5, 70), (64, 16, 64), (16, 16, 32)])
def test_baseds_chunk_loops_are_the_same_with_either_passes(torch_passes, monkeypatch, chunk, d, dv):
    """ops/based's chunk loops in C (features formed in cache; 16 x 16 register transposes where 16
    divides the sizes, element by element elsewhere) against the batched PyTorch form: the output and
    every gradient, with padded keys and a padded last chunk."""
    B_, H_, N = 2, 2, 3 * chunk + 2
    gen = torch.Generator().manual_seed(30)
    q, k, v = (torch.randn(B_, H_, N, dim, generator=gen) for dim in (d, d, dv))
    padding = torch.zeros(B_, N, dtype=torch.bool)
    padding[1, -4:] = True
    weights = randn(B_, H_, N, dv, seed=31)

    def run():
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = chunk_based(*leaves, scale=d**-0.5, chunk_size=chunk, key_padding_mask=padding)
        return [out.detach(), *torch.autograd.grad((out * weights).sum(), leaves)]

    calls = [spy(monkeypatch, c_loops, name) for name in ("based_forward_loop", "based_backward_loop")]
    fused = run()
    assert [len(c) for c in calls] == [1, 1]  # the C loops ran
    torch_passes()
    for a, b in zip(fused, run(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)
    assert [len(c) for c in calls] == [1, 1]  # and the PyTorch form the second time


@requires_c
@pytest.mark.parametrize(
    ("B_", "N", "window", "chunk", "one_function"),
    [
        (2, 200, 64, 64, True),
        (2, 37, 9, 64, True),
        (1, 12, 64, 64, True),
        (2, 150, 16, 32, True),
        (2, 90, 20, 16, False),
    ],
)
def test_baseds_kernel_in_one_function_is_the_same_as_its_two_parts(torch_passes, monkeypatch, B_, N, window,
                                                                     chunk, one_function):  # fmt: skip
    """based's causal kernel on float32 CPU runs as one Function (attention/cpu/functions.py FusedBased: the
    Taylor part's C loop and the window's C kernel writing into the same gradients) where the window's
    blocks and the chunks nest (window 20: blocks of 24 against chunks of 16, the two Functions): its
    output and the gradients of q, k, v and both feature projections equal those of the two parts in
    PyTorch, with padded keys and lengths that are no multiple of either block (one row: the masks of
    the heads are then views of one row, copied before the C loop reads them)."""
    H_, D = 3, 24
    torch.manual_seed(32)
    kernel = build_attention(
        "based", head_dim=D, heads=H_, max_len=N, feature_dim=5, window=window, chunk_size=chunk
    )
    gen = torch.Generator().manual_seed(33)
    q, k, v = (torch.randn(B_, H_, N, D, generator=gen) for _ in range(3))
    padding = torch.zeros(B_, N, dtype=torch.bool)
    padding[-1, -5:] = True
    weights = randn(B_, H_, N, D, seed=34)
    projections = [kernel.q_feature.weight, kernel.k_feature.weight]

    def run():
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = kernel(*leaves, causal=True, key_padding_mask=padding)
        return [out.detach(), *torch.autograd.grad((out * weights).sum(), leaves + projections)]

    calls = spy(monkeypatch, based_variant.FusedBased, "apply")
    fused = run()
    assert len(calls) == int(one_function)
    torch_passes()
    for a, b in zip(fused, run(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)
    assert len(calls) == int(one_function)
