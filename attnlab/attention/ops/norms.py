"""The per-vector normalisations around the recurrent family's ops.

    unit_norm(x, silu)  f(x) / max(|f(x)|, eps) over the last dim, f = SiLU or the identity
                        (the delta rule's q, k: fla's qk_activation=silu, qk_norm=l2)
    rms_norm(x)         x · rsqrt(mean(x²) + eps) over the last dim (the heads' output_norm)

unit_norm is F.normalize(F.silu(x)) under autograd: of the PyTorch forms measured against a one-pass C
kernel, plain autograd was the fastest eager one, and the C kernel was not 1.3x faster than that line
compiled, so the C went (docs/c-passes.md). rms_norm keeps a hand-written backward: autograd through
x * torch.rsqrt(x.square().mean(-1) + eps), or F.rms_norm, records several elementwise passes over
(B, H, N, D) each way, each a full read and write of the tensor, which on a CPU is what such passes
cost; the Function below runs ~3 PyTorch ops forward and ~4 backward, reading back what the forward
saved (docs/c-passes.md, the rms_norm row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


class RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, eps: float) -> Tensor:
        mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1])
        r = mean_square.add_(eps).rsqrt_()  # (..., 1)
        y = x * r
        ctx.save_for_backward(y, r)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dy: Tensor) -> tuple[Tensor, None]:
        y, r = ctx.saved_tensors  # dx = r (dy - y mean(dy·y))
        along = torch.linalg.vecdot(y, dy).unsqueeze_(-1).div_(y.shape[-1])  # (..., 1)
        return (dy - y * along).mul_(r), None


def unit_norm(x: Tensor, *, silu: bool, eps: float) -> Tensor:
    """x (..., D) -> f(x) / max(|f(x)|, eps), f = SiLU when `silu`, else the identity."""
    return F.normalize(F.silu(x) if silu else x, dim=-1, eps=eps)


def rms_norm(x: Tensor, *, eps: float) -> Tensor:
    """x (..., D) -> x · rsqrt(mean(x²) + eps) over the last dim."""
    return RMSNorm.apply(x, eps)
