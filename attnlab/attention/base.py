"""The attention contract every variant implements.

A variant is a kernel over per-head tensors; it never owns the input/output projections
(those live in `attnlab.nn.MultiHeadAttention`).

    q: (B, H, Nq, D)   k: (B, H, Nk, D)   v: (B, H, Nk, Dv)   ->   (B, H, Nq, Dv)
    key_padding_mask: (B, Nk) bool, True where the key is padding and must be ignored.

Hyperparameters are keyword-only, typed arguments with defaults: the registry turns the signature
into the structured config, so they are declared exactly once. Three keyword names are *context*,
filled in by the layer rather than by the user: `head_dim`, `heads` and `max_len`.

Gates. A variant that needs projections of the token representation beside q, k and v (a decay,
a writing strength β) declares them, by name, in the class attribute `gates`:

    gates = {"g": GateSpec(per_dim=True), "beta": GateSpec()}

The layer (attnlab.nn.MultiHeadAttention) then owns one projection per gate, built by the variant's
`gate_projection` (a Linear of the layer input by default; a variant may override it, e.g. low rank),
computes it from the input of each token, and passes it to `forward` and `step` as a keyword tensor of
that name: (B, H, N) per head, (B, H, N, D) with per_dim. Gate tensors are unconstrained real values
(pre-activation); the variant maps them to its own domain (sigmoid, log decay...). Variants with no
gates, and plugins, see no change. Code that calls a gated kernel without a layer (tests, the bench's
attention target) wraps it in attnlab.attention.gates.KeyDerivedGates. docs/writing-a-variant-gates.md.

Allowed values are declared in the signature too, with `typing.Annotated` and `Range` (below); the
registry checks them before anything is built, for built-ins and plugins alike, and a value out of
range is a one-line ConfigError naming the key, the range and an example:

    def __init__(
        self,
        *,
        window: Annotated[int, Range(ge=1)] = 128,                   # an integer >= 1
        eps: Annotated[float, Range(gt=0)] = 1e-6,                   # a number > 0
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,          # in [0, 1)
        landmarks: Annotated[int, Range(ge=1, max_len_ratio=1)] = 32,  # also <= model.max_len
        conv_kernel: Annotated[int, Range(ge=1, odd=True, also=(0,))] = 0,  # odd, or 0 = off
    ): ...

The variant's own __init__ then need not check them again.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attnlab.errors import CapabilityError

# Keyword names a variant may declare to receive facts about the layer it sits in.
CONTEXT_PARAMETERS = ("head_dim", "heads", "max_len")

# The inputs on which `Attention.reference_tolerance` is measured, with default hyperparameters
# (the conformance suite builds it; plugins declaring a tolerance are held to it on the same data):
# B=2, H=2, N=64 (queries and keys), head_dim D=16, seed 0; q and k drawn N(0, 0.25²) per entry
# ("smooth": scores q·k/√D of order 0.06, so softmax weights are far from one-hot), v drawn
# N(0, 1); non-causal without padding, and causal too where the variant is causal-capable.
REFERENCE_FIXTURE = {"batch": 2, "heads": 2, "length": 64, "head_dim": 16, "qk_std": 0.25, "seed": 0}


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric hyperparameter, declared as `Annotated[int, Range(ge=1)]`.

    ge / gt / le / lt: inclusive / exclusive bounds (None = unbounded).
    max_len_ratio: the value may be at most this multiple of model.max_len: a resource bound (a
        landmark, feature or rank count far beyond the sequence buys nothing and can exhaust time or
        memory); checked against the run's model.max_len before anything is built, and by
        `build_attention(max_len=...)` for variants that take max_len (their weights depend on it).
    odd: the value must be odd (a centred convolution kernel).
    also: values accepted outside the range, e.g. `also=(0,)` for "0 = off".
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    max_len_ratio: float | None = None
    odd: bool = False
    also: tuple[Any, ...] = ()

    def describe(self, *, max_len: bool = True) -> str:
        """'>= 1', '> 0 and < 1', 'odd and >= 1 (or 0)', '>= 1 and <= model.max_len'; '' for none."""
        parts = [f"{op} {bound:g}" for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if bound is not None]  # fmt: skip
        if self.max_len_ratio is not None and max_len:
            parts.append(
                "<= " + ("" if self.max_len_ratio == 1 else f"{self.max_len_ratio:g} x ") + "model.max_len"
            )
        text = " and ".join(parts)
        if self.odd:
            text = f"odd and {text}" if text else "odd"
        if self.also:
            text += f" (or {', '.join(map(str, self.also))})"
        return text

    def violation(self, value: float) -> str | None:
        """Why `value` is outside the range (e.g. 'must be >= 1'), or None when it is allowed."""
        if value in self.also:
            return None
        inside = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
            and (not self.odd or int(value) % 2 == 1)
        )
        return None if inside else f"must be {self.describe(max_len=False)}"

    def example(self, value: float, default: Any) -> Any:
        """A valid value to suggest instead of `value`: the next odd number for an even one, else the default."""
        if self.odd and isinstance(value, int) and self.violation(value + 1) is None:
            return value + 1
        return default

    def max_len_violation(self, value: float, max_len: int) -> str | None:
        """Why `value` is too large for sequences of up to `max_len` positions, or None."""
        if self.max_len_ratio is None or value <= self.max_len_ratio * max_len:
            return None
        bound = int(self.max_len_ratio * max_len)
        if self.max_len_ratio == 1:
            return f"must be <= model.max_len={max_len}"
        return f"must be <= {self.max_len_ratio:g} x model.max_len={max_len} (i.e. <= {bound})"


# Incremental decoding state: named tensors whose dim 0 is the batch (so beams can be reordered).
State = dict[str, Tensor]


@dataclass(frozen=True)
class GateSpec:
    """A projection of the layer input a variant takes beside q, k, v: one value per head and token,
    (B, H, N), or one per head dimension too, (B, H, N, D), when `per_dim`."""

    per_dim: bool = False

    def shape(self, batch: int, heads: int, length: int, head_dim: int) -> tuple[int, ...]:
        return (batch, heads, length, head_dim) if self.per_dim else (batch, heads, length)


@dataclass(frozen=True)
class Capabilities:
    """What a variant can do, readable from the class before anything is built."""

    causal: bool = False  # autoregressive masking without leaking the future
    key_padding_mask: bool = False  # ignores padded keys
    cross: bool = False  # query and key lengths may differ (encoder-decoder cross attention)
    incremental: bool = False  # step-by-step decoding with a state (init_state / step)
    # takes an ALiBi distance bias: forward/step accept `alibi`, the per-head slopes (H,) (attention/alibi.py)
    alibi: bool = False
    # takes packed documents natively: forward accepts `segment_ids` (B, N) and no query sees a key of
    # another segment (attnlab/nn/segments.py honours them for other kernels with key padding masks)
    segments: bool = False

    DESCRIPTIONS: ClassVar[dict[str, str]] = {
        "causal": "causal (autoregressive) masking",
        "key_padding_mask": "key padding masks",
        "cross": "cross attention (query and key lengths differ)",
        "incremental": "incremental step-by-step decoding",
        "alibi": "an ALiBi distance bias (model.positional=alibi)",
        "segments": "packed-document segment ids (natively, or through key padding masks)",
    }

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]


class Attention(nn.Module):
    """Base class of every attention variant (built-in or plugin)."""

    # Set by @register_attention.
    name: ClassVar[str] = ""
    # Big-O cost in sequence length N, head dim d and the variant's own size (k landmarks, w window...).
    complexity: ClassVar[str] = "?"
    capabilities: ClassVar[Capabilities] = Capabilities()
    # A variant may fix its head count (the textbook single-head `full`); None = the model's `heads`.
    fixed_heads: ClassVar[int | None] = None
    # True when the variant computes exact softmax attention (the reference for approximations).
    exact: ClassVar[bool] = False
    # How close the variant claims to be to exact softmax attention (`full`, per head): the largest
    # absolute output difference on the conformance suite's smooth-input fixture, see
    # REFERENCE_FIXTURE. None = no claim (a different model, e.g. linear, local, lowrank); exact
    # variants claim ~1e-5 (fp32 round-off). The conformance suite (`python -m attnlab.check`) enforces it.
    reference_tolerance: ClassVar[float | None] = None
    # Projections of the layer input the variant takes as keyword tensors of these names (see above).
    gates: ClassVar[dict[str, GateSpec]] = {}

    def gate_projection(self, name: str, d_model: int, heads: int, head_dim: int) -> nn.Module:
        """The module the layer owns for gate `name`: (B, N, d_model) -> (B, N, heads·(head_dim|1))."""
        return nn.Linear(d_model, heads * (head_dim if type(self).gates[name].per_dim else 1))

    def require_gates(self, **given: Tensor | None) -> None:
        """Raise a clear error when a declared gate was not passed (a gated kernel called bare)."""
        missing = [name for name, value in given.items() if value is None]
        if missing:
            raise ValueError(
                f"attention '{type(self).name}' needs its gate tensor(s) {', '.join(missing)}: call it through "
                "attnlab.nn.MultiHeadAttention (which projects them from the layer input), or wrap it in "
                "attnlab.attention.gates.KeyDerivedGates"
            )

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    # ---- size, before building: attnlab.nn.estimate refuses what cannot fit ------------------------
    @classmethod
    def parameter_count(cls, params: dict[str, Any], *, heads: int, head_dim: int) -> int:
        """Weights the kernel itself owns with hyperparameters `params` (not the layer's projections)."""
        return 0

    @classmethod
    def working_memory(
        cls, params: dict[str, Any], *, batch: int, heads: int, length: int, head_dim: int
    ) -> int:
        """Floats one call over (batch, heads, length, head_dim) inputs holds beside q, k, v and the
        output, forward and backward. Default: one more q-sized tensor (an O(N) kernel's running sums);
        a variant whose intermediate grows with its own size (features, N² scores) says so."""
        return batch * heads * length * head_dim

    # ---- requests a variant cannot serve are errors, never silent wrong answers -------------------
    def __call__(
        self, q: Tensor, k: Tensor, v: Tensor, *args: Any, causal: bool = False,
        key_padding_mask: Tensor | None = None, **kwargs: Any,
    ) -> Tensor:  # fmt: skip
        """`attention(q, k, v, ...)`: the request is checked against the declared capabilities before
        `forward` runs, so a variant's forward holds only its maths (and never sees a request it did
        not declare). Once per call: internal calls of `self.forward` (KV-cache steps) are not checked."""
        self.check_request(q, k, causal=causal, key_padding_mask=key_padding_mask)
        return super().__call__(q, k, v, *args, causal=causal, key_padding_mask=key_padding_mask, **kwargs)

    def check_request(self, q: Tensor, k: Tensor, *, causal: bool, key_padding_mask: Tensor | None) -> None:
        """Raise CapabilityError when a call asks for something this variant does not declare.

        The framework calls it on every `attention(q, k, v, ...)` (see `__call__`); a variant may
        override it to accept more (or refuse more), and never needs to call it itself."""
        caps = type(self).capabilities
        if causal:
            if not caps.causal:
                raise capability_error(type(self), "causal")
            if q.shape[-2] != k.shape[-2]:
                raise ValueError(
                    f"causal attention needs equal query and key lengths, got Nq={q.shape[-2]}, Nk={k.shape[-2]}; "
                    "use incremental decoding (init_state/step) for generation"
                )
        if key_padding_mask is not None and not caps.key_padding_mask:
            raise capability_error(type(self), "key_padding_mask")
        if q.shape[-2] != k.shape[-2] and not caps.cross:
            raise capability_error(type(self), "cross")

    # ---- incremental decoding ---------------------------------------------------------------------
    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        """Empty decoding state for `batch` sequences (only for capabilities.incremental)."""
        raise capability_error(type(self), "incremental")

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: State) -> tuple[Tensor, State]:
        """One causal decoding step: q, k, v (B, H, 1, D) -> output (B, H, 1, Dv) and the new state."""
        raise capability_error(type(self), "incremental")

    @staticmethod
    def reorder_state(state: State, index: Tensor) -> State:
        """Select/reorder batch rows of a state (beam search)."""
        return {key: value.index_select(0, index) for key, value in state.items()}

    # ---- cross attention over a fixed memory (encoder-decoder decoding) ---------------------------
    def memory_state(self, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> State:
        """What decoding keeps of an encoder memory's keys (B, H, Nk, D) and values (B, H, Nk, Dv),
        computed once per source and read at every generated token by `attend_memory`. By default the
        keys, values and mask themselves; a variant whose cross attention reduces the memory to a
        summary (linear attention's Σ phi(k) vᵀ) keeps the summary instead. Batch in dim 0."""
        state = {"k": k, "v": v}
        if key_padding_mask is not None:
            state["key_padding_mask"] = key_padding_mask
        return state

    def attend_memory(self, q: Tensor, memory: State) -> Tensor:
        """Cross attention of q (B, H, Nq, D) over a `memory_state`: (B, H, Nq, Dv), equal to
        forward(q, k, v, key_padding_mask=...) on the keys and values it was made from."""
        return self(q, memory["k"], memory["v"], key_padding_mask=memory.get("key_padding_mask"))

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name, '?')!r}" for name in hyperparameter_names(type(self)))


