"""The conformance suite's inputs: small seeded tensors, masks, and the variant built the same way each time.

Shapes are small (B=2, H=2, N=12, D=16) because the suite runs every installed variant.
"""

from __future__ import annotations

import math

import torch

from attnlab.attention import Attention, build_attention, get_attention_class
from attnlab.attention.base import REFERENCE_FIXTURE
from attnlab.attention.gates import with_example_gates

B, H, N, D = 2, 2, 12, 16
MAX_LEN = 64
ATOL = 1e-5  # fp32: the same maths computed two ways
HALF_ATOL = {torch.bfloat16: 0.05, torch.float16: 0.01}  # vs fp32 on unit-variance inputs


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return _seeded(shape, torch.Generator().manual_seed(seed)) * scale


def _seeded(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Drawn on the CPU (the same numbers on every machine), then on the default device: the suite
    runs on CUDA inside `with torch.device("cuda")` (attnlab.check.gpu)."""
    return torch.randn(shape, generator=generator, device="cpu").to(torch.get_default_device())


def qkv(
    batch: int = B,
    heads: int = H,
    nq: int = N,
    nk: int | None = None,
    *,
    seed: int = 0,
    qk_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q (B, H, Nq, D), k, v (B, H, Nk, D); q and k multiplied by qk_scale."""
    nk = nq if nk is None else nk
    q = randn(batch, heads, nq, D, seed=seed, scale=qk_scale)  # (B, H, Nq, D)
    k = randn(batch, heads, nk, D, seed=seed + 1, scale=qk_scale)  # (B, H, Nk, D)
    v = randn(batch, heads, nk, D, seed=seed + 2)  # (B, H, Nk, D)
    return q, k, v


def build(name: str, **params) -> Attention:
    """The variant with default hyperparameters (plus `params`), in eval mode, seeded."""
    torch.manual_seed(0)  # variants with learned parameters (lowrank) start the same every time
    attention = build_attention(name, head_dim=D, heads=H, max_len=MAX_LEN, **params)
    attention = attention.to(torch.get_default_device())  # buffers drawn from a CPU generator too
    return with_example_gates(attention.eval())  # gated variants get gates derived from the keys


def heads_of(name: str) -> int:
    return get_attention_class(name).fixed_heads or H


def capable(name: str, capability: str) -> bool:
    return getattr(get_attention_class(name).capabilities, capability)


def inputs(name: str, nq: int = N, nk: int | None = None, *, seed: int = 0, grad: bool = False, **kw):
    """q, k, v for `name` (its fixed head count, if any)."""
    q, k, v = qkv(B, heads_of(name), nq, nk, seed=seed, **kw)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def padding_mask(nk: int, lengths: list[int]) -> torch.Tensor:
    """(len(lengths), Nk) bool, True at padded (right-padded) positions."""
    return torch.arange(nk)[None, :] >= torch.tensor(lengths)[:, None]


def softmax_reference(q, k, v, *, causal=False, key_padding_mask=None, alibi=None):
    """Plain softmax attention, written out: the definition every exact variant must match.
    `alibi`: per-head slopes (H,); the score of query i, key j is lowered by slope·|i - j|."""
    scores = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
    if alibi is not None:
        nq, nk = scores.shape[-2:]
        i = torch.arange(nq)[:, None] + (nk - nq)  # queries aligned to the last keys
        scores = scores - alibi.double()[:, None, None] * (i - torch.arange(nk)[None, :]).abs()
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


def smooth_fixture(heads: int):
    """The REFERENCE_FIXTURE inputs on which `reference_tolerance` is measured: q, k, v (B, H, N, D)."""
    f = REFERENCE_FIXTURE
    gen = torch.Generator().manual_seed(f["seed"])
    shape = (f["batch"], heads, f["length"], f["head_dim"])
    q = _seeded(shape, gen) * f["qk_std"]  # (B, H, N, D)
    k = _seeded(shape, gen) * f["qk_std"]
    v = _seeded(shape, gen)
    return q, k, v
