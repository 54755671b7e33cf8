"""`performer`: FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers").

softmax(q·k/√d) is estimated without bias by positive orthogonal random features: with
x = q / d^¼, y = k / d^¼ and r rows w of an orthogonal random projection W (r, d),

    phi(x) = exp(W x - |x|²/2) / √r,        E[phi(x)·phi(y)] = exp(x·y) = exp(q·k/√d),

and the attention is then linear attention with phi: O(N·r·d) time, O(N·r) memory. Causal mode
reuses the chunked prefix-sum kernel of `linear` (attention/ops/linear/chunk.py, chunks of `chunk_size`
positions: an O(N·C·r) in-chunk part, O(N/C · r·d) carried sums); decoding keeps the
running sums Σ phi(k) vᵀ and Σ phi(k) as its state, O(r·d) per generated token.

Stabilisers. Features are computed in fp32 whatever the input dtype, and the exponent is shifted
before exp so nothing overflows; a shift cancels in numerator/denominator only if every key a
query sees gets the SAME shift:
- queries: the per-row max over features (each query's own constant, cancels in its own ratio);
- keys, non-causal: the max over every real (unpadded) key and feature of the (batch, head),
  gradient stopped. Padded keys are left out, so their content cannot move the real outputs.
- keys, causal and decoding: a max over the whole sequence would let the future scale the past
  (it cancels only up to round-off, underflow and the denominator guard, i.e. a numerical leak),
  so the shift is a DATA-INDEPENDENT constant fixed by W alone. Completing the square,
  w·y - |y|²/2 = (|w|² - |y - w|²)/2 <= |w|²/2, so with c = max_r |w_r|²/2 - 60 (never below 0)
  every key feature is <= e^60 whatever the input (sums stay finite in fp32 for N·|v| < 1e12): no
  overflow, the same constant for the causal forward and for step-by-step decoding, and no
  information from any other position. Typical key features sit near e^-c (c = 0 up to d = 64,
  ≈20 at d = 128, ≈97 at d = 256 with 128 features): fine in fp32 up to d = 128; from d = 256 on
  they underflow and CAUSAL outputs degrade (to zeros) - a known limit of this stabiliser.
The denominator guard is fp32's smallest normal number, not an `eps`, so it never biases the
(possibly tiny, shifted) sums; a query with no visible key gives zeros.

reference_tolerance = 0.3 (max abs output difference from exact softmax attention on the
conformance suite's smooth-input fixture, base.REFERENCE_FIXTURE: head_dim 16, default 128
features, seed 0), set above the largest error measured there over fixture/projection seeds (the
figures: docs/measurements.md, "Reference tolerances"). The causal error is the larger: it sits in the
first positions, whose outputs average only a few values, so a kernel error of a few percent moves
them most. With 128 features FAVOR+ is only a loose estimate of softmax (uniform averaging is not far
off on the same inputs); its error shrinks like 1/√features and grows fast with |q|·|k|.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities, Range, State, fp32_accumulation
from attnlab.attention.ops.linear.chunk import (
    causal_linear_attention,
    linear_attention,
    running_outer_sum,
    sum_attention,
)
from attnlab.attention.registry import register_attention

# Key features are bounded by e^HEADROOM in causal mode (see the module docstring).
HEADROOM = 60.0
# Denominator guard: no bias on shifted sums, and 0/guard = 0 for queries that see no key.
GUARD = torch.finfo(torch.float32).tiny


def orthogonal_gaussian(features: int, dim: int, *, generator: torch.Generator | None = None) -> Tensor:
    """(features, dim) rows orthogonal within each block of `dim`, norms of Gaussian vectors (FAVOR+)."""
    blocks = []
    device = None if generator is None else generator.device  # a seeded draw: the generator's device
    for _ in range(math.ceil(features / dim)):
        gaussian = torch.randn(dim, dim, generator=generator, device=device)  # (d, d)
        q, r = torch.linalg.qr(gaussian)  # (d, d) orthonormal columns
        q = q * torch.sign(torch.diagonal(r))  # sign fix: makes q Haar-distributed (rows isotropic)
        blocks.append(q.T)  # (d, d) orthonormal rows
    directions = torch.cat(blocks, dim=0)[:features]  # (r, d)
    norms = torch.randn(features, dim, generator=generator, device=device).norm(dim=1, keepdim=True)  # (r, 1)
    return directions * norms  # (r, d): each row marginally N(0, I), rows of a block orthogonal


def causal_shift(projection: Tensor) -> Tensor:
    """The data-independent key shift of causal mode: max_r |w_r|²/2 - HEADROOM, at least 0."""
    return (projection.square().sum(dim=-1).amax() / 2 - HEADROOM).clamp_min(0.0)


@register_attention("performer")
class PerformerAttention(Attention):
    """FAVOR+ positive orthogonal random features approximating softmax attention."""

    complexity = "O(N·r·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=True, incremental=True)
    reference_tolerance = 0.3  # see the module docstring (the measured errors: docs/measurements.md)

    def __init__(
        self,
        *,
        head_dim: int,
        features: Annotated[int, Range(ge=1, max_len_ratio=4)] = 128,
        redraw: bool = False,
        seed: int = 0,
        chunk_size: Annotated[int, Range(ge=1)] = 64,
    ):
        super().__init__()
        self.head_dim, self.features, self.redraw, self.seed, self.chunk_size = (
            head_dim,
            features,
            redraw,
            seed,
            chunk_size,
        )
        generator = torch.Generator().manual_seed(seed)
        # A buffer: saved in the state_dict, moved with .to(), never trained.
        self.register_buffer(
            "projection", orthogonal_gaussian(features, head_dim, generator=generator)
        )  # (r, d)
        self.projection: Tensor

    @classmethod
    def parameter_count(cls, params, *, heads, head_dim):
        return params["features"] * head_dim  # the projection buffer (saved, not trained)

    @classmethod
    def working_memory(cls, params, *, batch, heads, length, head_dim):
        return 2 * batch * heads * length * params["features"]  # phi(q), phi(k): (B, H, N, features)

    def _exponents(self, x: Tensor) -> Tensor:
        """x (B, H, N, d) -> exponents W x' - |x'|²/2 with x' = x / d^¼, at least fp32: (B, H, N, r).

        The d^¼ scale is folded into W (r x d) and |x'|² taken as a norm, so the only (N, r) tensor
        is the matmul's own output; the features are then finished in place on it (the callers'
        shifts and exp), which autograd allows since the matmul's backward does not need its output.
        """
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # (B, H, N, d)
        scale = x.shape[-1] ** -0.25
        exponents = x @ (self.projection.to(x.dtype) * scale).T  # (B, H, N, r)
        # (B, H, N, 1)
        half_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() * (scale**2 / 2)
        return exponents.sub_(half_square)

    def _query_features(self, q: Tensor) -> Tensor:
        """phi(q) up to a constant factor: exp(exponents - max over features). The 1/√r of the
        estimator and the per-query shift scale a query's numerator and denominator alike, so they
        are left out."""
        exponents = self._exponents(q)  # (B, H, Nq, r)
        with torch.no_grad():
            shift = exponents.amax(dim=-1, keepdim=True)  # (B, H, Nq, 1) per query: cancels
        return exponents.sub_(shift).exp_()  # (B, H, Nq, r)

    def _key_features(self, k: Tensor, key_padding_mask: Tensor | None, *, causal: bool) -> Tensor:
        """phi(k) up to a factor shared by every key a query sees (the 1/√r and the shift cancel)."""
        exponents = self._exponents(k)  # (B, H, Nk, r)
        if key_padding_mask is not None:  # padded keys: exactly zero features, no gradient, no influence
            exponents = exponents.masked_fill_(key_padding_mask[:, None, :, None], float("-inf"))
        if causal:  # the same constant for every position: nothing flows from the future
            shift = causal_shift(self.projection)  # ()
        else:  # one shift per (batch, head) over every real key and feature
            with torch.no_grad():
                shift = exponents.amax(dim=(-2, -1), keepdim=True)  # (B, H, 1, 1)
                shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))  # no real key: 0
        return exponents.sub_(shift).exp_()  # (B, H, Nk, r)

    @fp32_accumulation
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        if self.redraw and self.training:  # a fresh projection per training step (the paper's redraw),
            # from torch's global generator (seeded by the run), kept for evaluation; a new tensor, not
            # an in-place copy, so graphs of earlier forwards stay valid.
            self.projection = orthogonal_gaussian(self.features, self.head_dim).to(self.projection)
        phi_q = self._query_features(q)  # (B, H, Nq, r), fp32
        phi_k = self._key_features(k, key_padding_mask, causal=causal)  # (B, H, Nk, r), fp32
        v32 = v.to(phi_k.dtype)  # (B, H, Nk, Dv)
        if causal:
            out = causal_linear_attention(phi_q, phi_k, v32, self.chunk_size, GUARD)  # (B, H, N, Dv)
            return out.to(q.dtype)
        return linear_attention(phi_q, phi_k, v32, GUARD).to(q.dtype)  # (B, H, Nq, Dv)

    # ---- incremental decoding: running sums, like `linear` ------------------------------------------
    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        return {
            "kv": torch.zeros(
                batch, heads, self.features, head_dim, device=device, dtype=torch.float32
            ),  # (B, H, r, Dv)
            "k_sum": torch.zeros(
                batch, heads, self.features, device=device, dtype=torch.float32
            ),  # (B, H, r)
        }

    @fp32_accumulation
    def step(self, q: Tensor, k: Tensor, v: Tensor, state: State) -> tuple[Tensor, State]:
        phi_q = self._query_features(q)  # (B, H, 1, r)
        phi_k = self._key_features(k, None, causal=True)  # (B, H, 1, r), the causal constant shift
        kv = running_outer_sum(state["kv"], phi_k, v.float())  # (B, H, r, Dv)
        k_sum = state["k_sum"] + phi_k.squeeze(2)  # (B, H, r)
        denominator = (phi_q * k_sum.unsqueeze(2)).sum(-1, keepdim=True)  # (B, H, 1, 1)
        out = (phi_q @ kv) / (denominator + GUARD)  # (B, H, 1, Dv)
        return out.to(q.dtype), {"kv": kv, "k_sum": k_sum}

    # ---- cross attention while decoding: the memory's sums, computed once per source ----------------
    @fp32_accumulation
    def memory_state(self, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> State:
        phi_k = self._key_features(k, key_padding_mask, causal=False)  # (B, H, Nk, r), fp32
        return {
            "kv": phi_k.transpose(-2, -1) @ v.to(phi_k.dtype),
            "k_sum": phi_k.sum(2),
        }  # (B, H, r, Dv), (B, H, r)

    @fp32_accumulation
    def attend_memory(self, q: Tensor, memory: State) -> Tensor:
        return sum_attention(self._query_features(q), memory, GUARD).to(q.dtype)  # (B, H, Nq, Dv)
