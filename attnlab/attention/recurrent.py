"""What retention, gla, deltanet and gated_deltanet share: a (D, Dv) matrix state per head, updated
token by token by an op of attention/ops, with one set of rules around it.

- causal: one left-to-right pass of the op's chunked form; decoding: its recurrent step on the same
  state, kept in fp32 (O(D·Dv) per sequence, whatever the length).
- non-causal: the left-to-right pass plus the same op run right to left (the bidirectional recipe
  of Vision Mamba, Zhu et al. 2024), so out_i sees every token; token i itself counts in both.
- padded keys (key_padding_mask) are identity steps: k = 0 (nothing written, for the delta rule
  nothing corrected) and log decay g = 0, so they never reach a real output, wherever they are.
- output_norm: each head's output is RMS-normalised per position (RetNet's GroupNorm, fla's g_norm
  and o_norm, without their affine weight: the layer's output projection follows). The ops alone
  (fla's naive references) have no normalisation: output_norm=false gives exactly the op.
- q, k, v and gates are cast to (at least) fp32 first; the result goes back to the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities, State, fp32_accumulation
from attnlab.attention.ops.norms import rms_norm
from attnlab.errors import ConfigError

OUTPUT_NORM_EPS = 1e-6


def rms_normalise(x: Tensor) -> Tensor:
    return rms_norm(x, eps=OUTPUT_NORM_EPS)  # x · rsqrt(mean(x²) + eps), hand-written backward


def step_size_bias(shape: tuple[int, ...], dt_min: float, dt_max: float) -> Tensor:
    """Mamba-2's initial dt_bias: softplus⁻¹ of step sizes drawn log-uniform in [dt_min, dt_max]
    (gated_deltanet, mamba2, kda); dt_min above dt_max is the one-line error."""
    if dt_min > dt_max:
        raise ConfigError(
            f"attention.dt_min={dt_min} is above attention.dt_max={dt_max}; set dt_min <= dt_max, "
            "e.g. attention.dt_min=0.001 attention.dt_max=0.1"
        )
    span = math.log(dt_max) - math.log(dt_min)
    dt = torch.exp(torch.rand(shape) * span + math.log(dt_min)).clamp_min(1e-4)
    return dt + torch.log(-torch.expm1(-dt))  # softplus⁻¹(dt)


class RecurrentAttention(Attention):
    """Base of the matrix-state variants; a subclass maps its raw inputs and runs its op."""

    capabilities = Capabilities(causal=True, key_padding_mask=True, cross=False, incremental=True)
    output_norm: bool

    # ---- what a variant provides --------------------------------------------------------------------
    def prepare(
        self, q: Tensor, k: Tensor, gates: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """fp32 q, k (B, H, N, D) and raw gates -> what the op takes (feature maps, gate activations).
        Gates in the result named "g" are log decays."""
        raise NotImplementedError

    def chunk(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor]) -> Tensor:
        """The op's chunked form -> (B, H, N, Dv)."""
        raise NotImplementedError

    def recurrent_step(
        self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor], S: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The op's decoding step -> (B, H, 1, Dv) and the new state (B, H, D, Dv)."""
        raise NotImplementedError

    # ---- the calls: gates by the names the class declares --------------------------------------------
    # `forward` and `step` take the declared gates as keywords (the registry's gate contract); written
    # once here, so a variant holds only its maths (prepare / chunk / recurrent_step).
    takes_declared_gates = True  # attnlab.attention.registry: **gates checked against `gates` by name

    def declared_gates(self, given: dict[str, Tensor]) -> dict[str, Tensor | None]:
        """{declared name: tensor or None} from the keywords a call passed; an undeclared one is an error."""
        declared = type(self).gates
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise TypeError(
                f"attention '{type(self).name}' got gate(s) {', '.join(unknown)} it does not declare; "
                f"its gates: {', '.join(declared) or 'none'}"
            )
        return {name: given.get(name) for name in declared}

    @fp32_accumulation
    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        **gates: Tensor,
    ) -> Tensor:
        """q, k (B, H, N, D), v (B, H, N, Dv), gates as declared -> (B, H, N, Dv)."""
        return self.run(q, k, v, self.declared_gates(gates), causal=causal, key_padding_mask=key_padding_mask)

    @fp32_accumulation
    def step(self, q: Tensor, k: Tensor, v: Tensor, state: State, **gates: Tensor) -> tuple[Tensor, State]:
        """One decoding step: q, k, v (B, H, 1, D), gates (B, H, 1[, D]) -> (B, H, 1, Dv), new state."""
        return self.run_step(q, k, v, self.declared_gates(gates), state)

    # ---- the shared rules ---------------------------------------------------------------------------
    def run(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        gates: dict[str, Tensor | None],
        *,
        causal: bool,
        key_padding_mask: Tensor | None,
    ) -> Tensor:
        self.require_gates(**gates)
        acc = torch.promote_types(q.dtype, torch.float32)  # at least fp32 (fp64 stays fp64)
        q32, k32, g32 = self.prepare(q.to(acc), k.to(acc), {n: t.to(acc) for n, t in gates.items()})
        v32 = v.to(acc)
        if key_padding_mask is not None:  # padded keys: identity steps
            k32 = k32.masked_fill(key_padding_mask[:, None, :, None], 0.0)
            if "g" in g32:
                padded = (
                    key_padding_mask[:, None, :, None] if g32["g"].dim() == 4 else key_padding_mask[:, None]
                )
                g32["g"] = g32["g"].masked_fill(padded, 0.0)
        out = self.chunk(q32, k32, v32, g32)  # (B, H, N, Dv)
        if not causal:  # + the right-to-left pass
            flip = {n: t.flip(2) for n, t in g32.items()}
            out = out + self.chunk(q32.flip(2), k32.flip(2), v32.flip(2), flip).flip(2)
        return (rms_normalise(out) if self.output_norm else out).to(q.dtype)

    def run_step(self, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor | None], state: State):
        self.require_gates(**gates)
        acc = state["S"].dtype  # fp32 state (init_state), whatever the input dtype
        q32, k32, g32 = self.prepare(q.to(acc), k.to(acc), {n: t.to(acc) for n, t in gates.items()})
        out, S = self.recurrent_step(q32, k32, v.to(acc), g32, state["S"])
        out = rms_normalise(out) if self.output_norm else out
        return out.to(q.dtype), {"S": S}

    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        # (B, H, D, Dv) fp32, whatever the model's dtype
        return {"S": torch.zeros(batch, heads, head_dim, head_dim, device=device, dtype=torch.float32)}
