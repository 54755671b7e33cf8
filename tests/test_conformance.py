"""The conformance suite: every registered variant, plugins included, is held to the contract.

Parametrised over `attnlab.available_attentions()` at collection time, so a new variant (built-in
or installed plugin) is tested for free. Per variant:

  (a) causality: d out[i] / d (q, k, v)[j > i] == 0, and perturbing the future leaves the past
      unchanged; a variant without the capability must RAISE on causal=True
  (b) key padding: real outputs ignore padded content, fully padded rows are finite, no NaN
  (c) cross attention (Nq != Nk) where declared, else an error
  (d) incremental decoding equals forward(causal=True), beam reordering included
  (e) exactness: full/multihead vs a softmax written here, linear vs its RNN form, performer vs its
      explicit kernel, and every declared `reference_tolerance` vs `full` on smooth inputs
  (f) finite gradients for q, k, v and parameters
  (g) bf16 / fp16 outputs close to fp32 and finite
  (h) cost accounting: every matrix product or attention kernel it runs, forward and backward, is
      one the FLOP count (attnlab/flops.py) counts, so the bench and reports never undercount it

Tolerances: fp32 comparisons of the same maths computed two ways use atol 1e-5; half precision
vs fp32 uses atol 0.05 (bf16, 8-bit mantissa) and 0.01 (fp16) on unit-variance inputs.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import MAX_LEN, B, D, H, N, qkv, randn
from torch.utils._python_dispatch import TorchDispatchMode

from attnlab import available_attentions, build_attention, get_attention_class
from attnlab.attention.base import REFERENCE_FIXTURE, Attention, describe
from attnlab.attention.gates import with_example_gates
from attnlab.errors import CapabilityError
from attnlab.flops import counted

VARIANTS = available_attentions()

ATOL = 1e-5
HALF_ATOL = {torch.bfloat16: 0.05, torch.float16: 0.01}


def build(name: str, **params) -> Attention:
    torch.manual_seed(0)  # variants with learned parameters (lowrank) start the same every time
    attention = build_attention(name, head_dim=D, heads=H, max_len=MAX_LEN, **params)
    return with_example_gates(attention.eval())  # gated variants get gates derived from the keys


def heads_of(name: str) -> int:
    return get_attention_class(name).fixed_heads or H


def capable(name: str, capability: str) -> bool:
    return getattr(get_attention_class(name).capabilities, capability)


def inputs(name: str, nq: int = N, nk: int | None = None, *, seed: int = 0, grad: bool = False, **kw):
    q, k, v = qkv(B, heads_of(name), nq, nk, seed=seed, **kw)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def padding_mask(nk: int, lengths: list[int]) -> torch.Tensor:
    """(len(lengths), Nk) bool, True at padded (right-padded) positions."""
    return torch.arange(nk)[None, :] >= torch.tensor(lengths)[:, None]


parametrise = pytest.mark.parametrize("name", VARIANTS)


# ---- the declaration ----------------------------------------------------------------------------------
@parametrise
def test_declaration_is_class_level(name: str):
    cls = get_attention_class(name)
    assert issubclass(cls, Attention) and cls.name == name
    assert cls.complexity.startswith("O(") and cls.complexity != "?"
    assert cls.fixed_heads is None or cls.fixed_heads >= 1
    assert cls.reference_tolerance is None or cls.reference_tolerance > 0
    assert not cls.exact or cls.reference_tolerance is not None, "an exact variant claims a tolerance"
    assert describe(cls)["capabilities"] == {c: capable(name, c) for c in describe(cls)["capabilities"]}
    repr(build(name))  # extra_repr lists the hyperparameters


@parametrise
def test_self_attention_shape_dtype_finite(name: str):
    q, k, v = inputs(name)
    out = build(name)(q, k, v)
    assert out.shape == v.shape and out.dtype == v.dtype
    assert torch.isfinite(out).all()


@parametrise
def test_batch_rows_are_independent(name: str):
    """A batch row's output never depends on the other rows (e.g. through a shared stabiliser)."""
    q, k, v = inputs(name)
    attention = build(name)
    together = attention(q, k, v)
    alone = attention(q[1:], k[1:], v[1:])
    torch.testing.assert_close(together[1:], alone, atol=ATOL, rtol=0)


