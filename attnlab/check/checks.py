"""The contract points every attention variant is held to, each a function of the variant's name.

A check returns normally (PASS), raises `Skip(reason)` where the point does not apply to the
variant (a capability it does not declare, a claim it does not make), or raises AssertionError
(FAIL) with a message saying what broke. Any other exception a variant raises is a FAIL too.

Tolerances: fp32 comparisons of the same maths computed two ways use atol 1e-5; half precision vs
fp32 uses atol 0.05 (bf16, 8-bit mantissa) and 0.01 (fp16) on unit-variance inputs.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnlab.attention import Attention, build_attention, describe, get_attention_class, registry_entry
from attnlab.attention.base import REFERENCE_FIXTURE
from attnlab.check.inputs import (
    ATOL,
    HALF_ATOL,
    MAX_LEN,
    B,
    D,
    H,
    N,
    build,
    capable,
    heads_of,
    inputs,
    padding_mask,
    qkv,
    randn,
    smooth_fixture,
    softmax_reference,
)
from attnlab.errors import CapabilityError
from attnlab.flops import counted


class Skip(Exception):
    """The contract point does not apply to this variant; the message says why."""


@dataclass(frozen=True)
class Check:
    point: str  # the contract point, e.g. "causality-gradients"
    what: str  # one line: what is checked
    run: Callable[[str], None]


CHECKS: dict[str, Check] = {}


def check(point: str, what: str) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    def register(fn: Callable[[str], None]) -> Callable[[str], None]:
        CHECKS[point] = Check(point, what, fn)
        return fn

    return register


def require(condition: object, message: str) -> None:
    """An assert that holds under `python -O` too."""
    if not condition:
        raise AssertionError(message)


@contextlib.contextmanager
def refuses(name: str, what: str) -> Iterator[None]:
    """The block must raise CapabilityError naming the variant (it does not declare `what`)."""
    try:
        yield
    except CapabilityError as error:
        require(name in str(error), f"the CapabilityError for {what} does not name '{name}': {error}")
        return
    raise AssertionError(f"does not declare {what} but did not raise CapabilityError when asked for it")


def needs(name: str, capability: str) -> None:
    if not capable(name, capability):
        raise Skip(f"does not declare {capability}")


def close(actual: torch.Tensor, expected: torch.Tensor, what: str, *, atol: float = ATOL, rtol: float = 0.0):
    try:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)
    except AssertionError as error:
        detail = " ".join(str(error).split("\n")[1:3]).strip()
        raise AssertionError(f"{what}: {detail}") from None


# ---- the declaration ----------------------------------------------------------------------------------
@check("declaration", "class-level name, complexity, capabilities, tolerance claim; repr builds")
def declaration(name: str) -> None:
    cls = get_attention_class(name)
    require(issubclass(cls, Attention) and cls.name == name, f"class {cls} is not the Attention '{name}'")
    require(cls.complexity.startswith("O(") and cls.complexity != "?", "complexity must read 'O(...)'")
    require(cls.fixed_heads is None or cls.fixed_heads >= 1, "fixed_heads must be None or >= 1")
    require(cls.reference_tolerance is None or cls.reference_tolerance > 0, "reference_tolerance must be > 0")
    require(not cls.exact or cls.reference_tolerance is not None, "an exact variant must claim a tolerance")
    declared = describe(cls)["capabilities"]
    require(declared == {c: capable(name, c) for c in declared}, "capabilities differ from the class's")
    repr(build(name))  # extra_repr lists the hyperparameters


@check("shape-dtype", "self attention keeps the shape and dtype of v, all finite")
def shape_dtype(name: str) -> None:
    q, k, v = inputs(name)
    out = build(name)(q, k, v)
    require(out.shape == v.shape, f"output shape {tuple(out.shape)} != {tuple(v.shape)}")
    require(out.dtype == v.dtype, f"output dtype {out.dtype} != {v.dtype}")
    require(torch.isfinite(out).all(), "output has NaN/inf")


@check("batch-independence", "a batch row's output never depends on the other rows")
def batch_independence(name: str) -> None:
    q, k, v = inputs(name)
    attention = build(name)
    close(attention(q, k, v)[1:], attention(q[1:], k[1:], v[1:]), "row 1 changes when row 0 is dropped")


# ---- causality ----------------------------------------------------------------------------------------
@check("causality-gradients", "causal: d out[i] / d (q, k, v)[j > i] == 0 (or refuses causal=True)")
def causality_gradients(name: str) -> None:
    if not capable(name, "causal"):
        with refuses(name, "causal"):
            build(name)(*inputs(name), causal=True)
        return
    q, k, v = inputs(name, grad=True)
    out = build(name)(q, k, v, causal=True)  # (B, h, N, D)
    for i in range(N):
        grads = torch.autograd.grad(out[:, :, i].sum(), (q, k, v), retain_graph=True, allow_unused=True)
        for which, grad in zip("qkv", grads):
            if grad is not None:
                require((grad[:, :, i + 1 :] == 0).all(), f"causal out[{i}] depends on future {which}")


@check("causality-perturbation", "causal: changing the future (by large values) leaves the past unchanged")
def causality_perturbation(name: str) -> None:
    needs(name, "causal")
    q, k, v = inputs(name)
    attention = build(name)
    out = attention(q, k, v, causal=True)
    for t in (0, N // 3, N - 2):  # change everything after position t, including by large values
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for j, x in enumerate((q2, k2, v2)):
            x[:, :, t + 1 :] = randn(*x[:, :, t + 1 :].shape, seed=10 + j, scale=30.0)
        out2 = attention(q2, k2, v2, causal=True)
        close(
            out2[:, :, : t + 1], out[:, :, : t + 1], f"causal outputs up to {t} move when the future changes"
        )


@check("causality-chunks", "causal, chunked: sums carried across chunks come from the past alone")
def causality_chunks(name: str) -> None:
    """Several chunks, future values of 1e6 inside the current chunk: an exclusive sum taken as
    inclusive minus the own chunk carries the future through round-off."""
    needs(name, "causal")
    if "chunk_size" not in registry_entry(name).hyperparameters:
        raise Skip("no chunk_size hyperparameter")
    q, k, v = inputs(name, nq=3 * D)  # chunks of 4 (linear: at least head_dim): several chunks
    attention = build(name, chunk_size=4)
    out = attention(q, k, v, causal=True)
    for t in (5, D + 5, 2 * D + 5):  # inside a chunk after the first
        v2 = v.clone()
        v2[:, :, t + 1 :] = 1e6
        close(
            attention(q, k, v2, causal=True)[:, :, : t + 1],
            out[:, :, : t + 1],
            f"causal outputs up to {t} move when later values are 1e6",
        )


# ---- key padding --------------------------------------------------------------------------------------
def _padding(name: str, causal: bool) -> None:
    if causal:
        needs(name, "causal")
    lengths = [N, N - 5, 0]  # full, padded, fully padded
    mask = padding_mask(N, lengths)  # (3, N)
    q, k, v = qkv(len(lengths), heads_of(name), N, seed=3)
    attention = build(name)
    if not capable(name, "key_padding_mask"):
        with refuses(name, "key_padding_mask"):
            attention(q, k, v, key_padding_mask=mask)
        return
    out = attention(q, k, v, causal=causal, key_padding_mask=mask)
    require(torch.isfinite(out).all(), "NaN/inf in the output (fully padded rows included)")
    padded = mask[:, None, :, None]  # (3, 1, N, 1)
    q2, k2, v2 = (
        torch.where(padded, randn(*x.shape, seed=20 + i, scale=30.0), x) for i, x in enumerate((q, k, v))
    )
    out2 = attention(q2, k2, v2, causal=causal, key_padding_mask=mask)
    real = ~mask[:, None, :, None]  # outputs at real positions must not move
    close(out2 * real, out * real, "real outputs move when padded content changes")
    require(torch.isfinite(out2).all(), "NaN/inf with large padded content")


check("padding", "padded keys never reach real outputs; fully padded rows finite (or refuses masks)")(
    functools.partial(_padding, causal=False)
)
check("padding-causal", "as padding, with causal=True")(functools.partial(_padding, causal=True))


@check("padding-gradients", "gradients finite, and zero on padded keys and values")
def padding_gradients(name: str) -> None:
    needs(name, "key_padding_mask")
    lengths = [N, N - 5, 0]
    mask = padding_mask(N, lengths)
    q, k, v = (x.requires_grad_() for x in qkv(len(lengths), heads_of(name), N, seed=4))
    out = build(name)(q, k, v, key_padding_mask=mask)
    real = ~mask[:, None, :, None]
    gq, gk, gv = torch.autograd.grad((out * real).sum(), (q, k, v), allow_unused=True)
    for which, grad in zip("qkv", (gq, gk, gv)):
        require(grad is None or torch.isfinite(grad).all(), f"NaN/inf in the gradient of {which}")
    for which, grad in zip("kv", (gk, gv)):
        if grad is not None:
            on_padding = grad.masked_select(mask[:, None, :, None].expand_as(grad))
            require((on_padding == 0).all(), f"padded {which} receive a gradient")


# ---- cross attention ----------------------------------------------------------------------------------
@check("cross-attention", "Nq != Nk works, padding included (or refuses it); causal cross is an error")
def cross_attention(name: str) -> None:
    q, k, v = inputs(name, nq=7, nk=N)
    attention = build(name)
    if not capable(name, "cross"):
        with refuses(name, "cross"):
            attention(q, k, v)
        return
    h = heads_of(name)
    out = attention(q, k, v)
    require(out.shape == (B, h, 7, D), f"cross output shape {tuple(out.shape)} != {(B, h, 7, D)}")
    require(torch.isfinite(out).all(), "NaN/inf in the cross output")
    longer = attention(*inputs(name, nq=N, nk=7))  # fewer keys than queries too
    require(longer.shape == (B, h, N, D), f"cross output shape {tuple(longer.shape)} != {(B, h, N, D)}")
    require(torch.isfinite(longer).all(), "NaN/inf in the cross output (Nq > Nk)")
    if capable(name, "key_padding_mask"):
        mask = padding_mask(N, [N, 4])
        padded = attention(q, k, v, key_padding_mask=mask)
        k2 = torch.where(mask[:, None, :, None], 30.0, k)
        close(attention(q, k2, v, key_padding_mask=mask), padded, "padded keys reach cross outputs")
    if capable(name, "causal"):  # causal cross attention has no meaning: an error, not a guess
        try:
            attention(q, k, v, causal=True)
        except ValueError as error:
            require("equal query and key lengths" in str(error), f"unclear causal cross error: {error}")
        else:
            raise AssertionError("causal=True with Nq != Nk must raise (check_request), not guess")


@check("cross-memory", "attend_memory over memory_state equals cross attention on the keys/values")
def cross_memory(name: str) -> None:
    needs(name, "cross")
    attention = build(name).eval()
    q, k, v = inputs(name, nq=1, nk=N, seed=7)  # one decoding query per row
    mask = padding_mask(N, [N, 5]) if capable(name, "key_padding_mask") else None
    memory = attention.memory_state(k, v, mask)
    for key, value in memory.items():
        require(value.shape[0] == B, f"memory_state['{key}'] must keep the batch in dim 0")
    expected = attention(q, k, v, key_padding_mask=mask)
    close(
        attention.attend_memory(q, memory), expected, "attend_memory differs from cross attention", rtol=1e-5
    )
    rows = torch.tensor([1, 1, 0])  # beams copied from their source row
    close(
        attention.attend_memory(q[rows], attention.reorder_state(memory, rows)),
        expected[rows],
        "attend_memory over a reordered memory_state differs",
        rtol=1e-5,
    )


# ---- incremental decoding -----------------------------------------------------------------------------
def decode(attention: Attention, q, k, v, state):
    """Feed q, k, v (B, h, T, D) one position at a time: outputs (B, h, T, D) and the final state."""
    outs = []
    for t in range(q.shape[2]):
        out, state = attention.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
        outs.append(out)
    return torch.cat(outs, dim=2), state  # (B, h, T, D)


@check("decoding", "step-by-step decoding equals the causal parallel pass (or refuses init_state)")
def decoding(name: str) -> None:
    attention, h = build(name), heads_of(name)
    if not capable(name, "incremental"):
        with refuses(name, "incremental"):
            attention.init_state(B, h, D, device=torch.device("cpu"), dtype=torch.float32)
        return
    require(capable(name, "causal"), "declares incremental but not causal: decoding is causal")
    q, k, v = inputs(name)
    state = attention.init_state(B, h, D, device=q.device, dtype=q.dtype)
    stepped, _ = decode(attention, q, k, v, state)
    close(
        stepped,
        attention(q, k, v, causal=True),
        "decoded outputs differ from forward(causal=True)",
        rtol=1e-5,
    )


@check("decoding-beams", "reorder_state keeps the batch in dim 0 and beams continue correctly")
def decoding_beams(name: str) -> None:
    needs(name, "incremental")
    attention, h, t = build(name), heads_of(name), N // 2
    q, k, v = qkv(3, h, N, seed=5)
    state = attention.init_state(3, h, D, device=q.device, dtype=q.dtype)
    _, state = decode(attention, q[:, :, :t], k[:, :, :t], v[:, :, :t], state)
    index = torch.tensor([2, 0, 0])  # beam search keeps beam 2 once and beam 0 twice
    state = attention.reorder_state(state, index)
    for key, value in state.items():
        require(value.shape[0] == 3, f"state['{key}'] must keep the batch in dim 0")
    suffix = qkv(3, h, N - t, seed=6)  # each new beam continues with its own tokens
    continued, _ = decode(attention, *suffix, state)
    full = [torch.cat([x[index, :, :t], s], dim=2) for x, s in zip((q, k, v), suffix)]  # (3, h, N, D)
    expected = attention(*full, causal=True)[:, :, t:]
    close(continued, expected, "reordered beams decode differently from their prefixes", rtol=1e-5)


# ---- exactness ----------------------------------------------------------------------------------------
@check("exactness", "an exact variant equals the softmax definition (causal, padded, cross)")
def exactness(name: str) -> None:
    if not get_attention_class(name).exact:
        raise Skip("does not claim exact softmax attention")
    attention = build(name)
    for causal in (False, True) if capable(name, "causal") else (False,):
        for padded in (False, True) if capable(name, "key_padding_mask") else (False,):
            q, k, v = inputs(name)
            mask = padding_mask(N, [N - 3, 0]) if padded else None
            out = attention(q, k, v, causal=causal, key_padding_mask=mask)
            expected = softmax_reference(q, k, v, causal=causal, key_padding_mask=mask)
            close(out, expected, f"differs from softmax (causal={causal}, padded={padded})")
    if capable(name, "cross"):
        qc, kc, vc = inputs(name, nq=5, nk=N)
        close(attention(qc, kc, vc), softmax_reference(qc, kc, vc), "cross attention differs from softmax")


@check("reference-tolerance", "within the declared reference_tolerance of `full` on smooth inputs")
def reference_tolerance(name: str) -> None:
    tolerance = get_attention_class(name).reference_tolerance
    if tolerance is None:
        raise Skip("makes no claim of closeness to softmax attention")
    f = REFERENCE_FIXTURE
    torch.manual_seed(0)
    attention = build_attention(
        name, head_dim=f["head_dim"], heads=f["heads"], max_len=max(MAX_LEN, f["length"])
    ).eval()
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
        require(
            error <= tolerance,
            f"differs from softmax by {error:.3g} > declared {tolerance} (causal={causal})",
        )


# ---- gradients ----------------------------------------------------------------------------------------
def train_step(name: str, causal: bool) -> tuple[Attention, tuple[torch.Tensor, ...]]:
    """One forward + backward of a square loss in train mode: (the attention, (q, k, v))."""
    if causal:
        needs(name, "causal")
    q, k, v = inputs(name, grad=True)
    attention = build(name).train()
    attention(q, k, v, causal=causal).square().sum().backward()
    return attention, (q, k, v)


def _gradients(name: str, causal: bool) -> None:
    attention, (q, k, v) = train_step(name, causal)
    for which, x in zip("qkv", (q, k, v)):
        require(
            x.grad is not None and torch.isfinite(x.grad).all(), f"missing or NaN/inf gradient of {which}"
        )
    require(v.grad.abs().sum() > 0, "the gradient of v is zero")
    for pname, p in attention.named_parameters():
        require(
            p.grad is not None and torch.isfinite(p.grad).all(), f"missing or NaN/inf gradient of {pname}"
        )


check("gradients", "finite gradients for q, k, v and every parameter")(
    functools.partial(_gradients, causal=False)
)
check("gradients-causal", "as gradients, with causal=True")(functools.partial(_gradients, causal=True))


# ---- half precision -----------------------------------------------------------------------------------
def _half(name: str, dtype: torch.dtype) -> None:
    q, k, v = inputs(name)
    q, k, v = (x.to(dtype).float() for x in (q, k, v))  # the same values in both precisions
    attention = build(name)
    causal = capable(name, "causal")
    mask = padding_mask(N, [N, N - 4]) if capable(name, "key_padding_mask") else None
    expected = attention(q, k, v, causal=causal, key_padding_mask=mask)
    try:
        out = attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=causal, key_padding_mask=mask)
    except RuntimeError as error:  # depends on the CPU build
        if "not implemented" in str(error) and dtype is torch.float16:
            raise Skip(f"fp16 unsupported on this CPU: {' '.join(str(error).split())}") from None
        raise
    require(out.dtype == dtype, f"output dtype {out.dtype} != input dtype {dtype}")
    require(torch.isfinite(out).all(), f"NaN/inf in {dtype} output")
    close(out.float(), expected, f"{dtype} output far from fp32", atol=HALF_ATOL[dtype])


check("dtype-bf16", "bfloat16 inputs give bfloat16 outputs close to fp32 (atol 0.05)")(
    functools.partial(_half, dtype=torch.bfloat16)
)
check("dtype-fp16", "float16 inputs give float16 outputs close to fp32 (atol 0.01)")(
    functools.partial(_half, dtype=torch.float16)
)


# ---- cost accounting ----------------------------------------------------------------------------------
PRODUCT_OPS = re.compile(r"mm|mv|dot|conv|attention")  # bmm, addmm, baddbmm_, vdot, convolution, SDPA...


class OpLog(TorchDispatchMode):
    """Records every aten op (overload packet) dispatched while active, backward included."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[torch._ops.OpOverloadPacket] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


