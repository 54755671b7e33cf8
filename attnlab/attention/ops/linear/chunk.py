"""The kernels behind `linear` and `performer`: linear attention with hand-written backwards.

    out_i = phi(q_i) · Σ_j phi(k_j) v_jᵀ  /  (phi(q_i) · Σ_j phi(k_j) + eps)      (causal: j <= i)

Why not plain autograd: on a CPU this computation is bound by memory traffic as much as by its
matmuls, and a fresh tensor costs page faults on first touch. Autograd's version allocates and fills
one for every intermediate and every gradient accumulation (feature-map derivatives, divisions,
the cat of a ones column, pads, tril copies, cumsum and its flipped backward, the sum of each
input's gradient contributions). Here each backward is written out: products accumulate into their
output (`baddbmm_`), carried sums are scanned in place, the feature map's derivative is applied in
place, and padded keys are zeroed in place. The elementwise passes between the products are in
ops/passes.py, each written in as few in-place passes as eager PyTorch allows. (These passes had C
forms; they were deleted because they were not 1.3x faster than this PyTorch: docs/c-passes.md.)
Measured speed-ups over the autograd version: docs/measurements.md.

Causal mode runs chunk by chunk: inside a chunk of C positions a masked C x C product; across chunks
the carried sums S_c = Σ_{chunks before c} phi(k)ᵀ v (D x Dv) and z_c = Σ phi(k) (D), formed in place
by a prefix scan. Per (batch, head): (N/C)·D·Dv floats of state, i.e. O(N·d) for C >= d; never an
(N, D, Dv) tensor. Causality is exact, not up to round-off: the carried sum of chunk c is summed from
the earlier chunks only (no `total - own chunk` subtraction), in the forward and, mirrored, in the
backward.

With `feature_map` ("elu": elu+1, "relu") the kernels take raw q and k and apply (and differentiate)
the map themselves; with None, q and k are already features (performer's random features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention.base import State
from attnlab.attention.ops.passes import (
    add_rows_tril_,
    elu_plus_one,
    feature_grad_,
    grad_prologue,
    inclusive_scan_,
    normalize_,
    tril_rowsum_,
)


def relu(x: Tensor) -> Tensor:
    return F.relu(x.contiguous()) if not x.is_contiguous() else F.relu(x)


FEATURES = {"elu": elu_plus_one, "relu": relu}


def _features(
    q: Tensor, k: Tensor, feature_map: str | None, key_padding_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(phi(q), phi(k)) with padded keys' features zeroed (in place when the tensor is ours)."""
    if feature_map is not None:
        q, k = FEATURES[feature_map](q), FEATURES[feature_map](k)
    if key_padding_mask is not None:
        padded = key_padding_mask[:, None, :, None]  # (B, 1, Nk, 1)
        k = k.masked_fill_(padded, 0.0) if feature_map is not None else k.masked_fill(padded, 0.0)
    return q, k


def _zero_padded_keys_(ctx: FunctionCtx, dk: Tensor | None) -> None:
    """Padded keys get no gradient (their features were zeroed); dk in (B, H, Nk, D) memory order."""
    mask = ctx.key_padding_mask  # (B, Nk) or None
    if dk is not None and mask is not None:
        dk.view(mask.shape[0], -1, mask.shape[1], dk.shape[-1]).masked_fill_(mask[:, None, :, None], 0.0)


def _input_grads(
    grads: tuple[Tensor | None, ...], shapes: tuple[tuple[int, ...], ...]
) -> tuple[Tensor | None, ...]:
    """The backward's (dq, dk, dv), each viewed as its input's shape (None where not requested)."""
    return tuple(None if g is None else g.view(shape) for g, shape in zip(grads, shapes, strict=True))


