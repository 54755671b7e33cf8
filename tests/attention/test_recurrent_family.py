"""retention, gla, deltanet, gated_deltanet, based, mamba2, gated_deltaproduct, kda, rwkv7: three forms of each op agree (naive loop, chunked,
decoding step), padded tokens are identity steps, the non-causal pass is the two directions summed,
extreme gates stay finite. (Outside references: test_fla_reference.py; the contract: test_gates.py.)"""

from __future__ import annotations

import pytest
import torch

from attnlab.attention import build_attention
from attnlab.attention.gates import random_gates
from attnlab.attention.ops import (
    chunk_based,
    chunk_delta_rule,
    chunk_dplr,
    chunk_gla,
    chunk_kda,
    naive_recurrent_based,
    naive_recurrent_delta_rule,
    naive_recurrent_dplr,
    naive_recurrent_gla,
    naive_recurrent_kda,
    recurrent_step_based,
    recurrent_step_delta_rule,
    recurrent_step_dplr,
    recurrent_step_gla,
    recurrent_step_kda,
    taylor_features,
)
from attnlab.attention.ops.norms import rms_norm, unit_norm
from attnlab.attention.registry import get_attention_class

pytestmark = pytest.mark.usefixtures("one_thread")
B, H, N, D = 2, 2, 37, 8
FAMILY = [
    "retention",
    "gla",
    "deltanet",
    "gated_deltanet",
    "based",
    "mamba2",
    "gated_deltaproduct",
    "kda",
    "rwkv7",
]


def tensors(*shapes, seed=0, grad=True):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_(grad) for s in shapes]


def same_with_grads(a, b, inputs):
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    for x, y in zip(
        torch.autograd.grad(a.sum(), inputs, retain_graph=True),
        torch.autograd.grad(b.sum(), inputs, retain_graph=True),
        strict=True,
    ):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-8)


def stepped(step, q, k, v, state, *gates):
    outs = []
    for t in range(q.shape[2]):
        out, state = step(
            q[:, :, t : t + 1],
            k[:, :, t : t + 1],
            v[:, :, t : t + 1],
            *(g[:, :, t : t + 1] for g in gates),
            state,
        )
        outs.append(out)
    return torch.cat(outs, dim=2), state


