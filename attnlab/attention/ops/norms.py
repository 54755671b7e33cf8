"""The per-vector normalisations around the recurrent family's ops, with hand-written backwards.

    unit_norm(x, silu)  f(x) / max(|f(x)|, eps) over the last dim, f = SiLU or the identity
                        (the delta rule's q, k: fla's qk_activation=silu, qk_norm=l2)
    rms_norm(x)         x · rsqrt(mean(x²) + eps) over the last dim (the heads' output_norm)

Same values as F.normalize(F.silu(x)) and x * torch.rsqrt(x.square().mean(-1) + eps). Autograd
through those records ~10 elementwise passes over (B, H, N, D) each way (for the delta rule's q and
k together they cost about as much as the whole causal `linear` kernel at N=4K on a CPU). Here each
direction is one pass in C for contiguous float32 CPU tensors (attention/linear_passes.c), else ~3
PyTorch ops forward and ~4 backward, reading back what the forward saved.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention.cpu import passes


class UnitNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, silu: bool, eps: float) -> Tensor:
        lib = passes._fused(x)
        ctx.fused, ctx.silu = lib is not None, silu
        if lib is not None:  # norm < 0 flags a row below eps
            y, norm = torch.empty_like(x), x.new_empty(x.shape[:-1])
            lib.unit_norm(
                passes._ptr(x), passes._ptr(y), passes._ptr(norm), int(silu), eps, norm.numel(), x.shape[-1]
            )
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
        if ctx.fused and passes._fused(dy.contiguous()) is not None:
            x, y, norm = ctx.saved_tensors
            dy, dx = dy.contiguous(), torch.empty_like(x)
            passes._fused(dy).unit_norm_backward(
                passes._ptr(dy),
                passes._ptr(x),
                passes._ptr(y),
                passes._ptr(norm),
                passes._ptr(dx),
                int(ctx.silu),
                norm.numel(),
                x.shape[-1],
            )
            return dx, None, None
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
        lib = passes._fused(x)
        if lib is not None:
            y, r = torch.empty_like(x), x.new_empty(*x.shape[:-1], 1)
            lib.rms_norm(passes._ptr(x), passes._ptr(y), passes._ptr(r), eps, r.numel(), x.shape[-1])
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
        lib = passes._fused(dy.contiguous(), y, r)
        if lib is not None:
            dy, dx = dy.contiguous(), torch.empty_like(y)
            lib.rms_norm_backward(
                passes._ptr(dy), passes._ptr(y), passes._ptr(r), passes._ptr(dx), r.numel(), y.shape[-1]
            )
            return dx, None
        along = torch.linalg.vecdot(y, dy).unsqueeze_(-1).div_(y.shape[-1])  # (..., 1)
        return (dy - y * along).mul_(r), None


def unit_norm(x: Tensor, *, silu: bool, eps: float) -> Tensor:
    """x (..., D) -> f(x) / max(|f(x)|, eps), f = SiLU when `silu`, else the identity."""
    return UnitNorm.apply(x, silu, eps)


def rms_norm(x: Tensor, *, eps: float) -> Tensor:
    """x (..., D) -> x · rsqrt(mean(x²) + eps) over the last dim."""
    return RMSNorm.apply(x, eps)