class NonCausalLinearAttention(torch.autograd.Function):
    """Non-causal: q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv) -> (B, H, Nq, Dv)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        eps: float,
        feature_map: str | None,
        key_padding_mask: Tensor | None,
    ) -> Tensor:
        B, H, Nq, D = q.shape
        Nk, Dv = k.shape[2], v.shape[-1]
        q, k = _features(q, k, feature_map, key_padding_mask)
        qf, kf, vf = q.reshape(B * H, Nq, D), k.reshape(B * H, Nk, D), v.reshape(B * H, Nk, Dv)
        kv = torch.bmm(kf.transpose(1, 2), vf)  # (BH, D, Dv)
        k_sum = kf.sum(dim=1).unsqueeze(-1)  # (BH, D, 1)
        den = torch.bmm(qf, k_sum).add_(eps)  # (BH, Nq, 1)
        out = torch.bmm(qf, kv).div_(den)  # (BH, Nq, Dv)
        ctx.save_for_backward(qf, kf, vf, kv, k_sum, den, out)
        ctx.feature_map, ctx.key_padding_mask, ctx.sizes = (
            feature_map,
            key_padding_mask,
            (B, H, Nq, Nk, D, Dv),
        )
        return out.view(B, H, Nq, Dv)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        qf, kf, vf, kv, k_sum, den, out = ctx.saved_tensors
        B, H, Nq, Nk, D, Dv = ctx.sizes
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad_num = grad.reshape(B * H, Nq, Dv) / den  # (BH, Nq, Dv)
        grad_den = torch.linalg.vecdot(grad_num, out).neg_().unsqueeze(-1)  # (BH, Nq, 1)
        dq = dk = dv = None
        if need_q:
            # (BH, Nq, D)
            dq = torch.bmm(grad_num, kv.transpose(1, 2)).baddbmm_(grad_den, k_sum.transpose(1, 2))
        if need_k or need_v:
            d_kv = torch.bmm(qf.transpose(1, 2), grad_num)  # (BH, D, Dv)
        if need_k:
            d_k_sum = torch.bmm(qf.transpose(1, 2), grad_den)  # (BH, D, 1)
            dk = torch.bmm(vf, d_kv.transpose(1, 2)).add_(d_k_sum.transpose(1, 2))  # (BH, Nk, D)
        if need_v:
            dv = torch.bmm(kf, d_kv)  # (BH, Nk, Dv); zero rows for padded keys (their features are 0)
        _zero_padded_keys_(ctx, dk)
        for d, phi in ((dq, qf), (dk, kf)):  # grad w.r.t. the features -> w.r.t. the raw inputs
            if d is not None:
                feature_grad_(d, None, None, phi, ctx.feature_map, spare=[grad_num])
        return (*_input_grads((dq, dk, dv), ((B, H, Nq, D), (B, H, Nk, D), (B, H, Nk, Dv))), None, None, None)


class ChunkedCausalLinearAttention(torch.autograd.Function):
    """Causal: q, k (B, H, N, D), v (B, H, N, Dv) -> (B, H, N, Dv), N a multiple of `chunk`."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        chunk: int,
        eps: float,
        feature_map: str | None,
        key_padding_mask: Tensor | None,
    ) -> Tensor:
        B, H, N, D = q.shape
        Dv = v.shape[-1]
        heads, nc = B * H, N // chunk
        G = heads * nc  # chunks over every (batch, head)
        q, k = _features(q, k, feature_map, key_padding_mask)
        qc, kc, vc = q.reshape(G, chunk, D), k.reshape(G, chunk, D), v.reshape(G, chunk, Dv)
        # Carried sums. Slot g takes chunk g-1's phi(k)ᵀv (a one-chunk shift over the flat (B·H·nc)
        # axis); each head's first slot, which received the previous head's last chunk, is zeroed;
        # an inclusive scan per head then leaves in slot c the sum over chunks 0..c-1.
        state = qc.new_empty(G, D, Dv)  # (G, D, Dv)
        torch.bmm(kc[:-1].transpose(1, 2), vc[:-1], out=state[1:])
        state.view(heads, nc, D * Dv)[:, 0].zero_()
        inclusive_scan_(state.view(heads, nc, D * Dv))
        state_k = qc.new_empty(G, D, 1)  # (G, D, 1): Σ phi(k) over the earlier chunks
        torch.sum(kc[:-1], dim=1, out=state_k[1:, :, 0])
        state_k.view(heads, nc, D)[:, 0].zero_()
        inclusive_scan_(state_k.view(heads, nc, D))
        scores = torch.bmm(qc, kc.transpose(1, 2))  # (G, C, C) in-chunk
        in_chunk_den = tril_rowsum_(scores)  # (G, C, 1); scores now causal
        out = torch.bmm(qc, state).baddbmm_(scores, vc)  # (G, C, Dv) numerator
        den = normalize_(out, qc, state_k, in_chunk_den, eps)  # (G, C, 1); out /= den
        ctx.save_for_backward(qc, kc, vc, state, state_k, scores, den, out)
        ctx.sizes, ctx.feature_map, ctx.key_padding_mask = (B, H, N, D, Dv, nc), feature_map, key_padding_mask
        return out.view(B, H, N, Dv)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        qc, kc, vc, state, state_k, scores, den, out = ctx.saved_tensors
        B, H, N, D, Dv, nc = ctx.sizes
        G, C = qc.shape[:2]
        heads = B * H
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        # (G, C, Dv) d loss / d numerator, (G, C, 1) d loss / d den = -Σ g·num / den²
        grad = grad.reshape(G, C, Dv)  # (G, C, Dv)
        grad_num, grad_den = grad_prologue(grad, den, out)
        dq = dk = dv = None
        # Backward of the carried sums: slot c holds Σ over chunks after c of phi(q)ᵀ grad (mirror of
        # the forward's shift and scan).
        dstate = qc.new_empty(G, D, Dv)  # (G, D, Dv)
        torch.bmm(qc[1:].transpose(1, 2), grad_num[1:], out=dstate[:-1])
        dstate.view(heads, nc, D * Dv)[:, -1].zero_()
        inclusive_scan_(dstate.view(heads, nc, D * Dv), reverse=True)
        if need_v:  # in-chunk part through the masked scores, carried part through the state
            dv = torch.bmm(kc, dstate).baddbmm_(scores.transpose(1, 2), grad_num)  # (G, C, Dv)
        if need_q or need_k:
            dscores = torch.bmm(grad_num, vc.transpose(1, 2))  # (G, C, C)
            add_rows_tril_(dscores, grad_den)  # the in-chunk denominator is the row sum of the scores
        if need_q:
            dq = torch.bmm(grad_num, state.transpose(1, 2)).baddbmm_(dscores, kc)  # (G, C, D)
        if need_k:
            dstate_k = qc.new_empty(G, 1, D)  # (G, 1, D) Σ over later chunks of grad_den·phi(q)
            torch.bmm(grad_den[1:].transpose(1, 2), qc[1:], out=dstate_k[:-1])
            dstate_k.view(heads, nc, D)[:, -1].zero_()
            inclusive_scan_(dstate_k.view(heads, nc, D), reverse=True)
            dk = torch.bmm(vc, dstate.transpose(1, 2)).baddbmm_(dscores.transpose(1, 2), qc)  # (G, C, D)
        spare = [grad_num, dstate] + ([dscores] if need_q or need_k else [])
        if dq is not None:  # + the carried denominator's term (an outer product), then phi'
            feature_grad_(dq, grad_den, state_k.view(G, 1, D), qc, ctx.feature_map, spare)
        if dk is not None:  # + the carried key sums' term, then phi'
            feature_grad_(dk, None, dstate_k, kc, ctx.feature_map, spare)
            _zero_padded_keys_(ctx, dk)
        shape = (B, H, N, D)
        return (*_input_grads((dq, dk, dv), (shape, shape, (B, H, N, Dv))), None, None, None, None)