def _flop_coverage(name: str, causal: bool) -> None:
    if causal:
        needs(name, "causal")
    with OpLog() as log:
        train_step(name, causal)
    products = {op for op in log.ops if PRODUCT_OPS.search(op.__name__)}
    uncounted = sorted(op.__name__ for op in products if not counted(op))
    require(
        not uncounted, f"FLOP counts would leave out {uncounted}: give them a formula in attnlab/flops.py"
    )


check("flop-coverage", "every matrix product, forward and backward, is one attnlab.flops counts")(
    functools.partial(_flop_coverage, causal=False)
)
check("flop-coverage-causal", "as flop-coverage, with causal=True")(
    functools.partial(_flop_coverage, causal=True)
)


# ---- positions in the layer (model.positional=rope / alibi) ---------------------------------------------
def layer_of(name: str, positional: str):
    """A seeded self-attention layer (width H·D) around the variant, with `positional`, in eval mode."""
    from attnlab.nn import AttentionSpec, MultiHeadAttention

    torch.manual_seed(0)
    spec = AttentionSpec.from_config(name)
    return MultiHeadAttention(H * D, H, spec, max_len=MAX_LEN, positional=positional).eval()


def decode_layer(layer, x: torch.Tensor, state):
    """Feed x (B, T, C) one token at a time through layer.step: outputs (B, T, C) and the final state."""
    outs = []
    for t in range(x.shape[1]):
        out, state = layer.step(x[:, t : t + 1], state)
        outs.append(out)
    return torch.cat(outs, dim=1), state


