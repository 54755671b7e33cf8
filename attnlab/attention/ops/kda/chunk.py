"""The delta rule with a decay per key dimension (Kimi Delta Attention's op):

    S' = diag(e^{g_t}) S_{t-1}        S_t = S' + β_t k_t (v_t - S'ᵀ k_t)ᵀ        o_t = (scale · q_t)ᵀ S_t

g (B, H, N, D) log decays <= 0, β (B, H, N) in (0, 1). Same recurrence as fla's `naive_recurrent_kda`.

The chunked form, in plain PyTorch (autograd differentiates it). Inside a chunk of C positions, with b the
inclusive cumulative log decay and u_t = β_t (v_t - S'ᵀ k_t) the value each step writes,

    S_t = e^{b_t} ⊙ S_0 + Σ_{j<=t} (e^{b_t - b_j} ⊙ k_j) u_jᵀ

so the writes solve one unit lower-triangular system per chunk, (I + L) u = β (V - (K ⊙ e^b) S_0) with
L_tj = β_t Σ_d k_td k_jd e^{b_td - b_jd} (j < t): u = U - W S_0 with U, W independent of S_0. Then the
state before each chunk is a linear recurrence, S_{c+1} = A_c S_c + B_c (one (D, D) x (D, Dv) product a
chunk: the only loop), and every output is batched over all chunks:
o = scale · ((Q ⊙ e^b - M W) S_c + M U), M_tj = Σ_d q_td k_jd e^{b_td - b_jd} (j <= t).
The pair products Σ_d x_td y_jd e^{b_td - b_jd} are one matmul of (x ⊙ e^b) and (y ⊙ e^-b) in every chunk
that decays by at most e^-80; a chunk that decays further is formed pair by pair with exponents
b_t - b_j <= 0: nothing overflows, whatever the gates (decayed_pairs). The pair-by-pair route costs
(C, C, D) per chunk, so the decision is made per chunk: one steep chunk costs only itself. The products a
chunk needs share operands (kda: q·k and k·k; the DPLR form: α·β, α·k, q·k, q·β), so the matmul route
forms them all in one call on stacked operands (pair_blocks): each operand is read once and one call's
overhead paid instead of several (the timing against one call per product: docs/measurements.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_EXPONENT = 80.0  # e^80 ~ 5.5e34 < fp32's max 3.4e38: the largest factor the matmul route forms


def decayed_pairs(x: Tensor, y: Tensor, b_x: Tensor, b_y: Tensor, allowed: Tensor) -> Tensor:
    """P_tj = Σ_d x_td y_jd e^{b_x,td - b_y,jd} where allowed[t, j], else 0, pair by pair: (…, C, D) x2,
    (C, C) -> (…, C, C). Each factor e^{b_x,t - b_y,j} is formed on its own and masked before the
    exponential, so nothing overflows whatever the gates, at (C, C, D) a chunk."""
    exponent = (b_x[..., :, None, :] - b_y[..., None, :, :]).masked_fill(~allowed[..., None], float("-inf"))
    return (x[..., :, None, :] * exponent.exp() * y[..., None, :, :]).sum(-1)


def pair_blocks(
    lefts: list[tuple[Tensor, Tensor]], rights: list[tuple[Tensor, Tensor]], masks: list[list[Tensor]]
) -> list[list[Tensor]]:
    """Every P[i][j]_tr = Σ_d x_i,td y_j,rd e^{b_i,td - b'_j,rd} where masks[i][j][t, r], else 0, for lefts
    [(x_i, b_i)] and rights [(y_j, b'_j)], each (…, nc, C, D), masks (C, C): -> (…, nc, C, C) each.

    The in-chunk products of a chunk share their operands, so ONE matmul of the stacked (x ⊙ e^b) against
    the stacked (y ⊙ e^-b') forms them all: i·j products and their exponentials in one call. That route
    needs e^-b' <= e^80 (fp32); the chunks that decay further (a decision per chunk, so one steep chunk
    does not send the whole sequence down the slow route) are recomputed pair by pair (decayed_pairs)
    and written over the matmul's values, which the clamp keeps finite, so no inf reaches a gradient."""
    C = lefts[0][0].shape[-2]
    steepest = torch.stack([(-b).detach().amax(dim=(-2, -1)) for _, b in rights]).amax(0)  # (…, nc)
    left = torch.cat([x * b.exp() for x, b in lefts], dim=-2)  # (…, nc, iC, D)
    right = torch.cat([y * (-b).clamp(max=MAX_EXPONENT).exp() for y, b in rights], dim=-2)  # (…, nc, jC, D)
    full = left @ right.transpose(-2, -1)  # (…, nc, iC, jC)
    blocks = [
        [
            full[..., i * C : (i + 1) * C, j * C : (j + 1) * C].masked_fill(~masks[i][j], 0.0)
            for j in range(len(rights))
        ]
        for i in range(len(lefts))
    ]
    steep = (steepest > MAX_EXPONENT).flatten().nonzero().squeeze(-1)  # (n_steep,) flat chunk indices
    if steep.numel() == 0:
        return blocks

    def steep_chunks(t: Tensor) -> Tensor:  # (…, nc, C, D) -> (n_steep, C, D)
        return t.flatten(0, -3).index_select(0, steep)

    for i, (x, b_x) in enumerate(lefts):
        for j, (y, b_y) in enumerate(rights):
            exact = decayed_pairs(
                steep_chunks(x), steep_chunks(y), steep_chunks(b_x), steep_chunks(b_y), masks[i][j]
            )
            block = blocks[i][j]
            blocks[i][j] = block.flatten(0, -3).index_copy(0, steep, exact).view_as(block)
    return blocks


def in_chunks(chunk_size: int, *xs: Tensor) -> list[Tensor]:
    """Each (B, H, N, ·) input split into chunks of C = min(chunk_size, N) positions: -> (B, H, nc, C, ·).
    N is padded with zeros to a multiple of C; padded steps come last and are identities (k = β = 0 write
    nothing, g = 0 decays nothing), and the caller cuts their outputs off."""
    N = xs[0].shape[2]
    C = min(chunk_size, N)
    pad = (-N) % C
    return [(F.pad(x, (0, 0, 0, pad)) if pad else x).unflatten(2, (-1, C)) for x in xs]


def carried_states(carry: Tensor, writes: Tensor, S0: Tensor) -> tuple[Tensor, Tensor]:
    """The state before each chunk of S_{c+1} = A_c S_c + B_c from S_0: carry A (B, H, nc, D, D), writes
    B (B, H, nc, D, Dv), S0 (B, H, D, Dv) -> (B, H, nc, D, Dv) and the final state. The one loop over
    chunks; over unbound tensors, not carry[:, :, c], whose backward writes a zero tensor the size of
    every chunk for each chunk (quadratic in the length)."""
    B, H, D, Dv = S0.shape
    S, states = S0, []
    for A_c, B_c in zip(carry.unbind(2), writes.unbind(2), strict=True):
        states.append(S)
        S = torch.baddbmm(
            B_c.reshape(B * H, D, Dv), A_c.reshape(B * H, D, D), S.reshape(B * H, D, Dv)
        ).reshape(B, H, D, Dv)
    return torch.stack(states, dim=2), S


def chunk_kda(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    g: Tensor,
    *,
    scale: float,
    chunk_size: int = 32,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The chunked form (module docstring): -> output (B, H, N, Dv), final state (B, H, D, Dv)."""
    B, H, N, D = q.shape
    qc, kc, vc, betac, gc = in_chunks(chunk_size, q, k, v, beta[..., None], g)  # (B, H, nc, C, ·)
    C = qc.shape[-2]
    b = gc.cumsum(3)  # (B, H, nc, C, D) inclusive cumulative log decay
    seen = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()  # (C, C) j <= t
    # (B, H, nc, C, C) each: q_t · (e^{b_t - b_j} ⊙ k_j), j <= t; k_t · (…), j < t
    (M,), (KK,) = pair_blocks([(qc, b), (kc, b)], [(kc, b)], [[seen], [seen.tril(-1)]])
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    system = eye + betac * KK  # (I + L), unit lower triangular
    U = torch.linalg.solve_triangular(system, betac * vc, upper=False, unitriangular=True)  # (…, C, Dv)
    decay_in = b.exp()  # (B, H, nc, C, D) from the chunk start through t
    W = torch.linalg.solve_triangular(system, betac * kc * decay_in, upper=False, unitriangular=True)
    b_last = b[..., -1:, :]  # (B, H, nc, 1, D)
    k_to_end = kc * (b_last - b).exp()  # (B, H, nc, C, D): decay from j (exclusive) to the chunk end
    carry = torch.diag_embed(b_last.squeeze(-2).exp()) - k_to_end.transpose(-2, -1) @ W  # (…, D, D)
    writes = k_to_end.transpose(-2, -1) @ U  # (B, H, nc, D, Dv)
    S0 = q.new_zeros(B, H, D, v.shape[-1]) if initial_state is None else initial_state
    before, S = carried_states(carry, writes, S0)  # (B, H, nc, D, Dv), final (B, H, D, Dv)
    out = (qc * decay_in - M @ W) @ before + M @ U  # (B, H, nc, C, Dv)
    return (out * scale).flatten(2, 3)[:, :, :N], S  # (B, H, N, Dv)


# ---- the diagonal-plus-low-rank (DPLR) update: RWKV-7's ------------------------------------------------
def chunk_dplr(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Tensor,
    beta: Tensor,
    g: Tensor,
    *,
    scale: float,
    chunk_size: int = 32,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The DPLR recurrence chunked as chunk_kda: inside a chunk the reads x_t = α_tᵀ S_{t-1} solve
    (I - A_ab) x = (α ⊙ e^{b_{t-1}}) S_0 + A_ak V, with A_ab, A_ak the strictly lower α·β and α·k products
    decayed by e^{b_{t-1} - b_j}; between chunks a (D, D) linear recurrence; outputs batched."""
    B, H, N, D = q.shape
    qc, kc, vc, ac, bc, gc = in_chunks(chunk_size, q, k, v, alpha, beta, g)  # (B, H, nc, C, ·)
    C = qc.shape[-2]
    b = gc.cumsum(3)  # (B, H, nc, C, D) inclusive cumulative log decay
    b_before = b - gc  # through t - 1: the reads see S_{t-1}
    lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()  # j <= t
    strict = lower.tril(-1)  # j < t
    # (…, C, C) each: α·β and α·k (j < t), q·β and q·k (j <= t), decayed
    (A_ab, A_ak), (A_qb, A_qk) = pair_blocks(
        [(ac, b_before), (qc, b)], [(bc, b), (kc, b)], [[strict, strict], [lower, lower]]
    )
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    system = eye - A_ab  # unit lower triangular
    X0 = torch.linalg.solve_triangular(system, A_ak @ vc, upper=False, unitriangular=True)  # (…, C, Dv)
    Xs = torch.linalg.solve_triangular(
        system, ac * b_before.exp(), upper=False, unitriangular=True
    )  # (…, C, D)
    b_last = b[..., -1:, :]  # (B, H, nc, 1, D)
    to_end = (b_last - b).exp()  # (…, C, D) decay from j (exclusive) to the chunk end
    k_end, b_end = kc * to_end, bc * to_end
    carry = torch.diag_embed(b_last.squeeze(-2).exp()) + b_end.transpose(-2, -1) @ Xs  # (…, D, D)
    writes = k_end.transpose(-2, -1) @ vc + b_end.transpose(-2, -1) @ X0  # (…, D, Dv)
    S0 = q.new_zeros(B, H, D, v.shape[-1]) if initial_state is None else initial_state
    before, S = carried_states(carry, writes, S0)  # (B, H, nc, D, Dv), final (B, H, D, Dv)
    out = (qc * b.exp() + A_qb @ Xs) @ before + A_qk @ vc + A_qb @ X0  # (B, H, nc, C, Dv)
    return (out * scale).flatten(2, 3)[:, :, :N], S  # (B, H, N, Dv)
