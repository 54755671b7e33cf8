"""`fox`: the Forgetting Transformer's forgetting attention (Lin, Nikishin, He and Courville 2025,
"Forgetting Transformer: Softmax Attention with a Forget Gate").

Softmax attention whose scores are decayed by a data-dependent forget gate, one per head and token:
with log f_t = logsigmoid(f_t + f_bias_h) and c_t = Σ_{s<=t} log f_s,

    o_i = Σ_{j<=i} softmax_j(q_i·k_j / √d + c_i - c_j) v_j

so key j is down-weighted by the forget gates of every token after it, up to i (a learned,
content-dependent ALiBi). The gate f_t is a projection of the token the layer owns; f_bias is learned
per head, initialised so that f starts near 1 (slow forgetting: each head a different memory length),
as FoX initialises its forget-gate bias. Same computation as fla's `naive_forgetting_attn`
(tests/attention/test_fla_reference.py).

Cost: it is softmax attention, O(N²·d) time; the bias makes it O(N) memory per query block here
(queries are processed in blocks of `block_size`, each against every key, so the extra memory is
(B, H, block, N), never (B, H, N, N) for long N). Decoding keeps the KV cache and each key's c_j.
Non-causal use (an encoder) is attnlab's extension: the bias becomes -|c_i - c_j|, the forget gates
between i and j in either direction, which equals the causal bias for j <= i.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import Attention, Capabilities, GateSpec, Range, State, fp32_accumulation
from attnlab.attention.registry import register_attention


def forgetting_bias(c_q: Tensor, c_k: Tensor, *, causal: bool) -> Tensor:
    """c_q (B, H, Nq), c_k (B, H, Nk) cumulative log forget gates -> (B, H, Nq, Nk) score bias <= 0 on
    the keys a query may see (c is non-increasing, so c_i - c_j <= 0 for j <= i)."""
    diff = c_q[..., :, None] - c_k[..., None, :]  # (B, H, Nq, Nk)
    return diff if causal else -diff.abs()


@register_attention("fox")
class ForgettingAttention(Attention):
    """Softmax attention with a data-dependent forget gate per head (FoX)."""

    complexity = "O(N²·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=False, incremental=True)
    gates = {"f": GateSpec()}

    def __init__(
        self,
        *,
        heads: int,
        block_size: Annotated[int, Range(ge=1)] = 512,
    ):
        super().__init__()
        self.block_size = block_size
        # f_bias spread over heads from logit 2 to 6: f = σ(·) from 0.88 to 0.998, memory lengths of
        # ~8 to ~400 tokens at a zero gate input, so heads start with short and long memories.
        self.f_bias = nn.Parameter(torch.linspace(2.0, 6.0, heads))  # (H,)

    def log_forget(self, f: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """Raw gates (B, H, N) -> log f_t <= 0; padded tokens forget nothing (identity steps)."""
        g = F.logsigmoid(f + self.f_bias.to(f.dtype)[:, None])  # (B, H, N)
        return g if key_padding_mask is None else g.masked_fill(key_padding_mask[:, None, :], 0.0)

    @fp32_accumulation
    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        f: Tensor | None = None,
    ) -> Tensor:
        self.require_gates(f=f)
        acc = torch.promote_types(q.dtype, torch.float32)  # the bias and softmax in at least fp32
        c = self.log_forget(f.to(acc), key_padding_mask).cumsum(-1)  # (B, H, N) cumulative log f
        out = self.attend(q.to(acc), k.to(acc), v.to(acc), c, c, causal=causal, padding=key_padding_mask)
        return out.to(q.dtype)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        c_q: Tensor,
        c_k: Tensor,
        *,
        causal: bool,
        padding: Tensor | None,
    ) -> Tensor:
        """q (B, H, Nq, D) against every key, by query blocks: (B, H, Nq, Dv). c_q/c_k as forgetting_bias."""
        Nq, Nk = q.shape[-2], k.shape[-2]
        offset = Nk - Nq  # decoding: the queries are the last Nq positions
        outs = []
        for start in range(0, Nq, self.block_size):
            stop = min(start + self.block_size, Nq)
            bias = forgetting_bias(c_q[..., start:stop], c_k, causal=causal)  # (B, H, b, Nk)
            blocked = torch.zeros(stop - start, Nk, dtype=torch.bool, device=q.device)
            if causal:  # key j is in the future of query i
                positions = torch.arange(start, stop, device=q.device)[:, None] + offset
                blocked = torch.arange(Nk, device=q.device)[None, :] > positions
            blocked = blocked[None, None]  # (1, 1, b, Nk)
            if padding is not None:
                blocked = blocked | padding[:, None, None, :]  # (B, 1, b, Nk)
            empty = blocked.all(dim=-1, keepdim=True)  # queries that see no key: zero output, no NaN
            bias = bias.masked_fill(blocked & ~empty, float("-inf"))
            out = F.scaled_dot_product_attention(q[..., start:stop, :], k, v, attn_mask=bias)
            outs.append(out.masked_fill(empty, 0.0))
        return torch.cat(outs, dim=-2)  # (B, H, Nq, Dv)

    # ---- incremental decoding: the KV cache plus each key's cumulative log forget gate -------------
    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        empty = torch.zeros(batch, heads, 0, head_dim, device=device, dtype=dtype)  # (B, H, 0, D)
        c = torch.zeros(batch, heads, 0, device=device, dtype=torch.float32)  # (B, H, 0)
        return {"k": empty, "v": empty.clone(), "c": c}

    @fp32_accumulation
    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: State, *, f: Tensor | None = None
    ) -> tuple[Tensor, State]:
        self.require_gates(f=f)
        keys = torch.cat([state["k"], k], dim=2)  # (B, H, t, D)
        values = torch.cat([state["v"], v], dim=2)  # (B, H, t, Dv)
        previous = state["c"][..., -1:] if state["c"].shape[-1] else torch.zeros_like(f, dtype=torch.float32)
        c_now = previous + self.log_forget(f.float(), None)  # (B, H, 1)
        c = torch.cat([state["c"], c_now], dim=-1)  # (B, H, t)
        acc = torch.promote_types(q.dtype, torch.float32)
        out = self.attend(q.to(acc), keys.to(acc), values.to(acc), c_now, c, causal=True, padding=None)
        return out.to(q.dtype), {"k": keys, "v": values, "c": c}