def hyperparameter_names(cls: type[Attention]) -> list[str]:
    """The hyperparameters of `cls`, in signature order: the keyword-only parameters of its __init__
    other than CONTEXT_PARAMETERS (the registry checks their types, defaults and ranges)."""
    if cls.__init__ is Attention.__init__ or cls.__init__ is object.__init__:
        return []
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # skip self
    return [
        p.name
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in CONTEXT_PARAMETERS
    ]


class KVCacheDecoding:
    """Incremental decoding by caching keys and values; each step attends over the whole cache.

    Mixed into exact softmax variants: the step cost grows with the generated length (that is the
    honest cost of softmax attention), while recomputation of earlier positions is avoided.
    """

    def init_state(
        self, batch: int, heads: int, head_dim: int, *, device: torch.device, dtype: torch.dtype
    ) -> State:
        empty = torch.zeros(batch, heads, 0, head_dim, device=device, dtype=dtype)  # (B, H, 0, D)
        return {"k": empty, "v": empty.clone()}

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: State, *, alibi: Tensor | None = None
    ) -> tuple[Tensor, State]:
        keys = torch.cat([state["k"], k], dim=2)  # (B, H, t, D)
        values = torch.cat([state["v"], v], dim=2)  # (B, H, t, Dv)
        # The newest query may see every cached key; an ALiBi bias (slopes (H,)) aligns it to the last key.
        bias = {} if alibi is None else {"alibi": alibi}
        out = self.forward(q, keys, values, causal=False, **bias)
        return out, {"k": keys, "v": values}


