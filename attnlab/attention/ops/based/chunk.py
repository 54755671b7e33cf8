"""Based's linear part (Arora et al. 2024): causal linear attention whose kernel is the 2nd-order
Taylor expansion of exp,

    κ(q, k) = 1 + s + s²/2,  s = scale · q·k          o_i = Σ_{j<=i} κ(q_i, k_j) v_j / (Σ_{j<=i} κ + eps)

(fla's `naive_parallel_based`, normalised). κ is a dot product of explicit features
φ(x) = [1, x, x_a x_b · c_ab (a <= b)] with c_aa = 1/√2 and c_ab = 1 otherwise: 1 + d + d(d+1)/2
features, the symmetric half of the d² products fla writes out (the same κ at ~half the cost).

The chunked form (ChunkBased) uses the features only for the state carried between chunks (running
sums of φ(k) [v, 1]ᵀ, numerator and denominator together); inside a chunk it evaluates κ directly
from s = q·k, a C x C x d product instead of C x C x (1 + d + d(d+1)/2). Its backward is written out.
On CPU float32 one C loop per sequence runs it chunk by chunk, each chunk's features formed in cache
and never written out (cpu/based.c); elsewhere batched products
over all chunks, with the features written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention import cpu
from attnlab.attention.ops.passes import inclusive_scan_, taylor_features_backward
from attnlab.attention.ops.passes import taylor_features as _taylor_features


def taylor_features(x: Tensor) -> Tensor:
    """x (..., d) -> φ(x) (..., 1 + d + d(d+1)/2), with φ(q)·φ(k) = 1 + q·k + (q·k)²/2."""
    return TaylorFeatures.apply(x)


class TaylorFeatures(torch.autograd.Function):
    """φ and its derivative, written out (ops/passes.py: one broadcast product per row of pairs);
    gathering x[..., a] * x[..., b] with index tensors and autograd's
    index_put backward scatter element by element (timings: docs/measurements.md)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return _taylor_features(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_phi: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return taylor_features_backward(d_phi, x)


class ChunkBased(torch.autograd.Function):
    """Causal normalised Taylor linear attention by chunks: q (pre-scaled), k (G, nc, C, d), v
    (G, nc, C, Dv), keep (G, nc, C, 1) 1 for real keys, 0 for padded ones -> (G, nc, C, Dv).

    [numerator, denominator] = κ-masked in-chunk scores @ [v, 1] + φ(q) @ Z_c, with Z_c the sum over
    earlier chunks of φ(k)ᵀ [v, 1] (F, Dv + 1). On CPU float32 one C loop per sequence does it all,
    chunk by chunk, with each chunk's features formed in cache and Z_c kept there (cpu/based.c);
    elsewhere batched products over all chunks, Z_c formed by an in-place prefix scan over chunks."""

    @staticmethod
    def forward(ctx: FunctionCtx, q, k, v, keep, eps: float):
        G, nc, C, d = q.shape
        Dv = v.shape[-1]
        c = cpu.kernels_for(q, k, v, keep)  # the fast path, decided once: one C loop per sequence
        ctx.kernels = c
        if c is not None:
            out, den, states = c.based_chunks_forward(q, k, v, keep.view(G, nc, C), eps)
            ctx.save_for_backward(q, k, v, keep, out, den, states)
            return out
        v1 = v.new_empty(G, nc, C, Dv + 1)  # [v, 1], zero for padded keys
        torch.mul(v, keep, out=v1[..., :Dv])
        v1[..., Dv:] = keep
        phi_q, phi_k = _taylor_features(q), _taylor_features(k)  # (G, nc, C, F)
        F_ = phi_q.shape[-1]
        flat = G * nc
        # Z_c = Σ over chunks before c of φ(k)ᵀ [v, 1]: chunk c-1's write in slot c (a one-chunk shift
        # over the flat axis), each head's first slot zeroed, then an inclusive scan per head.
        Z = q.new_empty(flat, F_, Dv + 1)
        torch.bmm(phi_k.view(flat, C, F_)[:-1].transpose(1, 2), v1.view(flat, C, Dv + 1)[:-1], out=Z[1:])
        Z.view(G, nc, -1)[:, 0].zero_()
        inclusive_scan_(Z.view(G, nc, -1))
        s = torch.matmul(q, k.transpose(-2, -1))  # (G, nc, C, C)
        kappa = (s * s).mul_(0.5).add_(s).add_(1.0).tril_()  # causal κ = 1 + s + s²/2
        nd = torch.bmm(phi_q.view(flat, C, F_), Z).baddbmm_(kappa.view(flat, C, C), v1.view(flat, C, Dv + 1))
        den = nd[..., Dv:].add_(eps)  # (flat, C, 1)
        out = nd[..., :Dv].div_(den)  # (flat, C, Dv)
        ctx.save_for_backward(q, k, v1, keep, Z, s, kappa, out, den)
        return out.view(G, nc, C, Dv)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor):
        if ctx.kernels is not None:
            q, k, v, keep, out, den, states = ctx.saved_tensors
            dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
            saved = (q, k, v, keep.view(keep.shape[:-1]), out, den, states)
            ctx.kernels.based_backward_loop(*saved, d_out.contiguous(), dq, dk, dv)
            return dq, dk, dv, None, None
        q, k, v1, keep, Z, s, kappa, out, den = ctx.saved_tensors
        G, nc, C, d = q.shape
        Dv = v1.shape[-1] - 1
        flat = G * nc
        phi_q, phi_k = _taylor_features(q), _taylor_features(k)
        F_ = phi_q.shape[-1]
        d_nd = d_out.new_empty(flat, C, Dv + 1)  # d loss / d [numerator, denominator]
        torch.div(d_out.reshape(flat, C, Dv), den, out=d_nd[..., :Dv])
        torch.linalg.vecdot(d_nd[..., :Dv], out, out=d_nd[..., Dv])
        d_nd[..., Dv].neg_()
        # carried part: dW_c = Σ over chunks after c of φ(q)ᵀ d_nd (the mirror of the forward's scan)
        dW = q.new_empty(flat, F_, Dv + 1)
        torch.bmm(phi_q.view(flat, C, F_)[1:].transpose(1, 2), d_nd[1:], out=dW[:-1])
        dW.view(G, nc, -1)[:, -1].zero_()
        inclusive_scan_(dW.view(G, nc, -1), reverse=True)
        d_phi_q = torch.bmm(d_nd, Z.transpose(1, 2))  # (flat, C, F)
        d_phi_k = torch.bmm(v1.view(flat, C, Dv + 1), dW.transpose(1, 2))  # (flat, C, F)
        d_v1 = torch.bmm(phi_k.view(flat, C, F_), dW)  # (flat, C, Dv + 1)
        # in-chunk part: κ(s) = 1 + s + s²/2 under the causal mask
        d_v1.baddbmm_(kappa.view(flat, C, C).transpose(1, 2), d_nd)
        d_s = torch.bmm(d_nd, v1.view(flat, C, Dv + 1).transpose(1, 2)).tril_()  # d loss / d κ
        d_s.mul_(s.view(flat, C, C).add(1.0))  # (flat, C, C)
        dq = torch.bmm(d_s, k.view(flat, C, d)).add_(taylor_features_backward(d_phi_q, q.view(flat, C, d)))
        dk = torch.bmm(d_s.transpose(1, 2), q.view(flat, C, d))
        dk.add_(taylor_features_backward(d_phi_k, k.view(flat, C, d)))
        dv = d_v1[..., :Dv].mul(keep.view(flat, C, 1))
        return dq.view(G, nc, C, d), dk.view(G, nc, C, d), dv.view(G, nc, C, Dv), None, None


