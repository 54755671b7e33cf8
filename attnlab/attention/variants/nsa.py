"""`nsa`: Native Sparse Attention (Yuan et al. 2025, DeepSeek, "Native Sparse Attention:
Hardware-Aligned and Natively Trainable Sparse Attention").

Causal softmax attention in which each query reads the past through three branches, mixed by gates
computed from the query's own token:

    o_t = σ(g_cmp)·cmp_t + σ(g_slc)·slc_t + σ(g_swa)·swa_t          (σ per head and token)

- compressed (`cmp`): attention over block summaries. The keys and values are cut into blocks of
  l = `block_size` positions (stride l), each block summarised by its mean key and mean value (fla's
  `mean_pooling`; the paper's learned MLP over overlapping blocks, stride d < l, is not built here).
  Query t sees block c only once the block is complete, (c + 1)·l - 1 <= t.
- selected (`slc`): exact attention over the tokens of the n = `selected_blocks` key blocks (of the
  same size l) ranked highest by the query's compressed-attention scores, softmax being monotone the
  ranking of its probabilities. The first block and the two local blocks (the query's own, up to the
  query itself, and the one before) are always selected, as in the paper; blocks not yet complete
  (other than the own one) are never candidates. Fewer candidates than n: fewer blocks.
- sliding (`swa`): exact attention over the last w = `window` keys, `local`'s sliding window.

Selection is a discrete choice: no gradient flows through it (as in the paper), the compressed
branch's output carries the gradient to the block summaries.

Forms. `reference_branches` writes the three branches out with dense (N, N) masks (readable, for
tests). `forward` runs them chunk by chunk over the queries (`chunk_size`), never holding an (N, N)
tensor: the compressed scores are (chunk, N/l) per chunk; the selected branch gathers each query's
n blocks (whole l·d rows) in a custom autograd function that saves only the block indices and each
query's log-sum-exp and recomputes the gathers in its backward; the sliding branch is `local`'s
blocked window attention (on fp32 CPU tensors its existing C kernel; nothing compiled is added here).
Memory O(N·(d + n)) plus per-chunk tiles; time O(N²·d/l) for the compressed scores and their top-n
(each query against all N/l blocks: the quadratic term, with a 1/l constant) plus O(N·(n·l + w)·d)
for the selected and sliding branches. The selected branch's backward forms its outer products
(weights x output gradients, score gradients x queries) by broadcasting, not as K=1 matrix products
(a library call per rank-one product costs more than it computes; docs/measurements.md): FLOP counters
see them as elementwise, so the counted FLOPs leave out 2·n·l·d per
query. `step` decodes one token against a KV cache and the cached block summaries: the three
branches for one query, equal to the parallel pass.

Non-causal use (an encoder) is attnlab's extension: every block is a candidate and a summary, the
forced blocks are the same three, and the window is centred (|i - j| <= window//2, as `local`).
Key padding: padded keys are left out of the block means (a block with no real key is no candidate),
of the selected tokens and of the window.

Compared with flash-linear-attention's `fla/ops/nsa/naive.py` (tests/attention/test_fla_reference.py):
the same block means, compressed branch, top-n block indices and selected branch, in fp32.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnlab.attention.base import (
    Attention,
    Capabilities,
    GateSpec,
    Range,
    State,
    fp32_accumulation,
    masked_softmax,
)
from attnlab.attention.ops.window.chunk import band_offsets, sliding_window_attention
from attnlab.attention.registry import register_attention

BRANCHES = ("cmp", "slc", "swa")  # compressed, selected, sliding: gates g_cmp, g_slc, g_swa


# ---- pieces shared by every form ------------------------------------------------------------------
def block_summaries(
    x: Tensor, block_size: int, key_padding_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """x (B, H, N, D) -> the mean of each block of `block_size` positions over its real tokens
    (B, H, nb, D), nb = ceil(N / l) (the last block may be shorter), and which blocks hold a real
    token (B|1, nb). key_padding_mask (B, N), True = padding."""
    B, H, N, D = x.shape
    nb = -(-N // block_size)
    pad = nb * block_size - N
    if key_padding_mask is None:
        sums = F.pad(x, (0, 0, 0, pad)).view(B, H, nb, block_size, D).sum(3)  # (B, H, nb, D)
        counts = (N - torch.arange(nb, device=x.device) * block_size).clamp(max=block_size)[None]  # (1, nb)
    else:
        real = F.pad((~key_padding_mask).to(x.dtype), (0, pad))  # (B, nb·l)
        weighted = F.pad(x, (0, 0, 0, pad)) * real[:, None, :, None]  # padded keys weigh 0
        sums = weighted.view(B, H, nb, block_size, D).sum(3)  # (B, H, nb, D)
        counts = real.view(B, nb, block_size).sum(-1)  # (B, nb)
    means = sums / counts.clamp(min=1).to(x.dtype)[:, None, :, None]
    return means, counts > 0


def compressed_visible(
    positions: Tensor, nb: int, block_size: int, present: Tensor, *, causal: bool
) -> Tensor:
    """Which block summaries queries at `positions` (Q,) may read: (B|1, 1, Q, nb). Causal: the
    complete blocks, (c + 1)·l - 1 <= t; present (B|1, nb): blocks holding a real key."""
    c = torch.arange(nb, device=positions.device)
    if causal:
        visible = (c[None, :] + 1) * block_size - 1 <= positions[:, None]  # (Q, nb)
    else:
        visible = torch.ones(positions.shape[0], nb, dtype=torch.bool, device=positions.device)
    return visible[None, None] & present[:, None, None, :]


def forced_blocks(positions: Tensor, nb: int, block_size: int) -> Tensor:
    """(Q, nb) True at the blocks every query selects: the first, its own and the one before."""
    c = torch.arange(nb, device=positions.device)[None, :]
    own = (positions // block_size)[:, None]
    return (c == 0) | (c == own) | (c == own - 1)


def select_blocks(scores: Tensor, visible: Tensor, forced: Tensor, selected_blocks: int) -> Tensor:
    """Top-n block indices (B, H, Q, min(n, nb)) from compressed scores (B, H, Q, nb): forced blocks
    first, then the visible ones by score; -1 in slots with no candidate left."""
    ranked = scores.masked_fill(~visible, -math.inf).masked_fill(forced, math.inf)
    top = ranked.topk(min(selected_blocks, scores.shape[-1]), dim=-1)
    return top.indices.masked_fill(top.values == -math.inf, -1)


def compressed_attention(q: Tensor, kc: Tensor, vc: Tensor, visible: Tensor) -> Tensor:
    """Softmax of q (B, H, Q, D) over the visible block summaries kc, vc (B, H, nb, D):
    (B, H, Q, Dv); zero for a query that sees no block (fused SDPA: no (Q, nb) weights kept)."""
    empty = ~visible.any(-1, keepdim=True)  # (B|1, 1, Q, 1)
    out = F.scaled_dot_product_attention(q, kc, vc, attn_mask=visible | empty)
    return out.masked_fill(empty, 0.0)


class KeyBlocks:
    """Keys or values (B, H, Nk, D) as rows of whole blocks, (B·H·nb, l·D), the last one zero-padded:
    a query's selected blocks are gathered as l·D contiguous floats each (index_select), and their
    gradients added back the same way (index_add_)."""

    def __init__(self, x: Tensor, block_size: int):
        B, H, self.nk, D = x.shape
        self.nb = -(-self.nk // block_size)
        pad = self.nb * block_size - self.nk
        self.shape, self.block_size = (B, H, self.nb * block_size, D), block_size
        self.rows = (F.pad(x, (0, 0, 0, pad)) if pad else x).reshape(B * H * self.nb, block_size * D)

    def row_index(self, blocks: Tensor) -> Tensor:
        """Block indices (B, H, Q, S), -1 = none -> rows of `self.rows`, (B·H·Q·S,) (-1 -> block 0)."""
        B, H = blocks.shape[:2]
        base = torch.arange(B * H, device=blocks.device).view(B, H, 1, 1) * self.nb
        return (blocks.clamp(min=0) + base).reshape(-1)

    def gather(self, rows: Tensor, blocks: Tensor) -> Tensor:
        """The selected blocks' tokens: (B, H, Q, S·l, D)."""
        return self.rows.index_select(0, rows).view(*blocks.shape[:3], -1, self.shape[-1])

    def scatter_add(self, grad_rows: Tensor, rows: Tensor, gathered: Tensor) -> None:
        """Add gradients (B, H, Q, S·l, D) of gathered tokens into grad_rows (shaped as self.rows)."""
        grad_rows.index_add_(0, rows, gathered.reshape(rows.shape[0], -1))

    def unblock(self, grad_rows: Tensor) -> Tensor:
        """Rows (B·H·nb, l·D) -> (B, H, Nk, D)."""
        return grad_rows.view(self.shape)[:, :, : self.nk]


