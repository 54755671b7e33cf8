"""ALiBi (Press et al. 2022, "Train Short, Test Long"): a per-head linear distance bias on the scores.

    score(i, j) = q_i·k_j / √d  -  slope_h · |pos(i) - pos(j)|

No position is added to the tokens, and nothing is sized by a maximum length: the bias is computed
for whatever lengths a call has. The layer (attnlab.nn.MultiHeadAttention with
model.positional=alibi) owns the slopes and passes them to a kernel that declares
`Capabilities(alibi=True)` as the keyword tensor `alibi` (H,); the kernel adds the bias where it
forms its scores. Queries are aligned to the END of the keys (query i sits at position
i + Nk - Nq), so the same formula serves the parallel pass (Nq = Nk) and a decoding step over a
cache (one query, the newest position).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def alibi_slopes(heads: int) -> Tensor:
    """The paper's geometric slopes (heads,): 2^(-8/h), 2^(-16/h), ... for h a power of two; otherwise
    those of the next-lower power of two, then every other slope of the next-higher one (as the
    reference implementation), so each head keeps a distinct slope."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    lower = 2 ** math.floor(math.log2(heads))
    slopes = power_of_two(lower)
    if lower < heads:
        slopes += power_of_two(2 * lower)[0::2][: heads - lower]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_distances(nq: int, nk: int, *, device: torch.device | None = None) -> Tensor:
    """|pos(i) - pos(j)| (Nq, Nk) as float32, the queries aligned to the end of the keys."""
    i = torch.arange(nq, device=device)[:, None] + (nk - nq)  # (Nq, 1) query positions
    j = torch.arange(nk, device=device)[None, :]  # (1, Nk) key positions
    return (i - j).abs().to(torch.float32)


def alibi_bias(slopes: Tensor, nq: int, nk: int, *, dtype: torch.dtype | None = None) -> Tensor:
    """-slope_h · |pos(i) - pos(j)| -> (H, Nq, Nk), to add to the scores q·k/√d before the softmax."""
    distances = alibi_distances(nq, nk, device=slopes.device)  # (Nq, Nk)
    bias = -slopes.float()[:, None, None] * distances  # (H, Nq, Nk)
    return bias if dtype is None else bias.to(dtype)
