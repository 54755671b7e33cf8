"""One benchmark point as a zero-argument callable: variant x N x mode x causal x target.

forward           no_grad forward pass
forward+backward  forward, then gradients of every input and parameter (grads reset per call)
decode            one generation step with a state pre-filled to N tokens (init_state/step)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.attention import KVCacheDecoding, build_attention, get_attention_class
from attnlab.attention.base import Attention, State, capability_error
from attnlab.attention.gates import with_example_gates
from attnlab.bench.config import BenchConfig, Setting
from attnlab.nn import AttentionSpec, TransformerBlock


class BudgetExceeded(Exception):
    """Preparing the point (pre-filling a decoding state) alone took longer than the time budget."""


@dataclass
class Workload:
    variant: str
    n: int
    setting: Setting
    fn: Callable[[], Any]
    impl: str = ""  # which module implements the target (block: attnlab.nn, the block tasks train)
    keep: list[Any] = field(default_factory=list)  # tensors the callable needs alive


def unsupported_reason(name: str, setting: Setting) -> str | None:
    """Why `name` cannot be measured under `setting` (the registry's own message), or None."""
    cls = get_attention_class(name)
    if setting.mode == "decode" and not cls.capabilities.incremental:
        return str(capability_error(cls, "incremental"))
    if setting.causal and not cls.capabilities.causal:
        return str(capability_error(cls, "causal"))
    return None


def kernel_shape(cfg: BenchConfig, name: str) -> tuple[int, int]:
    """(heads, head_dim) a variant runs with: fixed_heads keeps the model width heads*head_dim."""
    fixed = get_attention_class(name).fixed_heads
    if fixed is None:
        return cfg.heads, cfg.head_dim
    return fixed, cfg.heads * cfg.head_dim // fixed


def _randn(cfg: BenchConfig, *shape: int, grad: bool = False) -> Tensor:
    return torch.randn(*shape, device=cfg.device, dtype=cfg.dtype).requires_grad_(grad)


def _backward_fn(forward: Callable[[], Tensor], inputs: list[Tensor], grad_out: Tensor) -> Callable[[], Any]:
    # .backward() rather than autograd.grad: FlopCounterMode's module tracker rejects autograd.grad.
    def run() -> Any:
        for t in inputs:
            t.grad = None  # nothing accumulates between repeats
        forward().backward(grad_out)

    return run


def _no_grad(forward: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return forward()

    return run


def _prefill(kernel: Attention, cfg: BenchConfig, heads: int, head_dim: int, n: int) -> State:
    """A decoding state holding `n` earlier tokens."""
    state = kernel.init_state(cfg.batch, heads, head_dim, device=cfg.device, dtype=cfg.dtype)
    empty_cache = set(state) == {"k", "v"} and all(t.shape[2] == 0 for t in state.values())
    if isinstance(kernel, KVCacheDecoding) and empty_cache:  # the KV cache: fill it directly
        return {key: _randn(cfg, cfg.batch, heads, n, head_dim) for key in state}
    token = [_randn(cfg, cfg.batch, heads, 1, head_dim) for _ in range(3)]  # (B, H, 1, D)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(n):  # any other state: step through n tokens
            _, state = kernel.step(*token, state)
            if time.perf_counter() - start > cfg.time_budget_s:
                raise BudgetExceeded(f"pre-filling the decoding state took over {cfg.time_budget_s:g} s")
    return state


def _cast(module: nn.Module, cfg: BenchConfig) -> nn.Module:
    return module.to(device=cfg.device, dtype=cfg.dtype)


def attention_workload(cfg: BenchConfig, name: str, n: int, setting: Setting) -> Workload:
    heads, head_dim = kernel_shape(cfg, name)
    kernel = _cast(
        build_attention(name, **cfg.params[name], head_dim=head_dim, heads=heads, max_len=n), cfg
    ).eval()
    kernel = with_example_gates(kernel)  # a gated kernel, called without a layer, gets key-derived gates
    B = cfg.batch
    if setting.mode == "decode":
        state = _prefill(kernel, cfg, heads, head_dim, n)
        q, k, v = (_randn(cfg, B, heads, 1, head_dim) for _ in range(3))  # (B, H, 1, D)
        return Workload(name, n, setting, _no_grad(lambda: kernel.step(q, k, v, state)))
    grad = setting.mode == "forward+backward"
    q, k, v = (_randn(cfg, B, heads, n, head_dim, grad=grad) for _ in range(3))  # (B, H, N, D)

    def forward() -> Tensor:
        return kernel(q, k, v, causal=setting.causal)

    if not grad:
        return Workload(name, n, setting, _no_grad(forward))
    inputs = [q, k, v, *(p for p in kernel.parameters() if p.requires_grad)]
    return Workload(name, n, setting, _backward_fn(forward, inputs, torch.randn_like(q)))


def block_workload(cfg: BenchConfig, name: str, n: int, setting: Setting) -> Workload:
    d_model = cfg.heads * cfg.head_dim
    spec = AttentionSpec(name, dict(cfg.params[name]))
    block = TransformerBlock(
        d_model, cfg.heads, spec, max_len=n, mlp_ratio=4, dropout=0.0
    )  # what tasks train
    block = _cast(block, cfg).eval()
    impl = "attnlab.nn"
    B = cfg.batch
    if setting.mode == "decode":
        heads, head_dim = kernel_shape(cfg, name)
        # The state's content does not change the step's cost: a gated kernel is pre-filled with key-derived gates.
        state = _prefill(with_example_gates(block.self_attention.kernel), cfg, heads, head_dim, n)
        x1 = _randn(cfg, B, 1, d_model)  # (B, 1, C)
        return Workload(name, n, setting, _no_grad(lambda: block.step(x1, state)), impl)
    grad = setting.mode == "forward+backward"
    x = _randn(cfg, B, n, d_model, grad=grad)  # (B, N, C)

    def forward() -> Tensor:
        return block(x, causal=setting.causal)

    if not grad:
        return Workload(name, n, setting, _no_grad(forward), impl)
    inputs = [x, *(p for p in block.parameters() if p.requires_grad)]
    return Workload(name, n, setting, _backward_fn(forward, inputs, torch.randn_like(x)), impl)


def build_workload(cfg: BenchConfig, name: str, n: int, setting: Setting) -> Workload:
    torch.manual_seed(cfg.seed)
    if cfg.target == "block":
        return block_workload(cfg, name, n, setting)
    return attention_workload(cfg, name, n, setting)
