"""The per-vector normalisations around the recurrent family's ops, with hand-written backwards.

    unit_norm(x, silu)  f(x) / max(|f(x)|, eps) over the last dim, f = SiLU or the identity
                        (the delta rule's q, k: fla's qk_activation=silu, qk_norm=l2)
    rms_norm(x)         x · rsqrt(mean(x²) + eps) over the last dim (the heads' output_norm)

Same values as F.normalize(F.silu(x)) and x * torch.rsqrt(x.square().mean(-1) + eps). Autograd
through those records ~10 elementwise passes over (B, H, N, D) each way, each a full read and write
of the tensor, which on a CPU is what such passes cost (docs/measurements.md). Here each
direction is one pass in C for contiguous float32 CPU tensors (cpu/elementwise.c), else ~3
PyTorch ops forward and ~4 backward, reading back what the forward saved.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention import cpu


class UnitNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, silu: bool, eps: float) -> Tensor:
        c = cpu.kernels_for(x)
        ctx.fused, ctx.silu = c is not None, silu
        if c is not None:  # norm < 0 flags a row below eps
            y, norm = c.unit_norm(x, silu, eps)
            ctx.save_for_backward(x, y, norm)
            return y
        s = torch.nn.functional.silu(x) if silu else x  # (..., D)
        norm = torch.linalg.vector_norm(s, dim=-1, keepdim=True)  # (..., 1)
        clamped = norm < eps  # F.normalize divides by max(|s|, eps): no projection there
        norm.clamp_(min=eps)
        y = s / norm
        ctx.save_for_backward(x if silu else None, y, norm, clamped)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dy: Tensor) -> tuple[Tensor, None, None]:
        c = cpu.kernels_for(dy.contiguous()) if ctx.fused else None
        if c is not None:
            x, y, norm = ctx.saved_tensors
            return c.unit_norm_backward(dy.contiguous(), x, y, norm, ctx.silu), None, None
        if ctx.fused:  # saved by the C pass, differentiated in PyTorch (a gradient of another dtype)
            x, y, signed = ctx.saved_tensors
            norm, clamped = signed.abs().unsqueeze(-1), (signed < 0).unsqueeze(-1)
            x = x if ctx.silu else None
        else:
            x, y, norm, clamped = ctx.saved_tensors
        along = torch.linalg.vecdot(y, dy).unsqueeze_(-1).masked_fill_(clamped, 0.0)  # (..., 1)
        ds = (dy - y * along).div_(norm)  # d loss / d s
        if x is None:
            return ds, None, None
        sig = torch.sigmoid(x)  # silu'(x) = σ(x) (1 + x (1 - σ(x)))
        return ds.mul_(sig).mul_(x * (1.0 - sig) + 1.0), None, None


class RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, eps: float) -> Tensor:
        c = cpu.kernels_for(x)
        if c is not None:
            y, r = c.rms_norm(x, eps)
            ctx.save_for_backward(y, r)
            return y
        mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1])
        r = mean_square.add_(eps).rsqrt_()  # (..., 1)
        y = x * r
        ctx.save_for_backward(y, r)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dy: Tensor) -> tuple[Tensor, None]:
        y, r = ctx.saved_tensors  # dx = r (dy - y mean(dy·y))
        c = cpu.kernels_for(dy.contiguous(), y, r)
        if c is not None:
            return c.rms_norm_backward(dy.contiguous(), y, r), None
        along = torch.linalg.vecdot(y, dy).unsqueeze_(-1).div_(y.shape[-1])  # (..., 1)
        return (dy - y * along).mul_(r), None


def unit_norm(x: Tensor, *, silu: bool, eps: float) -> Tensor:
    """x (..., D) -> f(x) / max(|f(x)|, eps), f = SiLU when `silu`, else the identity."""
    return UnitNorm.apply(x, silu, eps)


def rms_norm(x: Tensor, *, eps: float) -> Tensor:
    """x (..., D) -> x · rsqrt(mean(x²) + eps) over the last dim."""
    return RMSNorm.apply(x, eps)
