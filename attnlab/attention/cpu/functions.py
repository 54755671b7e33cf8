"""The autograd Functions that exist only for the C: both directions are C calls, so autograd needs
them written out. The ops that choose them (ops/window/chunk.py, variants/based.py) ask here once,
with the tensors of the call, and run their readable PyTorch form where the answer is None.

    window_kernels_for(geometry, q, k, v)   the kernels, if the window's C kernel takes this call
    BlockedWindowAttention                  `local`'s blocked sliding-window softmax (window_softmax.c)
    FusedBased                              based's causal kernel: its Taylor part's chunk loop (based.c)
                                            and its window, writing into the same gradients
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention import cpu

# The window kernel's working memory per thread grows as the window squared (a block's scores and their
# gradient, 2·C·W floats): past 16M floats (64 MB, a window of about 2K), the PyTorch path, which
# keeps no such buffer.
WINDOW_SCRATCH_FLOATS = 16 * 2**20


def window_kernels_for(geometry: list[int], *tensors: Tensor) -> ModuleType | None:
    """The C kernels if they take these (plain float32 CPU tensors, q, k, v first, and a window of
    working memory that fits), else None: the fast path, decided once per call. geometry: ops/window's
    window_plan."""
    q, v = tensors[0], tensors[2]
    c = cpu.kernels_for(*(t.detach() for t in tensors))
    fits = (
        c is not None and c.window_scratch_floats(geometry, q.shape[-1], v.shape[-1]) <= WINDOW_SCRATCH_FLOATS
    )
    return c if fits else None


def window_forward(
    q: Tensor, k: Tensor, v: Tensor, valid: Tensor | None, geometry: list[int], scale: float, kernels
) -> tuple[Tensor, Tensor]:
    """The C kernel's forward on contiguous q, k (B, H, L, D), v (B, H, L, Dv): the output (B, H, L, Dv)
    and each query's log-sum-exp (B, H, L), which its backward (the kernels' window_attention_backward,
    which adds its gradients into the dq, dk and dv it is given) takes. `kernels`: window_kernels_for's."""
    B, H, L, D = q.shape
    out, lse = q.new_empty(B, H, L, v.shape[-1]), q.new_empty(B, H, L)
    kernels.window_attention_forward(q, k, v, valid, out, lse, scale, geometry)
    return out, lse


class BlockedWindowAttention(torch.autograd.Function):
    """ops/window/chunk.py's blocked attention in C, for plain float32 CPU tensors (window_softmax.c,
    through the custom ops of kernels.py, which come with their FLOP formulas): each block of C
    queries against only its window's keys that lie in the sequence, the scores of a block formed,
    masked and normalised in cache, never a padded (C, W) mask nor window copies of k and v; the
    backward recomputes the scores from the saved log-sum-exp (FlashAttention's scheme). q, k
    (B, H, L, D), v (B, H, L, Dv), L a multiple of C; valid (B, L) 1 for a real key, or None."""

    @staticmethod
    def forward(ctx: FunctionCtx, q, k, v, valid, geometry: list[int], scale: float, kernels) -> Tensor:
        q, k, v = (t.contiguous() for t in (q, k, v))
        out, lse = window_forward(q, k, v, valid, geometry, scale, kernels)
        ctx.save_for_backward(q, k, v, valid, out, lse)
        ctx.geometry, ctx.scale, ctx.kernels = geometry, scale, kernels
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor):
        q, k, v, valid, out, lse = ctx.saved_tensors
        # the kernel adds its gradients into dq, dk, dv
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        d_out = d_out.contiguous()
        ctx.kernels.window_attention_backward(
            q, k, v, valid, out, lse, d_out, dq, dk, dv, ctx.scale, ctx.geometry
        )
        return dq, dk, dv, None, None, None, None


class FusedBased(torch.autograd.Function):
    """based's causal kernel on plain float32 CPU tensors, its two parts in one Function: the Taylor
    part's chunk loop (ops/based/chunk.py's form, in based.c) and the window's blocked kernel
    (BlockedWindowAttention's), both in C, write their gradients into the same dq, dk and dv. As two
    Functions, each wrote its own and autograd added them: three (B, H, N, D)-sized additions and two
    zeroed buffers (docs/measurements.md). q, k (B, H, L, D), v (B, H, L, Dv) contiguous, L a multiple
    of the chunk and of the window's block; the projections (f, D); valid (B, L) 1 for a real key, or
    None; scale the Taylor part's, eps its normaliser's."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        q,
        k,
        v,
        q_weight,
        k_weight,
        valid,
        scale: float,
        eps: float,
        chunk: int,
        geometry,
        kernels,
    ):
        B, H, L, D = q.shape
        G, nc = B * H, L // chunk
        q_proj = q_weight * scale  # (f, D): the Taylor part's queries come pre-scaled
        fq, fk = q @ q_proj.T, k @ k_weight.T  # (B, H, L, f)
        if valid is None:
            keep = q.new_ones(G, nc, chunk)
        else:
            keep = valid[:, None].expand(B, H, L).reshape(G, nc, chunk).contiguous()  # (G, nc, C)
        blocks = [t.view(G, nc, chunk, -1) for t in (fq, fk, v)] + [keep]
        out_t, den, states = kernels.based_chunks_forward(*blocks, eps)  # (G, nc, C, ·)
        out_w, lse = window_forward(q, k, v, valid, geometry, D**-0.5, kernels)  # (B, H, L, Dv)
        ctx.save_for_backward(q, k, v, q_proj, k_weight, fq, fk, keep, valid, out_t, den, states, out_w, lse)
        ctx.geometry, ctx.scale, ctx.kernels = geometry, scale, kernels
        return out_w + out_t.view(out_w.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor):
        q, k, v, q_proj, k_weight, fq, fk, keep, valid, out_t, den, states, out_w, lse = ctx.saved_tensors
        B, H, L, D = q.shape
        G, nc, chunk = keep.shape
        f = fq.shape[-1]
        d_out = d_out.contiguous()
        d_fq, d_fk, dv = torch.empty_like(fq), torch.empty_like(fk), torch.empty_like(v)
        blocks = [t.view(G, nc, chunk, -1) for t in (fq, fk, v)] + [keep, out_t, den, states]
        grads = [t.view(G, nc, chunk, -1) for t in (d_out, d_fq, d_fk, dv)]
        ctx.kernels.based_backward_loop(*blocks, *grads)  # the Taylor part: d_fq, d_fk, dv written
        dq, dk = d_fq @ q_proj, d_fk @ k_weight  # (B, H, L, D)
        window = (q, k, v, valid, out_w, lse, d_out, dq, dk, dv, D**-0.5, ctx.geometry)
        ctx.kernels.window_attention_backward(*window)  # the window's gradients, added in
        d_q_weight = (d_fq.view(-1, f).T @ q.view(-1, D)).mul_(ctx.scale)  # (f, D)
        d_k_weight = d_fk.view(-1, f).T @ k.view(-1, D)
        return dq, dk, dv, d_q_weight, d_k_weight, None, None, None, None, None, None
