"""`nystrom`: Xiong et al. 2021, "Nyströmformer: A Nyström-Based Algorithm for Approximating Self-Attention".

With m landmarks q̃, k̃ (segment means of the queries and of the keys), softmax attention is
approximated by three small softmax kernels and a pseudo-inverse:

    out = softmax(q k̃ᵀ/√d) · pinv(softmax(q̃ k̃ᵀ/√d)) · (softmax(q̃ kᵀ/√d) · v)
            (Nq, m)              (m, m)                     (m, Nk) (Nk, Dv)

O(N·m·d) time and O(N·m) memory; no N x N matrix exists anywhere. pinv is the paper's iterative
Moore-Penrose approximation (`pinv_iterations` Newton-Schulz steps). Everything is computed in fp32
whatever the input dtype (the iteration is unstable in half precision) and cast back.

- Landmarks: position j of a length-N sequence belongs to segment ⌊j·m/N⌋ (sizes differ by at most
  one, so N need not be a multiple of m). Key landmarks are *masked* segment means: padded keys
  are left out and only real keys are counted. A segment with no real key gives no landmark: it is
  excluded from the softmaxes over landmarks and from the pseudo-inverse. In self-attention
  (Nq == Nk) the key padding mask also keeps padded queries out of the query landmarks, so padded
  content cannot reach real outputs. Padded keys are excluded from softmax(q̃ kᵀ); a sequence with
  no real key gives zeros.
- When min(Nq, Nk) <= landmarks the approximation buys nothing: the exact masked softmax is
  computed instead (at most min(Nq, Nk)·max(Nq, Nk) <= N·m scores), so short inputs are exact.
- Optional depthwise convolution over the (padding-zeroed) values along the sequence,
  `conv_kernel` taps per head, added to the output as in the paper's code (0 = off; self-attention only).
- Causal masking is not supported: the landmarks mix past and future positions, and there is no
  leak-free formulation (the xformers `causal` flag leaked the future).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import (
    Attention,
    Capabilities,
    Range,
    allowed_keys,
    fp32_accumulation,
    masked_softmax,
    zero_padded_keys,
)
from attnlab.attention.registry import register_attention


def segment_means(x: Tensor, segments: int, real: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Masked segment means. x (B, H, N, D), real (B, N) True = counted (None = all) ->
    landmarks (B, H, m, D) and a (B, m) bool, True where the segment holds at least one counted position
    (None when every position counts: with N >= m no segment is then empty)."""
    B, H, N, D = x.shape
    if real is None and N % segments == 0:  # equal contiguous segments: a plain reduction
        # sum, then scale the (m, D) result: mean's backward would materialise an (N, D) gradient,
        # sum's is a broadcast view that the input's gradient accumulation reads directly
        return x.view(B, H, segments, N // segments, D).sum(dim=-2).mul_(segments / N), None
    segment = torch.arange(N, device=x.device) * segments // N  # (N,) segment of each position
    member = F.one_hot(segment, segments).to(x.dtype)  # (N, m)
    if real is None:
        return (member.T @ x) / member.sum(dim=0)[:, None], None  # (B, H, m, D)
    counted = real.to(x.dtype)  # (B, N)
    sums = member.T @ (x * counted[:, None, :, None])  # (B, H, m, D)
    counts = counted @ member  # (B, m)
    means = sums / counts.clamp_min(1.0)[:, None, :, None]  # (B, H, m, D)
    return means, counts > 0


def iterative_pinv(a: Tensor, iterations: int) -> Tensor:
    """Moore-Penrose pseudo-inverse of a (..., m, m) by the Newton-Schulz iteration of the paper:

        Z₀ = aᵀ / (‖a‖₁ ‖a‖∞),   Z ← ¼ Z (13 I − aZ (15 I − aZ (7 I − aZ)))

    The scale is per matrix (the paper's code takes one over the batch); ‖a‖₂² <= ‖a‖₁‖a‖∞ makes the
    iteration converge, also for rank-deficient a (zero rows/columns of missing landmarks), and an
    all-zero a gives an all-zero pinv.
    """
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)  # (m, m)
    norm_1 = a.abs().sum(dim=-2).amax(dim=-1)  # (...,) largest column sum
    norm_inf = a.abs().sum(dim=-1).amax(dim=-1)  # (...,) largest row sum
    z = a.transpose(-2, -1) / (norm_1 * norm_inf).clamp_min(1e-12)[..., None, None]  # (..., m, m)
    for _ in range(iterations):
        az = a @ z  # (..., m, m)
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@register_attention("nystrom")
class NystromAttention(Attention):
    """Nyström approximation of softmax attention with segment-mean landmarks."""

    complexity = "O(N·m·d)"
    capabilities = Capabilities(causal=False, key_padding_mask=True, cross=True, incremental=False)
    # On base.REFERENCE_FIXTURE (N=64 > 32 landmarks, so the approximation runs): about twice the largest
    # difference from exact softmax measured over seeds (docs/measurements.md, "Reference tolerances").
    reference_tolerance = 0.08

    def __init__(
        self,
        *,
        heads: int,
        landmarks: Annotated[int, Range(ge=1, max_len_ratio=1)] = 32,
        pinv_iterations: Annotated[int, Range(ge=1)] = 6,
        conv_kernel: Annotated[int, Range(ge=1, odd=True, also=(0,))] = 0,
    ):
        super().__init__()
        self.landmarks, self.pinv_iterations, self.conv_kernel = landmarks, pinv_iterations, conv_kernel
        self.conv = None
        if conv_kernel:  # one depthwise filter per head, over the sequence (the paper's code)
            self.conv = nn.Conv2d(
                heads, heads, (conv_kernel, 1), padding=(conv_kernel // 2, 0), groups=heads, bias=False
            )

    @fp32_accumulation
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        nq, nk = q.shape[-2], k.shape[-2]
        if self.conv is not None and nq != nk:
            raise ValueError(
                f"attention.conv_kernel={self.conv_kernel} adds a convolution of the values to the output, which "
                f"needs equal query and key lengths (got Nq={nq}, Nk={nk}); use attention.conv_kernel=0 for cross attention"
            )
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 for half inputs: pinv is unstable in half
        q32, k32, v32 = q.to(acc), k.to(acc), v.to(acc)
        if min(nq, nk) <= self.landmarks:
            out = self._exact(q32, k32, v32, key_padding_mask)
        else:
            out = self._nystrom(q32, k32, v32, key_padding_mask)
        if self.conv is not None:
            values = zero_padded_keys(v32, key_padding_mask)  # (B, H, N, Dv)
            out = out + F.conv2d(
                values, self.conv.weight.to(acc), padding=self.conv.padding, groups=self.conv.groups
            )  # (B, H, N, Dv)
        return out.to(q.dtype)

    @staticmethod
    def _exact(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """Exact masked softmax attention, for inputs no longer than the landmark count."""
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk), min(Nq, Nk) <= m
        allowed = allowed_keys(
            q.shape[-2], k.shape[-2], causal=False, key_padding_mask=key_padding_mask, device=q.device
        )
        return masked_softmax(scores, allowed) @ v  # (B, H, Nq, Dv)

    def _nystrom(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        m = self.landmarks
        real_keys = None if key_padding_mask is None else ~key_padding_mask  # (B, Nk)
        real_queries = real_keys if q.shape[-2] == k.shape[-2] else None  # self-attention: same positions
        # The paper's code scales q and k by d^-¼ each; segment means are linear, so the whole 1/√d is
        # applied to the (m, D) landmarks instead of to two (N, D) tensors.
        q_land, q_present = segment_means(q, m, real_queries)  # (B, H, m, D), (B, m) or None
        k_land, k_present = segment_means(k, m, real_keys)  # (B, H, m, D), (B, m) or None
        scale = q.shape[-1] ** -0.5
        k_land_scaled = k_land * scale  # (B, H, m, D)
        if k_present is not None:
            k_present = k_present[:, None, None, :]  # (B, 1, 1, m) key landmarks that exist
        kernel_1 = masked_softmax(q @ k_land_scaled.transpose(-2, -1), k_present)  # (B, H, Nq, m)
        kernel_2 = masked_softmax(q_land @ k_land_scaled.transpose(-2, -1), k_present)  # (B, H, m, m)
        allowed = None if real_keys is None else real_keys[:, None, None, :]  # (B, 1, 1, Nk)
        kernel_3 = masked_softmax((q_land * scale) @ k.transpose(-2, -1), allowed)  # (B, H, m, Nk)
        if q_present is not None:  # missing query landmarks: zero rows
            q_present = q_present[:, None, :, None]  # (B, 1, m, 1)
            kernel_2 = kernel_2.masked_fill(~q_present, 0.0)
            kernel_3 = kernel_3.masked_fill(~q_present, 0.0)
        summary = kernel_3 @ v  # (B, H, m, Dv)
        return kernel_1 @ (iterative_pinv(kernel_2, self.pinv_iterations) @ summary)  # (B, H, Nq, Dv)