def selected_mask(
    blocks: Tensor, positions: Tensor, nk: int, block_size: int, *, causal: bool, real: Tensor | None
) -> Tensor:
    """Which tokens of the selected blocks (B, H, Q, S) of queries at `positions` (Q,) take part,
    (B, H, Q, S·l): of an existing block (not -1), inside the nk keys, not after the query when
    causal, real keys (real (B|1, nk), True = a real key; None = all)."""
    B, H, Q, S = blocks.shape
    nb = -(-nk // block_size)
    inside = torch.arange(nb * block_size, device=blocks.device) < nk  # (nb·l,)
    real = inside[None] if real is None else F.pad(real, (0, nb * block_size - nk), value=False)
    per_block = real.view(real.shape[0], nb, block_size)  # (B|1, nb, l)
    base = torch.arange(B, device=blocks.device) if real.shape[0] == B else torch.zeros(B, dtype=torch.long)
    rows = blocks.clamp(min=0) + base.to(blocks.device).view(B, 1, 1, 1) * nb  # (B, H, Q, S)
    ok = per_block.reshape(-1, block_size)[rows.reshape(-1)].view(B, H, Q, S, block_size)
    ok &= (blocks >= 0)[..., None]
    if causal:
        tokens = blocks[..., None] * block_size + torch.arange(block_size, device=blocks.device)
        ok &= tokens <= positions[:, None, None]
    return ok.flatten(-2)  # (B, H, Q, S·l)


def _selected_chunk(
    q: Tensor, keys: KeyBlocks, values: KeyBlocks, blocks: Tensor, ok: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """One chunk's selected attention: q (B, H, Q, D) over the tokens of its blocks (B, H, Q, S) that
    take part (ok) -> out (B, H, Q, Dv) and each query's log-sum-exp (B, H, Q) (+inf where no key
    takes part: zero output, zero weights)."""
    rows = keys.row_index(blocks)
    kg, vg = keys.gather(rows, blocks), values.gather(rows, blocks)  # (B, H, Q, S·l, D)
    scores = (q[..., None, :] @ kg.transpose(-2, -1)).squeeze(-2) * scale  # (B, H, Q, S·l)
    scores = scores.masked_fill(~ok, -math.inf)
    top = scores.amax(-1, keepdim=True)
    top = top.masked_fill(top == -math.inf, 0.0)
    weights = torch.exp(scores - top)  # 0 where not ok
    total = weights.sum(-1, keepdim=True)  # (B, H, Q, 1)
    out = (weights[..., None, :] @ vg).squeeze(-2) / total.clamp(min=torch.finfo(total.dtype).tiny)
    lse = torch.where(total > 0, top + total.log(), math.inf).squeeze(-1)
    return out, lse


class SelectedAttention(torch.autograd.Function):
    """Each query's softmax over the tokens of its selected blocks, by query chunks; the backward
    recomputes each chunk's gathers from the saved block indices and log-sum-exp (FlashAttention's
    scheme), adding the key and value gradients in place: nothing of size N·n·l is kept.
    q (B, H, Nq, D) at `positions` (Nq,), k, v (B, H, Nk, D), blocks (B, H, Nq, S) (-1 = none),
    real (B|1, Nk) or None."""

    @staticmethod
    def forward(ctx: FunctionCtx, q, k, v, blocks, positions, real, block_size, causal, scale, chunk):
        keys, values = KeyBlocks(k, block_size), KeyBlocks(v, block_size)
        outs, lses = [], []
        for qc, bc, pc in zip(q.split(chunk, 2), blocks.split(chunk, 2), positions.split(chunk)):
            ok = selected_mask(bc, pc, keys.nk, block_size, causal=causal, real=real)
            out, lse = _selected_chunk(qc, keys, values, bc, ok, scale)
            outs.append(out)
            lses.append(lse)
        out, lse = torch.cat(outs, 2), torch.cat(lses, 2)
        ctx.save_for_backward(q, k, v, blocks, positions, real, out, lse)
        ctx.settings = (block_size, causal, scale, chunk)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor):
        q, k, v, blocks, positions, real, out, lse = ctx.saved_tensors
        block_size, causal, scale, chunk = ctx.settings
        keys, values = KeyBlocks(k, block_size), KeyBlocks(v, block_size)
        dk, dv = torch.zeros_like(keys.rows), torch.zeros_like(values.rows)
        dqs = []
        pieces = (q, blocks, out, lse, d_out)
        for qc, bc, oc, lc, dc, pc in zip(*(t.split(chunk, 2) for t in pieces), positions.split(chunk)):
            ok = selected_mask(bc, pc, keys.nk, block_size, causal=causal, real=real)
            rows = keys.row_index(bc)
            kg, vg = keys.gather(rows, bc), values.gather(rows, bc)  # (B, H, Q, S·l, D)
            scores = (qc[..., None, :] @ kg.transpose(-2, -1)).squeeze(-2) * scale  # (B, H, Q, S·l)
            weights = torch.exp(scores.masked_fill(~ok, -math.inf) - lc[..., None])  # the forward's
            values.scatter_add(dv, rows, weights[..., None] * dc[..., None, :])  # outer products
            d_weights = (dc[..., None, :] @ vg.transpose(-2, -1)).squeeze(-2)  # (B, H, Q, S·l)
            d_scores = weights * (d_weights - (dc * oc).sum(-1, keepdim=True)) * scale
            dqs.append((d_scores[..., None, :] @ kg).squeeze(-2))
            keys.scatter_add(dk, rows, d_scores[..., None] * qc[..., None, :])
        dq = torch.cat(dqs, 2)
        return dq, keys.unblock(dk), values.unblock(dv), None, None, None, None, None, None, None


def gate_mix(branches: tuple[Tensor, Tensor, Tensor], gates: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Σ σ(g_b)·o_b over the three branches: outputs (B, H, N, Dv), raw gates (B, H, N)."""
    return sum(torch.sigmoid(g)[..., None] * o for o, g in zip(branches, gates))


def reference_branches(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    block_size: int,
    selected_blocks: int,
    window: int,
    causal: bool,
    key_padding_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The three branches written out with dense (N, N) masks, O(N²) memory (for tests):
    (compressed, selected, sliding), each (B, H, N, Dv). Block summaries, by a loop over blocks."""
    B, H, N, D = q.shape
    L, scale = block_size, D**-0.5
    nb = -(-N // L)
    real = (
        torch.ones(B, N, dtype=torch.bool, device=q.device) if key_padding_mask is None else ~key_padding_mask
    )
    kc = torch.zeros(B, H, nb, D, dtype=k.dtype, device=k.device)
    vc = torch.zeros(B, H, nb, v.shape[-1], dtype=v.dtype, device=v.device)
    present = torch.zeros(B, nb, dtype=torch.bool, device=k.device)
    for c in range(nb):
        r = real[:, c * L : (c + 1) * L]  # (B, ≤l)
        count = r.sum(-1).clamp(min=1)[:, None, None]
        kc[:, :, c] = (k[:, :, c * L : (c + 1) * L] * r[:, None, :, None]).sum(2) / count
        vc[:, :, c] = (v[:, :, c * L : (c + 1) * L] * r[:, None, :, None]).sum(2) / count
        present[:, c] = r.any(-1)
    i = torch.arange(N, device=q.device)[:, None]  # query positions
    c = torch.arange(nb, device=q.device)[None, :]  # blocks
    visible = present[:, None, None, :] & (((c + 1) * L - 1 <= i) if causal else True)  # (B, 1, N, nb)
    cmp_scores = q @ kc.transpose(-2, -1) * scale  # (B, H, N, nb)
    compressed = masked_softmax(cmp_scores, visible) @ vc
    # the blocks each query selects: the forced three, then the best-scored visible ones
    forced = (c == 0) | (c == i // L) | (c == i // L - 1)  # (N, nb)
    rank = torch.where(visible, cmp_scores, -math.inf).where(~forced, math.inf)
    chosen = torch.zeros(B, H, N, nb, dtype=torch.bool, device=q.device)
    order = rank.argsort(-1, descending=True)[..., :selected_blocks]
    chosen.scatter_(-1, order, True)
    chosen &= rank > -math.inf
    j = torch.arange(N, device=q.device)[None, :]  # key positions
    token_allowed = real[:, None, None, :] & ((j <= i) if causal else True)  # (B, 1, N, N)
    in_chosen = chosen.gather(-1, (j // L).expand(B, H, N, N))  # (B, H, N, N): key j's block chosen
    scores = q @ k.transpose(-2, -1) * scale  # (B, H, N, N)
    selected = masked_softmax(scores, in_chosen & token_allowed) @ v
    lowest, highest = band_offsets(causal, window)
    band = (j - i >= lowest) & (j - i <= highest)
    sliding = masked_softmax(scores, band & real[:, None, None, :]) @ v
    return compressed, selected, sliding


@register_attention("nsa")
class NativeSparseAttention(Attention):
    """Compressed, selected and sliding-window softmax branches, gated per head from the token (NSA)."""

    complexity = "O(N²·d/l + N·(n·l + w)·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=False, incremental=True)
    gates = {"g_cmp": GateSpec(), "g_slc": GateSpec(), "g_swa": GateSpec()}

    def __init__(
        self,
        *,
        block_size: Annotated[int, Range(ge=1)] = 32,
        selected_blocks: Annotated[int, Range(ge=3)] = 8,
        window: Annotated[int, Range(ge=1)] = 64,
        chunk_size: Annotated[int, Range(ge=1)] = 32,
    ):
        super().__init__()
        self.block_size = block_size
        self.selected_blocks = selected_blocks  # the first block and the two local ones included
        self.window = window
        self.chunk_size = chunk_size

    @classmethod
    def working_memory(
        cls, params: dict[str, Any], *, batch: int, heads: int, length: int, head_dim: int
    ) -> int:
        chunk = min(params["chunk_size"], length)
        gathered = params["selected_blocks"] * params["block_size"]
        blocks = -(-length // params["block_size"])
        per_chunk = chunk * (4 * gathered * head_dim + 2 * blocks)  # gathered k, v and their gradients
        kept = length * (3 * head_dim + 2 * params["selected_blocks"] + 2 * min(params["window"], length))
        return batch * heads * (per_chunk + kept)

    def branches(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The three branches (compressed, selected, sliding), each (B, H, N, Dv), chunk by chunk."""
        N, L = q.shape[2], self.block_size
        kc, present = block_summaries(k, L, key_padding_mask)  # (B, H, nb, D), (B|1, nb)
        vc, _ = block_summaries(v, L, key_padding_mask)
        nb = kc.shape[2]
        positions = torch.arange(N, device=q.device)
        compressed, chosen = [], []
        for qc, pc in zip(q.split(self.chunk_size, 2), positions.split(self.chunk_size)):
            visible = compressed_visible(pc, nb, L, present, causal=causal)  # (B|1, 1, Q, nb)
            compressed.append(compressed_attention(qc, kc, vc, visible))
            with torch.no_grad():
                scores = qc @ kc.transpose(-2, -1)  # (B, H, Q, nb): the ranking needs no scale
                chosen.append(select_blocks(scores, visible, forced_blocks(pc, nb, L), self.selected_blocks))
        real = None if key_padding_mask is None else ~key_padding_mask
        selected = SelectedAttention.apply(
            q, k, v, torch.cat(chosen, 2), positions, real, L, causal, q.shape[-1] ** -0.5, self.chunk_size
        )
        sliding = sliding_window_attention(
            q, k, v, window=self.window, causal=causal, key_padding_mask=key_padding_mask
        )
        return torch.cat(compressed, 2), selected, sliding

    @fp32_accumulation
    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        g_cmp: Tensor | None = None,
        g_slc: Tensor | None = None,
        g_swa: Tensor | None = None,
    ) -> Tensor:
        self.require_gates(g_cmp=g_cmp, g_slc=g_slc, g_swa=g_swa)
        acc = torch.promote_types(q.dtype, torch.float32)
        outs = self.branches(
            q.to(acc), k.to(acc), v.to(acc), causal=causal, key_padding_mask=key_padding_mask
        )
        out = gate_mix(outs, (g_cmp.to(acc), g_slc.to(acc), g_swa.to(acc)))
        return out.to(q.dtype)  # (B, H, N, Dv)

    # ---- incremental decoding: the KV cache and the summaries of its complete blocks -----------------
    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        empty = torch.zeros(batch, heads, 0, head_dim, device=device, dtype=dtype)  # (B, H, 0, D)
        # block means in at least fp32, as the parallel pass computes them from half inputs
        means = empty.to(torch.promote_types(dtype, torch.float32))
        return {"k": empty, "v": empty.clone(), "kc": means, "vc": means.clone()}

    @fp32_accumulation
    def step(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        state: State,
        *,
        g_cmp: Tensor | None = None,
        g_slc: Tensor | None = None,
        g_swa: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        self.require_gates(g_cmp=g_cmp, g_slc=g_slc, g_swa=g_swa)
        L, dtype, acc = self.block_size, q.dtype, torch.promote_types(q.dtype, torch.float32)
        keys = torch.cat([state["k"], k.to(state["k"].dtype)], dim=2)  # (B, H, t + 1, D)
        values = torch.cat([state["v"], v.to(state["v"].dtype)], dim=2)
        kc, vc = state["kc"], state["vc"]  # (B, H, complete blocks, D)
        t = keys.shape[2] - 1  # the query's position
        if (t + 1) % L == 0:  # the query completes a block: summarise it, as block_summaries does
            kc = torch.cat([kc, block_summaries(keys[:, :, -L:].to(acc), L)[0].to(kc.dtype)], dim=2)
            vc = torch.cat([vc, block_summaries(values[:, :, -L:].to(acc), L)[0].to(vc.dtype)], dim=2)
        q, K, V = q.to(acc), keys.to(acc), values.to(acc)
        B, H, complete = q.shape[0], q.shape[1], kc.shape[2]
        position = torch.tensor([t], device=q.device)
        nb = t // L + 1  # the blocks so far, the query's own (maybe partial) included
        visible = torch.arange(nb, device=q.device) < complete  # the complete ones
        visible = visible[None, None, None, :]  # (1, 1, 1, nb)
        if complete:
            compressed = compressed_attention(q, kc.to(acc), vc.to(acc), visible[..., :complete])
        else:
            compressed = q.new_zeros(B, H, 1, V.shape[-1])
        with torch.no_grad():
            scores = torch.zeros(B, H, 1, nb, device=q.device, dtype=acc)  # the own partial block: forced
            scores[..., :complete] = q @ kc.to(acc).transpose(-2, -1)
            chosen = select_blocks(scores, visible, forced_blocks(position, nb, L), self.selected_blocks)
        ok = selected_mask(chosen, position, t + 1, L, causal=True, real=None)
        selected, _ = _selected_chunk(q, KeyBlocks(K, L), KeyBlocks(V, L), chosen, ok, q.shape[-1] ** -0.5)
        recent_k, recent_v = K[:, :, -self.window :], V[:, :, -self.window :]  # the window's keys
        sliding = torch.softmax(q @ recent_k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ recent_v
        out = gate_mix((compressed, selected, sliding), (g_cmp.to(acc), g_slc.to(acc), g_swa.to(acc)))
        return out.to(dtype), {"k": keys, "v": values, "kc": kc, "vc": vc}