def chunk_based(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    eps: float = 1e-6,
    chunk_size: int = 64,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """The chunked parallel form: q, k (B, H, N, d), v (B, H, N, Dv) -> (B, H, N, Dv); padded keys
    (key_padding_mask (B, N), True = padding) count for nothing. Positions are padded at the end to a
    multiple of the chunk (padded keys too: they come after every real query)."""
    B, H, N, d = q.shape
    Dv = v.shape[-1]
    C = min(chunk_size, N)
    pad = (-N) % C
    keep = (
        q.new_ones(B, 1, N, 1)
        if key_padding_mask is None
        else (~key_padding_mask)[:, None, :, None].to(q.dtype)
    )
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        keep = F.pad(keep, (0, 0, 0, pad))  # (B, 1, N + pad, 1)
    nc, G = (N + pad) // C, B * H
    keep = keep.expand(B, H, N + pad, 1).reshape(G, nc, C, 1).contiguous()
    out = ChunkBased.apply(
        (q * scale).reshape(G, nc, C, d),
        k.reshape(G, nc, C, d).contiguous(),
        v.reshape(G, nc, C, Dv).contiguous(),
        keep,
        eps,
    )  # (G, nc, C, Dv)
    return out.reshape(B, H, nc * C, Dv)[:, :, :N]