@pytest.mark.parametrize("per_dim", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize("temperature", [0.25, 1.0, 16.0])  # steep: sub-blocks of 16; mild: whole chunks
def test_gla_forms_agree(per_dim, chunk_size, temperature):
    q, k, v, raw = tensors((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N, D) if per_dim else (B, H, N))
    g = torch.nn.functional.logsigmoid(raw) / temperature
    naive, S = naive_recurrent_gla(q, k, v, g, scale=0.3)
    chunk, S_chunk = chunk_gla(q, k, v, g, scale=0.3, chunk_size=chunk_size)
    same_with_grads(chunk, naive, [q, k, v, raw])
    torch.testing.assert_close(S_chunk, S)
    step = lambda q, k, v, g, s: recurrent_step_gla(q, k, v, g, s, scale=0.3)  # noqa: E731
    torch.testing.assert_close(stepped(step, q, k, v, torch.zeros(B, H, D, D, dtype=q.dtype), g)[0], naive)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_delta_rule_forms_agree(gated, chunk_size):
    q, k, v, raw_beta, raw_g = tensors((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N), (B, H, N))
    k_unit, beta = torch.nn.functional.normalize(k, dim=-1), torch.sigmoid(raw_beta)
    g = torch.nn.functional.logsigmoid(raw_g) if gated else None
    naive, S = naive_recurrent_delta_rule(q, k_unit, v, beta, g, scale=0.3)
    chunk, S_chunk = chunk_delta_rule(q, k_unit, v, beta, g, scale=0.3, chunk_size=chunk_size)
    same_with_grads(chunk, naive, [q, k, v, raw_beta] + ([raw_g] if gated else []))
    torch.testing.assert_close(S_chunk, S)
    gates = (beta,) if g is None else (beta, g)

    def step(q, k, v, *rest):
        *gate, state = rest
        return recurrent_step_delta_rule(q, k, v, gate[0], gate[1] if gated else None, state, scale=0.3)

    torch.testing.assert_close(
        stepped(step, q, k_unit, v, torch.zeros(B, H, D, D, dtype=q.dtype), *gates)[0], naive
    )


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize("steepness", [0.5, 3.0, 30.0])  # mild to decays of e^-30 a step
def test_kda_forms_agree(chunk_size, steepness):
    q, k, v, raw_beta, raw_g = tensors((B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N), (B, H, N, D))
    k_unit, beta = torch.nn.functional.normalize(k, dim=-1), torch.sigmoid(raw_beta)
    g = torch.nn.functional.logsigmoid(raw_g) * steepness  # (B, H, N, D) <= 0
    naive, S = naive_recurrent_kda(q, k_unit, v, beta, g, scale=0.3)
    chunk, S_chunk = chunk_kda(q, k_unit, v, beta, g, scale=0.3, chunk_size=chunk_size)
    same_with_grads(chunk, naive, [q, k, v, raw_beta, raw_g])
    torch.testing.assert_close(S_chunk, S)
    step = lambda q, k, v, b, g, s: recurrent_step_kda(q, k, v, b, g, s, scale=0.3)  # noqa: E731
    zeros = torch.zeros(B, H, D, D, dtype=q.dtype)
    torch.testing.assert_close(stepped(step, q, k_unit, v, zeros, beta, g)[0], naive)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kda_and_dplr_route_each_chunk_on_its_own(dtype):
    """One chunk decays past e^-80 (steps 8-15 at e^-30 each), the others mildly: the steep chunk is formed
    pair by pair, the rest by the matmul, and the whole still equals the loop, gradients included."""
    q, k, v, raw_beta, raw_g, raw_a = tensors(
        (B, H, N, D), (B, H, N, D), (B, H, N, D), (B, H, N), (B, H, N, D), (B, H, N, D)
    )
    steep = torch.zeros(N, 1, dtype=torch.float64)
    steep[8:16] = 1.0
    g = torch.nn.functional.logsigmoid(raw_g) * 0.5 - 30.0 * steep  # (B, H, N, D) <= 0
    k_unit, beta = torch.nn.functional.normalize(k, dim=-1), torch.sigmoid(raw_beta)
    alpha, beta_dplr = -k_unit, k_unit * torch.sigmoid(raw_a)
    for naive_form, chunk_form, args, inputs in [
        (naive_recurrent_kda, chunk_kda, (q, k_unit, v, beta, g), [q, k, v, raw_beta, raw_g]),
        (naive_recurrent_dplr, chunk_dplr, (q, k, v, alpha, beta_dplr, g), [q, k, v, raw_g, raw_a]),
    ]:
        naive, S = naive_form(*args, scale=0.3)
        chunk, S_chunk = chunk_form(*(a.to(dtype) for a in args), scale=0.3, chunk_size=8)
        if dtype == torch.float64:
            same_with_grads(chunk, naive, inputs)
            torch.testing.assert_close(S_chunk, S)
        else:  # fp32: the matmul route's e^80 factors are in range and the steep chunk is exact
            torch.testing.assert_close(chunk.double(), naive, atol=1e-4, rtol=1e-4)
            grads = torch.autograd.grad(chunk.sum(), inputs, retain_graph=True)
            assert all(torch.isfinite(grad).all() for grad in grads)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_dplr_forms_agree(chunk_size):
    """RWKV-7's update: decay per dimension, write k vᵀ, replace at κ̂ (α = -κ̂, β = κ̂ ⊙ a)."""
    q, k, v, raw_kk, raw_a, raw_w = tensors(*[(B, H, N, D)] * 6)
    kk = torch.nn.functional.normalize(raw_kk, dim=-1)
    alpha, beta = -kk, kk * torch.sigmoid(raw_a)
    g = -0.6 * torch.sigmoid(raw_w)
    naive, S = naive_recurrent_dplr(q, k, v, alpha, beta, g, scale=0.3)
    chunk, S_chunk = chunk_dplr(q, k, v, alpha, beta, g, scale=0.3, chunk_size=chunk_size)
    same_with_grads(chunk, naive, [q, k, v, raw_kk, raw_a, raw_w])
    torch.testing.assert_close(S_chunk, S)
    step = lambda q, k, v, a, b, g, s: recurrent_step_dplr(q, k, v, a, b, g, s, scale=0.3)  # noqa: E731
    zeros = torch.zeros(B, H, D, D, dtype=q.dtype)
    torch.testing.assert_close(stepped(step, q, k, v, zeros, alpha, beta, g)[0], naive)


def test_based_forms_agree():
    q, k, v = tensors((B, H, N, 4), (B, H, N, 4), (B, H, N, D))
    naive, _ = naive_recurrent_based(q, k, v, scale=0.5)
    same_with_grads(chunk_based(q, k, v, scale=0.5, chunk_size=8), naive, [q, k, v])
    F = 1 + 4 + 10
    state = (torch.zeros(B, H, F, D, dtype=q.dtype), torch.zeros(B, H, F, dtype=q.dtype))
    step = lambda q, k, v, s: recurrent_step_based(q, k, v, s, scale=0.5)  # noqa: E731
    torch.testing.assert_close(stepped(step, q, k, v, state)[0], naive)


def build(name, **params):
    torch.manual_seed(0)
    return build_attention(name, head_dim=D, heads=H, max_len=64, **params).eval()


def gates_for(name, n, batch=B, seed=1):
    return random_gates(get_attention_class(name), batch, H, n, D, seed=seed)


@pytest.mark.parametrize("name", FAMILY)
def test_padded_tokens_anywhere_are_identity_steps(name):
    """A sequence with padded tokens inserted gives, at its real tokens, the output of the sequence
    without them (causal and non-causal), whatever the padded tokens hold."""
    attention = build(name, window=0) if name == "based" else build(name)
    q, k, v = tensors((B, H, N, D), (B, H, N, D), (B, H, N, D), grad=False)
    gates = gates_for(name, N)
    padded = torch.zeros(B, N, dtype=torch.bool)
    padded[:, 3:9] = True
    padded[1, 20:22] = True
    for causal in (True, False):
        out = attention(q, k, v, causal=causal, key_padding_mask=padded, **gates)
        for b in range(B):
            real = ~padded[b]
            alone = attention(
                q[b : b + 1, :, real], k[b : b + 1, :, real], v[b : b + 1, :, real], causal=causal,
                **{n: t[b : b + 1, :, real] for n, t in gates.items()},
            )  # fmt: skip
            torch.testing.assert_close(out[b : b + 1, :, real], alone, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize(
    "name", ["retention", "gla", "deltanet", "gated_deltanet", "mamba2", "gated_deltaproduct", "kda", "rwkv7"]
)
def test_non_causal_is_both_directions_summed(name):
    skip = {"skip": False} if name == "mamba2" else {}  # mamba2's D·v skip is added once, after the sum
    attention = build(name, output_norm=False, **skip)
    q, k, v = tensors((B, H, N, D), (B, H, N, D), (B, H, N, D), grad=False)
    gates = gates_for(name, N)
    forward = attention(q, k, v, causal=True, **gates)
    flipped = {n: t.flip(2) for n, t in gates.items()}
    backward = attention(q.flip(2), k.flip(2), v.flip(2), causal=True, **flipped).flip(2)
    torch.testing.assert_close(attention(q, k, v, **gates), forward + backward)


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_gates_and_long_sequences_stay_finite(name, dtype):
    attention = build(name)
    q, k, v = (x.to(dtype) * 10 for x in tensors((1, H, 512, D), (1, H, 512, D), (1, H, 512, D), grad=False))
    gates = {n: (t * 100).to(dtype).requires_grad_() for n, t in gates_for(name, 512, batch=1).items()}
    out = attention(q.requires_grad_(), k, v, causal=True, **gates)
    out.float().square().sum().backward()
    assert out.dtype == dtype and torch.isfinite(out).all()
    for grad in [q.grad, *(t.grad for t in gates.values())]:
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", FAMILY)
def test_decoding_state_does_not_grow(name):
    attention = build(name)
    state = attention.init_state(B, H, D, device=torch.device("cpu"), dtype=torch.bfloat16)
    sizes = {key: value.shape for key, value in state.items()}
    assert all(v.dtype in (torch.float32, torch.long) for v in state.values()), "state kept in fp32"
    window = getattr(attention, "window", 0)  # based's softmax window fills up to its size, then stays
    n = window + 40
    q, k, v = (x.to(torch.bfloat16) for x in tensors((B, H, n, D), (B, H, n, D), (B, H, n, D), grad=False))
    gates = {name_: t.to(torch.bfloat16) for name_, t in gates_for(name, n).items()}
    for t in range(n):
        out, state = attention.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state,
                                    **{g: x[:, :, t : t + 1] for g, x in gates.items()})  # fmt: skip
        if t == window:
            sizes = {key: value.shape for key, value in state.items()}  # full: no growth from here
    assert {key: value.shape for key, value in state.items()} == sizes and out.dtype == torch.bfloat16


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", FAMILY)
def test_three_hundred_half_precision_training_steps_stay_finite(name, dtype):
    """Autocast bf16 or fp16 on CPU, one causal layer learning a running sum mod 16: loss and gradient
    norm finite at every step (the decays and the delta rule are where fla's users report NaNs)."""
    from attnlab.nn.layer import MultiHeadAttention
    from attnlab.nn.spec import AttentionSpec

    torch.manual_seed(0)
    V, C, n = 16, 64, 64
    emb, layer = torch.nn.Embedding(V, C), MultiHeadAttention(C, 4, AttentionSpec(name, {}), max_len=n)
    norm, head = torch.nn.LayerNorm(C), torch.nn.Linear(C, V)
    params = [p for m in (emb, layer, norm, head) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(300):
        x = torch.randint(0, V, (8, n))
        with torch.autocast("cpu", dtype=dtype):
            h = emb(x)
            logits = head(h + layer(norm(h), causal=True))
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), (x.cumsum(1) % V).reshape(-1))
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()