def _layer_decoding(name: str, positional: str) -> None:
    """Decoding through the layer (positions counted by its state) equals its causal parallel pass,
    and reordered beams continue at the right positions."""
    layer = layer_of(name, positional)
    x = randn(3, N, H * D, seed=30)  # (3, N, C)
    parallel = layer(x, causal=True)  # (3, N, C)
    state = layer.init_state(3, device=x.device, dtype=x.dtype)
    stepped, _ = decode_layer(layer, x, state)
    close(stepped, parallel, f"{positional}: decoded outputs differ from the causal parallel pass", rtol=1e-5)
    t, index = N // 2, torch.tensor([2, 0, 0])
    _, state = decode_layer(layer, x[:, :t], layer.init_state(3, device=x.device, dtype=x.dtype))
    state = Attention.reorder_state(state, index)
    suffix = randn(3, N - t, H * D, seed=31)
    continued, _ = decode_layer(layer, suffix, state)
    expected = layer(torch.cat([x[index, :t], suffix], dim=1), causal=True)[:, t:]
    close(
        continued,
        expected,
        f"{positional}: reordered beams decode differently from their prefixes",
        rtol=1e-5,
    )


@check(
    "positions-rope", "rope in the layer: longer than max_len; decoding (beams too) equals the parallel pass"
)
def positions_rope(name: str) -> None:
    layer = layer_of(name, "rope")
    # Past model.max_len (rope sizes nothing by it), unless the kernel's own weights are sized by it (lowrank).
    length = MAX_LEN if "max_len" in registry_entry(name).context else MAX_LEN + 8
    x = randn(B, length, H * D, seed=32)  # (B, N, C)
    causal = capable(name, "causal")
    out = layer(x, causal=causal)
    require(out.shape == x.shape and torch.isfinite(out).all(), "rope layer output wrong shape or not finite")
    require(
        not torch.allclose(out, layer_of(name, "none")(x, causal=causal)), "rope leaves the output unchanged"
    )
    if capable(name, "incremental"):
        _layer_decoding(name, "rope")