def low_rank_projection(d_model: int, rank: int, out_features: int) -> nn.Module:
    """A gate projection through a bottleneck, (B, N, d_model) -> (B, N, rank) -> (B, N, out_features):
    the low-rank gate maps of fla's GLA, Kimi Linear and RWKV-7 (bias on the second map only)."""
    return nn.Sequential(nn.Linear(d_model, rank, bias=False), nn.Linear(rank, out_features))


# The registered variants that have a capability. The registry imports this module and installs its
# lookup when it loads (`attnlab.attention` loads both), so the contract can name the alternatives
# without importing the registry back.
_lookup: dict[str, Callable[[str], list[str]]] = {}


def install_variant_lookup(variants_with: Callable[[str], list[str]]) -> None:
    """Called once by attnlab.attention.registry: how `capability_error` finds the variants that can."""
    _lookup["variants_with"] = variants_with


def _variants_with(capability: str) -> list[str]:
    lookup = _lookup.get("variants_with")
    return lookup(capability) if lookup is not None else []


def capability_error(cls: type[Attention], capability: str) -> CapabilityError:
    """The error for asking `cls` for `capability`, naming the variants that have it."""
    able = [name for name in _variants_with(capability) if name != cls.name]
    what = Capabilities.DESCRIPTIONS.get(capability, capability)
    suggestion = f"; variants that support it: {', '.join(able)}" if able else ""
    return CapabilityError(f"attention '{cls.name}' does not support {what}{suggestion}")