@pytest.mark.parametrize("silu", [False, True])
def test_unit_norm_equals_autograd_through_normalize(silu):
    """ops/norms.unit_norm: F.normalize(F.silu(x))'s values and gradients, also where |x| < eps."""
    (x,) = tensors((B, H, N, D))
    with torch.no_grad():
        x[0, 0, :3] *= 1e-9  # below eps: divided by eps, no projection
    ours = unit_norm(x, silu=silu, eps=1e-6)
    reference = torch.nn.functional.normalize(torch.nn.functional.silu(x) if silu else x, dim=-1, eps=1e-6)
    weight = torch.randn(ours.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    same_with_grads(ours * weight, reference * weight, [x])


def test_rms_norm_equals_autograd_through_its_formula():
    (x,) = tensors((B, H, N, D))
    reference = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6)
    weight = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    same_with_grads(rms_norm(x, eps=1e-6) * weight, reference * weight, [x])


def test_taylor_features_equal_the_pairwise_products_with_autograd():
    """ops/based/chunk.py taylor_features (row-by-row, hand-written backward) against the plain definition
    [1, x, c_ab x_a x_b (a <= b)], c_aa = 1/√2, differentiated by autograd."""
    (x,) = tensors((B, H, N, 5))
    a, b = torch.triu_indices(5, 5)
    c = torch.ones(a.shape, dtype=x.dtype).masked_fill(a == b, 0.5**0.5)
    reference = torch.cat([torch.ones_like(x[..., :1]), x, x[..., a] * x[..., b] * c], dim=-1)
    weight = torch.randn(reference.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    same_with_grads(taylor_features(x) * weight, reference * weight, [x])