@check(
    "positions-alibi",
    "alibi: the kernel's bias moves outputs, decoding equals the parallel pass (or refused)",
)
def positions_alibi(name: str) -> None:
    from attnlab.attention.alibi import alibi_slopes
    from attnlab.errors import ConfigError

    if not capable(name, "alibi"):
        try:
            layer_of(name, "alibi")
        except ConfigError as error:
            require(name in str(error), f"the alibi refusal does not name '{name}': {error}")
            return
        raise AssertionError("does not declare alibi but a layer with model.positional=alibi was built")
    q, k, v = inputs(name)
    attention, h = build(name), heads_of(name)
    for causal in (False, True) if capable(name, "causal") else (False,):
        plain = attention(q, k, v, causal=causal)
        close(
            attention(q, k, v, causal=causal, alibi=torch.zeros(h)), plain, "zero ALiBi slopes change outputs"
        )
        biased = attention(q, k, v, causal=causal, alibi=alibi_slopes(h) * 4)
        require(
            not torch.allclose(biased, plain, atol=1e-3),
            f"the ALiBi bias never reaches outputs (causal={causal})",
        )
    if get_attention_class(name).exact:
        mask = padding_mask(N, [N, N - 3])
        slopes = alibi_slopes(h)
        for causal in (False, True):
            out = attention(q, k, v, causal=causal, key_padding_mask=mask, alibi=slopes)
            expected = softmax_reference(q, k, v, causal=causal, key_padding_mask=mask, alibi=slopes)
            close(out, expected, f"differs from softmax with an ALiBi bias (causal={causal})")
    if capable(name, "incremental"):
        _layer_decoding(name, "alibi")