def zero_padded_keys(x: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """Zero the rows of padded keys/values. x (B, H, Nk, D); mask (B, Nk) True = padding."""
    if key_padding_mask is None:
        return x
    return x.masked_fill(key_padding_mask[:, None, :, None], 0.0)


def describe(cls: type[Attention]) -> dict[str, Any]:
    """Name, complexity and capabilities of a variant class, for logs and results.json."""
    return {
        "name": cls.name,
        "complexity": cls.complexity,
        "exact": cls.exact,
        "fixed_heads": cls.fixed_heads,
        "capabilities": {f.name: getattr(cls.capabilities, f.name) for f in fields(cls.capabilities)},
    }


def allowed_keys(
    nq: int,
    nk: int,
    *,
    causal: bool,
    key_padding_mask: Tensor | None,
    device: torch.device,
    segment_ids: Tensor | None = None,
) -> Tensor | None:
    """Boolean (B|1, 1, Nq, Nk) mask, True where a query may attend to a key; None when all may.
    segment_ids (B, N) (self attention, Nq = Nk = N): a query sees only keys of its own segment."""
    allowed = None
    if causal:
        allowed = torch.ones(nq, nk, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, Nq, Nk)
    if key_padding_mask is not None:
        real = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Nk)
        allowed = real if allowed is None else allowed & real
    if segment_ids is not None:
        same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]  # (B, 1, N, N) block-diagonal
        allowed = same if allowed is None else allowed & same
    return allowed


def masked_softmax(scores: Tensor, allowed: Tensor | None) -> Tensor:
    """Softmax over the last dim restricted to `allowed` keys; rows with no allowed key give zeros.

    Masked scores are set to the dtype's lowest finite value (not -inf), so fully masked rows
    produce finite values and finite gradients, then are zeroed.
    """
    if allowed is None:
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)


def fp32_accumulation(method: Callable) -> Callable:
    """Run a kernel method with autocast disabled, so the fp32 sums it asks for stay fp32.

    Under torch.autocast, matmuls cast their inputs back to fp16/bf16 even after an explicit
    `.float()`; approximations that accumulate over the sequence (linear, performer, nystrom...)
    then overflow or lose precision. The decorated method receives the (possibly half) inputs, does
    its own fp32 casts, and returns in the input dtype.
    """

    @functools.wraps(method)
    def wrapper(self, q: Tensor, *args, **kwargs):
        with torch.autocast(device_type=q.device.type, enabled=False):
            return method(self, q, *args, **kwargs)

    return wrapper