def causal_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    chunk: int,
    eps: float,
    feature_map: str | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Causal linear attention, q, k (B, H, N, D), v (B, H, N, Dv) -> (B, H, N, Dv); padded keys
    (key_padding_mask (B, N), True = padding) count for nothing. Sequences are padded at the end to a
    multiple of the chunk: padded positions come after every real one, so they reach no real output."""
    N = q.shape[2]
    chunk = min(chunk, N)
    pad = (-N) % chunk
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, N + pad, ·)
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, pad), value=False)  # (B, N + pad)
    out = ChunkedCausalLinearAttention.apply(q, k, v, chunk, eps, feature_map, key_padding_mask)
    return out[:, :, :N] if pad else out  # (B, H, N, Dv)


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    eps: float,
    feature_map: str | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Non-causal linear attention, q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv) -> (B, H, Nq, Dv);
    padded keys (key_padding_mask (B, Nk), True = padding) count for nothing."""
    return NonCausalLinearAttention.apply(q, k, v, eps, feature_map, key_padding_mask)


# ---- decoding: one token at a time, and a fixed memory ------------------------------------------------
def running_outer_sum(kv: Tensor, phi_k: Tensor, v: Tensor) -> Tensor:
    """kv + phi_kᵀ v for one new token: kv (B, H, D, Dv), phi_k (B, H, 1, D), v (B, H, 1, Dv) -> (B, H, D, Dv),
    as one fused multiply-add (a single new tensor: the state is the largest thing a decoding step writes)."""
    B, H, D, Dv = kv.shape
    out = torch.baddbmm(kv.reshape(B * H, D, Dv), phi_k.reshape(B * H, D, 1), v.reshape(B * H, 1, Dv))
    return out.view(B, H, D, Dv)


def sum_attention(phi_q: Tensor, memory: State, eps: float) -> Tensor:
    """phi_q (B, H, Nq, D) over summed keys {"kv": (B, H, D, Dv), "k_sum": (B, H, D)} -> (B, H, Nq, Dv)."""
    denominator = phi_q @ memory["k_sum"].unsqueeze(-1)  # (B, H, Nq, 1)
    return (phi_q @ memory["kv"]) / (denominator + eps)