# ---- packed documents (segment ids) ---------------------------------------------------------------------
PACKED_DOCUMENTS = ([5, 4, 3], [1, 7, 4])  # two rows of N = 12 tokens, documents of these lengths


def packed_segments() -> torch.Tensor:
    """(2, N) segment ids of PACKED_DOCUMENTS: document j of a row has id j."""
    return torch.stack(
        [torch.repeat_interleave(torch.arange(len(row)), torch.tensor(row)) for row in PACKED_DOCUMENTS]
    )


@check("packed-documents", "in a packed row, each document's outputs equal its outputs run alone (rope too)")
def packed_documents(name: str) -> None:
    caps = get_attention_class(name).capabilities
    if not (caps.segments or caps.key_padding_mask):
        raise Skip(
            "declares neither segments nor key_padding_mask: the LM task gives it one document per row"
        )
    causal = caps.causal
    segments = packed_segments()  # (2, N)
    x = randn(2, N, H * D, seed=40)  # (2, N, C)
    for positional in ("none", "rope"):
        layer = layer_of(name, positional)
        packed = layer(x, causal=causal, segments=segments)  # (2, N, C)
        for row, lengths in enumerate(PACKED_DOCUMENTS):
            start = 0
            for j, length in enumerate(lengths):
                alone = layer(x[row : row + 1, start : start + length], causal=causal)  # (1, L, C)
                close(
                    packed[row : row + 1, start : start + length],
                    alone,
                    f"{positional}: document {j} of row {row} differs from it run alone (it sees another document)",
                    rtol=1e-5,
                )
                start += length
