"""The elementwise passes of chunked causal linear attention (ops/linear/chunk.py) and of the chunked
forms that share them (the prefix-sum scan, Based's Taylor feature map), in PyTorch.

Between its matrix products the causal kernel runs about twenty elementwise passes over (N, d)-sized
tensors: the feature map, the causal mask, the normaliser, and their gradients. Each is written here in
as few in-place passes as eager PyTorch allows. (They had one-pass C forms; measured side by side, none
was 1.3x faster than the PyTorch here, so the C went: docs/c-passes.md.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _scan_steps(n: int) -> list[tuple[int, int, int]]:
    """(target, source, stride) triples of an in-place inclusive scan of length n (Blelloch's
    up-sweep, then its down-sweep for the inclusive result): x[target::stride] += x[source::stride],
    as many elements on each side. Within one step targets and sources never overlap."""
    steps, span = [], 1
    while span < n:  # up-sweep: each element at 2s-1 (mod 2s) takes in its left sibling's total
        steps.append((2 * span - 1, span - 1, 2 * span))
        span *= 2
    span //= 2
    while span >= 1:  # down-sweep: the totals flow right to the elements still missing them
        steps.append((3 * span - 1, 2 * span - 1, 2 * span))
        span //= 2
    return steps


def inclusive_scan_(x: Tensor, *, reverse: bool = False) -> Tensor:
    """In-place prefix sums of x (G, n, E) along dim 1: x[:, i] <- Σ_{j<=i} x[:, j] (reverse: j >= i).

    2·log2(n) strided in-place adds, no allocation (torch.cumsum along a middle dimension is several
    times slower on CPU and allocates its result). Each output sums only its own side of the sequence.
    """
    n = x.shape[1]
    for target, source, stride in _scan_steps(n):
        count = len(range(target, n, stride))
        if count == 0:
            continue
        span = stride * (count - 1) + 1
        if reverse:  # the same pairs on the mirrored index n - 1 - i
            target, source = n - target - span, n - source - span
        x[:, target : target + span : stride] += x[:, source : source + span : stride]
    return x


def elu_plus_one(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1 > 0, as a fresh contiguous tensor."""
    own = x.contiguous()  # a copy (ours to overwrite) when x is a strided view
    return F.elu_(own).add_(1.0) if own is not x else F.elu(x).add_(1.0)


def tril_rowsum_(scores: Tensor) -> Tensor:
    """scores (G, C, C) in place: zero above the diagonal; returns the row sums (G, C, 1)."""
    return scores.tril_().sum(dim=-1, keepdim=True)


def normalize_(out: Tensor, q: Tensor, zk: Tensor, rowsum: Tensor, eps: float) -> Tensor:
    """den = q · zk + rowsum + eps, then out /= den in place; returns den (G, C, 1).
    out (G, C, Dv), q (G, C, D), zk (G, D, 1), rowsum (G, C, 1)."""
    G, C, D = q.shape
    den = torch.linalg.vecdot(q, zk.view(G, 1, D)).unsqueeze_(
        -1
    )  # (G, C, 1); a bmm would be a matrix call per row
    den += rowsum
    den += eps
    out /= den
    return den


def grad_prologue(grad: Tensor, den: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
    """(grad / den, -Σ (grad / den)·out over the last dim): the gradients w.r.t. the numerator
    (G, C, Dv) and the denominator (G, C, 1) of out = numerator / den."""
    grad_num = grad / den
    return grad_num, torch.linalg.vecdot(grad_num, out).neg_().unsqueeze(-1)


def add_rows_tril_(dscores: Tensor, grad_den: Tensor) -> Tensor:
    """dscores (G, C, C) in place: + grad_den (G, C, 1) row-wise, then zero above the diagonal."""
    dscores += grad_den
    return dscores.tril_()


def feature_grad_(
    x: Tensor,
    scale: Tensor | None,
    vec: Tensor | None,
    phi: Tensor,
    feature_map: str | None,
    spare: list[Tensor],
) -> Tensor:
    """x (G, C, D) in place: += scale (G, C, 1; None: 1) times vec (G, 1, D; None: no term), then times
    the feature map's derivative read off phi = feature_map(input) (G, C, D). `spare`: buffers of the
    backward no longer needed, which the PyTorch version may overwrite (never a saved tensor: a
    retained graph stays valid)."""
    if vec is not None:
        x.addcmul_(scale, vec) if scale is not None else x.add_(vec)
    if feature_map == "elu":  # phi' = 1 for x > 0, exp(x) = phi otherwise: min(phi, 1)
        free = next((t for t in spare if t.numel() >= phi.numel() and t.is_contiguous()), None)  # viewed flat
        scratch = None if free is None else free.view(-1)[: phi.numel()].view_as(phi)
        x.mul_(torch.clamp(phi, max=1.0, out=scratch))
    elif feature_map == "relu":  # phi' = 1 where phi > 0 (PyTorch's relu'(0) = 0)
        x.masked_fill_(phi <= 0, 0.0)
    return x


def taylor_feature_count(d: int) -> int:
    """F = 1 + d + d(d+1)/2, the Taylor features of d dimensions (taylor_features)."""
    return 1 + d + d * (d + 1) // 2


def taylor_features(x: Tensor) -> Tensor:
    """Based's feature map, x (..., d) -> φ(x) (..., 1 + d + d(d+1)/2) = [1, x, c_ab x_a x_b (a <= b)],
    c_aa = 1/√2, c_ab = 1 (pairs in row-major order of the upper triangle), with no autograd record.
    In PyTorch: one broadcast product per row a of the pairs (index gathers read x once per pair)."""
    d = x.shape[-1]
    phi = x.new_empty(*x.shape[:-1], taylor_feature_count(d))
    phi[..., 0] = 1.0
    phi[..., 1 : 1 + d] = x
    start = 1 + d
    for a in range(d):
        row = phi[..., start : start + d - a]  # pairs (a, a), (a, a + 1), ..., (a, d - 1)
        torch.mul(x[..., a : a + 1], x[..., a:], out=row)
        row[..., 0] *= 0.5**0.5
        start += d - a
    return phi


def taylor_features_backward(d_phi: Tensor, x: Tensor) -> Tensor:
    """d loss / d φ(x) (..., F) -> d loss / d x (..., d): the linear part's row, plus for each pair
    (a, b) c_ab·x_b on a's side and c_ab·x_a on b's side."""
    d = x.shape[-1]
    dx = d_phi[..., 1 : 1 + d].clone()
    start = 1 + d
    for a in range(d):
        t = d_phi[..., start : start + d - a].clone()  # (..., d - a)
        t[..., 0] *= 2.0**0.5  # the diagonal pair: d(x_a² / √2) / dx_a = √2 x_a
        dx[..., a] += torch.linalg.vecdot(t, x[..., a:])
        dx[..., a + 1 :].addcmul_(t[..., 1:], x[..., a : a + 1])
        start += d - a
    return dx