# ---- (a) causality ------------------------------------------------------------------------------------
@parametrise
def test_causal_outputs_do_not_depend_on_the_future_gradients(name: str):
    if not capable(name, "causal"):
        pytest.skip("not causal-capable (test_non_causal_variants_refuse_causal)")
    q, k, v = inputs(name, grad=True)
    out = build(name)(q, k, v, causal=True)  # (B, h, N, D)
    for i in range(N):
        grads = torch.autograd.grad(out[:, :, i].sum(), (q, k, v), retain_graph=True, allow_unused=True)
        for which, grad in zip("qkv", grads):
            if grad is not None:
                assert (grad[:, :, i + 1 :] == 0).all(), f"out[{i}] depends on future {which}"


@parametrise
def test_causal_outputs_do_not_depend_on_the_future_perturbation(name: str):
    if not capable(name, "causal"):
        pytest.skip("not causal-capable")
    q, k, v = inputs(name)
    attention = build(name)
    out = attention(q, k, v, causal=True)
    for t in (0, N // 3, N - 2):  # change everything after position t, including by large values
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for j, x in enumerate((q2, k2, v2)):
            x[:, :, t + 1 :] = randn(*x[:, :, t + 1 :].shape, seed=10 + j, scale=30.0)
        out2 = attention(q2, k2, v2, causal=True)
        torch.testing.assert_close(out2[:, :, : t + 1], out[:, :, : t + 1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", [n for n in ("linear", "performer") if n in VARIANTS])
def test_chunked_causal_prefix_sums_do_not_leak(name: str):
    """Several chunks, future values of 1e6 inside the current chunk: the sums carried across chunks
    must come from the past alone (an exclusive sum taken as inclusive minus the own chunk carries
    the future through round-off)."""
    q, k, v = inputs(name, nq=3 * D)  # linear's chunks are at least head_dim long: 3 chunks
    attention = build(name, chunk_size=4)
    out = attention(q, k, v, causal=True)
    for t in (5, D + 5, 2 * D + 5):  # inside a chunk after the first
        v2 = v.clone()
        v2[:, :, t + 1 :] = 1e6
        torch.testing.assert_close(
            attention(q, k, v2, causal=True)[:, :, : t + 1], out[:, :, : t + 1], atol=ATOL, rtol=0
        )


@parametrise
def test_non_causal_variants_refuse_causal(name: str):
    if capable(name, "causal"):
        pytest.skip("causal-capable")
    q, k, v = inputs(name)
    with pytest.raises(CapabilityError, match=name):
        build(name)(q, k, v, causal=True)


# ---- (b) key padding ----------------------------------------------------------------------------------
@parametrise
@pytest.mark.parametrize("causal", [False, True])
def test_padded_content_never_reaches_real_outputs(name: str, causal: bool):
    if causal and not capable(name, "causal"):
        pytest.skip("not causal-capable")
    lengths = [N, N - 5, 0]  # full, padded, fully padded
    batch, h = len(lengths), heads_of(name)
    mask = padding_mask(N, lengths)  # (3, N)
    q, k, v = qkv(batch, h, N, seed=3)
    attention = build(name)
    if not capable(name, "key_padding_mask"):
        with pytest.raises(CapabilityError, match=name):
            attention(q, k, v, key_padding_mask=mask)
        return
    out = attention(q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.isfinite(out).all(), "NaN/inf (fully padded rows included)"
    padded = mask[:, None, :, None]  # (3, 1, N, 1)
    q2, k2, v2 = (
        torch.where(padded, randn(*x.shape, seed=20 + i, scale=30.0), x) for i, x in enumerate((q, k, v))
    )
    out2 = attention(q2, k2, v2, causal=causal, key_padding_mask=mask)
    real = ~mask[:, None, :, None]  # outputs at real positions must not move
    torch.testing.assert_close(out2 * real, out * real, atol=ATOL, rtol=0)
    assert torch.isfinite(out2).all()


@parametrise
def test_padding_gradients_finite_and_zero_on_padded_keys(name: str):
    if not capable(name, "key_padding_mask"):
        pytest.skip("no key padding")
    lengths = [N, N - 5, 0]
    mask = padding_mask(N, lengths)
    q, k, v = (x.requires_grad_() for x in qkv(len(lengths), heads_of(name), N, seed=4))
    out = build(name)(q, k, v, key_padding_mask=mask)
    real = ~mask[:, None, :, None]
    gq, gk, gv = torch.autograd.grad((out * real).sum(), (q, k, v), allow_unused=True)
    for grad in (gq, gk, gv):
        assert grad is None or torch.isfinite(grad).all()
    for grad in (gk, gv):
        if grad is not None:
            assert (grad.masked_select(mask[:, None, :, None].expand_as(grad)) == 0).all()


# ---- (c) cross attention ------------------------------------------------------------------------------
@parametrise
def test_cross_attention(name: str):
    q, k, v = inputs(name, nq=7, nk=N)
    attention = build(name)
    if not capable(name, "cross"):
        with pytest.raises(CapabilityError, match=name):
            attention(q, k, v)
        return
    out = attention(q, k, v)
    assert out.shape == (B, heads_of(name), 7, D) and torch.isfinite(out).all()
    longer = attention(*inputs(name, nq=N, nk=7))  # fewer keys than queries too
    assert longer.shape == (B, heads_of(name), N, D) and torch.isfinite(longer).all()
    if capable(name, "key_padding_mask"):
        mask = padding_mask(N, [N, 4])
        padded = attention(q, k, v, key_padding_mask=mask)
        k2 = torch.where(mask[:, None, :, None], 30.0, k)
        torch.testing.assert_close(attention(q, k2, v, key_padding_mask=mask), padded, atol=ATOL, rtol=0)
    if capable(name, "causal"):  # causal cross attention has no meaning: an error, not a guess
        with pytest.raises(ValueError, match="equal query and key lengths"):
            attention(q, k, v, causal=True)


# ---- (d) incremental decoding -------------------------------------------------------------------------
def decode(attention: Attention, q, k, v, state):
    outs = []
    for t in range(q.shape[2]):
        out, state = attention.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
        outs.append(out)
    return torch.cat(outs, dim=2), state  # (B, h, T, D)


@parametrise
def test_incremental_decoding_matches_causal_forward(name: str):
    attention = build(name)
    h = heads_of(name)
    if not capable(name, "incremental"):
        with pytest.raises(CapabilityError, match=name):
            attention.init_state(B, h, D, device=torch.device("cpu"), dtype=torch.float32)
        return
    assert capable(name, "causal"), "incremental decoding is causal decoding"
    q, k, v = inputs(name)
    state = attention.init_state(B, h, D, device=q.device, dtype=q.dtype)
    stepped, _ = decode(attention, q, k, v, state)
    torch.testing.assert_close(stepped, attention(q, k, v, causal=True), atol=ATOL, rtol=1e-5)


@parametrise
def test_incremental_decoding_reorders_beams(name: str):
    if not capable(name, "incremental"):
        pytest.skip("not incremental")
    attention, h, t = build(name), heads_of(name), N // 2
    q, k, v = qkv(3, h, N, seed=5)
    state = attention.init_state(3, h, D, device=q.device, dtype=q.dtype)
    _, state = decode(attention, q[:, :, :t], k[:, :, :t], v[:, :, :t], state)
    index = torch.tensor([2, 0, 0])  # beam search keeps beam 2 once and beam 0 twice
    state = attention.reorder_state(state, index)
    for key, value in state.items():
        assert value.shape[0] == 3, f"state['{key}'] must keep the batch in dim 0"
    suffix = qkv(3, h, N - t, seed=6)  # each new beam continues with its own tokens
    continued, _ = decode(attention, *suffix, state)
    full = [torch.cat([x[index, :, :t], s], dim=2) for x, s in zip((q, k, v), suffix)]  # (3, h, N, D)
    expected = attention(*full, causal=True)[:, :, t:]
    torch.testing.assert_close(continued, expected, atol=ATOL, rtol=1e-5)


# ---- (e) exactness ------------------------------------------------------------------------------------
def softmax_reference(q, k, v, *, causal=False, key_padding_mask=None):
    """Plain softmax attention, written out: the definition every exact variant must match."""
    scores = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    allowed = allowed.expand(scores.shape).clone()
    if key_padding_mask is not None:
        allowed &= ~key_padding_mask[:, None, None, :]
    weights = torch.exp(
        scores - scores.masked_fill(~allowed, -math.inf).amax(-1, keepdim=True).nan_to_num(0.0)
    )
    weights = weights * allowed
    total = weights.sum(-1, keepdim=True)
    weights = torch.where(total > 0, weights / total.clamp_min(1e-300), 0.0)
    return (weights @ v.double()).float()


@pytest.mark.parametrize("name", ["full", "multihead"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_exact_variants_match_the_softmax_definition(name: str, causal: bool, padded: bool):
    q, k, v = inputs(name)
    mask = padding_mask(N, [N - 3, 0]) if padded else None
    out = build(name)(q, k, v, causal=causal, key_padding_mask=mask)
    torch.testing.assert_close(
        out, softmax_reference(q, k, v, causal=causal, key_padding_mask=mask), atol=ATOL, rtol=0
    )
    if not causal:  # cross attention
        qc, kc, vc = inputs(name, nq=5, nk=N)
        torch.testing.assert_close(build(name)(qc, kc, vc), softmax_reference(qc, kc, vc), atol=ATOL, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_full_per_head_equals_multihead(causal: bool):
    q, k, v = qkv(B, H, N, seed=7)
    mask = padding_mask(N, [N, N - 4])
    multi = build("multihead")(q, k, v, causal=causal, key_padding_mask=mask)
    full = build("full")
    for head in range(H):
        sl = slice(head, head + 1)
        single = full(q[:, sl], k[:, sl], v[:, sl], causal=causal, key_padding_mask=mask)
        torch.testing.assert_close(single, multi[:, sl], atol=ATOL, rtol=0)


def linear_attention_rnn(q, k, v, *, causal: bool, phi, eps: float):
    """Katharopoulos et al.'s recurrent form, one position at a time (non-causal: the final sums)."""
    S = torch.zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1], dtype=torch.float64)  # (B, H, D, Dv)
    z = torch.zeros(q.shape[0], q.shape[1], q.shape[-1], dtype=torch.float64)  # (B, H, D)
    fq, fk, v = phi(q.double()), phi(k.double()), v.double()
    outs = []
    for j in range(k.shape[2]):
        S = S + fk[:, :, j, :, None] * v[:, :, j, None, :]
        z = z + fk[:, :, j]
        if causal:
            outs.append((fq[:, :, j, None] @ S).squeeze(2) / ((fq[:, :, j] * z).sum(-1, keepdim=True) + eps))
    if causal:
        return torch.stack(outs, dim=2).float()
    return ((fq @ S) / ((fq * z[:, :, None]).sum(-1, keepdim=True) + eps)).float()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("feature_map", ["elu", "relu"])
@pytest.mark.parametrize("chunk_size", [1, 5, 64])  # several chunks, ragged last chunk, one chunk
def test_linear_matches_its_rnn_form(causal: bool, feature_map: str, chunk_size: int):
    from attnlab.attention.linear import FEATURE_MAPS

    q, k, v = qkv(B, H, N, seed=8)
    attention = build("linear", feature_map=feature_map, chunk_size=chunk_size)
    expected = linear_attention_rnn(q, k, v, causal=causal, phi=FEATURE_MAPS[feature_map], eps=attention.eps)
    torch.testing.assert_close(attention(q, k, v, causal=causal), expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_performer_matches_its_explicit_kernel(causal: bool, chunk_size: int):
    """FAVOR+ written out: phi(x) = exp(W x - |x|²/2)/√r with x = q/d^¼; a masked N x N kernel."""
    q, k, v = qkv(B, H, N, seed=9, qk_scale=0.5)
    attention = build("performer", chunk_size=chunk_size)
    W = attention.projection.double()  # (r, d)

    def phi(x):
        x = x.double() / D**0.25
        return torch.exp(x @ W.T - x.square().sum(-1, keepdim=True) / 2) / math.sqrt(W.shape[0])

    kernel = phi(q) @ phi(k).transpose(-2, -1)  # (B, H, N, N)
    if causal:
        kernel = kernel.tril()
    expected = (kernel @ v.double()) / kernel.sum(-1, keepdim=True)
    torch.testing.assert_close(attention(q, k, v, causal=causal), expected.float(), atol=ATOL, rtol=1e-5)


def smooth_fixture(heads: int):
    f = REFERENCE_FIXTURE
    gen = torch.Generator().manual_seed(f["seed"])
    shape = (f["batch"], heads, f["length"], f["head_dim"])
    q = torch.randn(shape, generator=gen) * f["qk_std"]  # (B, H, N, D)
    k = torch.randn(shape, generator=gen) * f["qk_std"]
    v = torch.randn(shape, generator=gen)
    return q, k, v


@parametrise
def test_declared_reference_tolerance_against_full(name: str):
    tolerance = get_attention_class(name).reference_tolerance
    if tolerance is None:
        pytest.skip("makes no claim of closeness to softmax attention")
    f = REFERENCE_FIXTURE
    torch.manual_seed(0)
    attention = build_attention(
        name, head_dim=f["head_dim"], heads=f["heads"], max_len=max(MAX_LEN, f["length"])
    )
    attention.eval()
    q, k, v = smooth_fixture(f["heads"])
    reference = build("full")
    for causal in (False, True) if capable(name, "causal") else (False,):
        out = attention(q, k, v, causal=causal)
        expected = torch.cat(
            [
                reference(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], causal=causal)
                for h in range(f["heads"])
            ],
            1,
        )
        error = (out - expected).abs().max().item()
        assert error <= tolerance, (
            f"{name} differs from softmax by {error:.3g} > declared {tolerance} (causal={causal})"
        )


def test_performer_converges_to_softmax_with_more_features():
    """More random features, smaller error: the estimator is unbiased (orthogonal rows, Haar QR)."""
    q, k, v = smooth_fixture(1)
    expected = build("full")(q, k, v)
    errors = [
        (build_attention("performer", head_dim=D, features=r)(q, k, v) - expected).abs().mean().item()
        for r in (16, 2048)
    ]
    assert errors[1] < errors[0] / 4, errors


def test_performer_projection_fixed_saved_and_redrawn():
    a, b = build("performer"), build("performer")
    assert "projection" in a.state_dict()
    torch.testing.assert_close(a.projection, b.projection)  # same seed, same projection
    c = build("performer", seed=1)
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(c.projection, a.projection)
    q, k, v = qkv(seed=11)
    fixed = build("performer").train()
    before = fixed.projection.clone()
    fixed(q, k, v)
    assert torch.equal(fixed.projection, before), "redraw=False never changes the projection"
    redrawn = build("performer", redraw=True).train()
    torch.manual_seed(123)  # redraws come from torch's global generator
    redrawn(q, k, v)
    assert not torch.equal(redrawn.projection, before), "redraw=True draws at each training forward"
    after = redrawn.projection.clone()
    redrawn.eval()(q, k, v)
    assert torch.equal(redrawn.projection, after), "evaluation keeps the last projection"


def test_performer_causal_stabiliser_is_data_independent():
    """Huge future keys must not rescale the past (a global key max in causal mode would)."""
    attention = build_attention("performer", head_dim=64)
    q, k, v = (randn(1, 1, 8, 64, seed=s) for s in (12, 13, 14))
    out = attention(q, k, v, causal=True)
    k2 = k.clone()
    w = attention.projection[attention.projection.norm(dim=1).argmax()]  # (64,) the longest row
    k2[:, :, 4:] = w * 64**0.25  # key/d^¼ = w: the largest exponent any key can have (|w|²/2)
    # A global key max would rescale the past: equal only up to round-off (1e-6 here), or far worse
    # when the past underflows. The data-independent shift gives bit-identical past outputs.
    torch.testing.assert_close(attention(q, k2, v, causal=True)[:, :, :4], out[:, :, :4], atol=0, rtol=0)
    assert torch.isfinite(attention(q * 50, k * 50, v, causal=True)).all()
    assert torch.isfinite(attention(q * 50, k * 50, v)).all()


# ---- (f) gradients ------------------------------------------------------------------------------------
def train_step(name: str, causal: bool) -> tuple[Attention, tuple[torch.Tensor, ...]]:
    """One forward + backward of a square loss in train mode: (the attention, (q, k, v)); skips
    where the variant cannot do `causal`."""
    if causal and not capable(name, "causal"):
        pytest.skip("not causal-capable")
    q, k, v = inputs(name, grad=True)
    attention = build(name).train()
    attention(q, k, v, causal=causal).square().sum().backward()
    return attention, (q, k, v)


@parametrise
@pytest.mark.parametrize("causal", [False, True])
def test_gradients_are_finite(name: str, causal: bool):
    attention, (q, k, v) = train_step(name, causal)
    for which, x in zip("qkv", (q, k, v)):
        assert x.grad is not None and torch.isfinite(x.grad).all(), which
    assert v.grad.abs().sum() > 0
    for pname, p in attention.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


# ---- (g) half precision -------------------------------------------------------------------------------
@parametrise
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_fp32(name: str, dtype: torch.dtype):
    q, k, v = inputs(name)
    q, k, v = (x.to(dtype).float() for x in (q, k, v))  # the same values in both precisions
    attention = build(name)
    causal = capable(name, "causal")
    mask = padding_mask(N, [N, N - 4]) if capable(name, "key_padding_mask") else None
    expected = attention(q, k, v, causal=causal, key_padding_mask=mask)
    try:
        out = attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=causal, key_padding_mask=mask)
    except RuntimeError as exc:  # pragma: no cover - depends on the CPU build
        if "not implemented" in str(exc) and dtype is torch.float16:
            pytest.skip(f"fp16 unsupported on this CPU: {exc}")
        raise
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=HALF_ATOL[dtype], rtol=0)


# ---- (h) cost accounting ------------------------------------------------------------------------------
PRODUCT_OPS = re.compile(r"mm|mv|dot|conv|attention")  # bmm, addmm, baddbmm_, vdot, convolution, SDPA...


class OpLog(TorchDispatchMode):
    """Records every aten op (overload packet) dispatched while active, backward included."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[torch._ops.OpOverloadPacket] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


@parametrise
@pytest.mark.parametrize("causal", [False, True])
def test_every_matrix_product_is_counted_in_flops(name: str, causal: bool):
    with OpLog() as log:
        train_step(name, causal)
    products = {op for op in log.ops if PRODUCT_OPS.search(op.__name__)}
    uncounted = sorted(op.__name__ for op in products if not counted(op))
    assert not uncounted, (
        f"FLOPs of {name} would leave out {uncounted}: give them a formula in attnlab/flops.py"
    )
