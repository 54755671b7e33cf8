"""FLOP counting with `torch.utils.flop_counter`, completed where it would miscount attention.

FlopCounterMode gets these formulas through its `custom_mapping` (nothing global changes):

- PyTorch's CPU attention kernel: FlopCounterMode knows the CUDA SDPA kernels but not
  `_scaled_dot_product_flash_attention_for_cpu` (what F.scaled_dot_product_attention runs on CPU),
  which it would count as 0. It gets the formula PyTorch uses for the CUDA kernels.
- In-place products: formulas are keyed by op, and `baddbmm_` / `addmm_` (the accumulating products
  of the linear-attention kernels) are ops of their own, so they counted nothing: a third of causal
  `linear`'s FLOPs. They get the formulas of `baddbmm` / `addmm`.
- Causal SDPA: upstream counts every SDPA kernel as dense. Under `is_causal` the fused kernels (CPU
  flash, CUDA flash, memory-efficient, cuDNN) skip the blocks above the diagonal, so a causal call
  is counted over the (query, key) pairs the mask keeps (top-left aligned, as SDPA's `is_causal`):
  N(N+1)/2 of N² in self-attention, the convention of FlashAttention's and Megatron's FLOP counts.
  An explicit `attn_mask` stays dense: the kernels do compute every masked block.
- Products computed in C: the chunked delta rule's chunk loops and `local`'s window kernels
  (attention/cpu/kernels.py) are custom ops that come with their formulas.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

INPLACE_PRODUCTS = {"baddbmm_": "baddbmm", "addmm_": "addmm"}  # in-place op -> op with the same formula
CPU_SDPA = "_scaled_dot_product_flash_attention_for_cpu"
SDPA_KERNELS = (CPU_SDPA, "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                "_scaled_dot_product_cudnn_attention")  # fmt: skip
Formula = Callable[..., int]  # raw: (*op args, out_val=..., **op kwargs) -> FLOPs


def causal_pairs(nq: int, nk: int) -> int:
    """(query, key) pairs a top-left causal mask keeps: query i sees keys 0..i."""
    if nq <= nk:
        return nq * (nq + 1) // 2
    return nk * (nk + 1) // 2 + (nq - nk) * nk


def _raw(formula: Formula) -> Formula:
    """`formula` marked for FlopCounterMode's custom_mapping as taking the op's own arguments."""

    def raw(*args: Any, **kwargs: Any) -> int:
        return formula(*args, **kwargs)

    raw._get_raw = True  # type: ignore[attr-defined]  # (unmarked ones get tensor shapes instead)
    return raw


def _cpu_sdpa(query, key, value, *args, out_val=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


def _causal_aware(op: torch._ops.OpOverloadPacket, dense: Formula) -> Formula:
    """`dense`, scaled to the pairs a causal mask keeps when the call has is_causal=True."""
    names = [argument.name for argument in op.default._schema.arguments]

    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        flops = dense(*args, out_val=out_val, **kwargs)
        bound = {**dict(zip(names, args)), **kwargs}
        if not bound.get("is_causal"):
            return flops
        nq, nk = bound["query"].shape[-2], bound["key"].shape[-2]
        return flops * causal_pairs(nq, nk) // (nq * nk)

    return _raw(formula)


@functools.cache
def formulas() -> dict[torch._ops.OpOverloadPacket, Formula]:
    """The formulas given to FlopCounterMode on top of its own (see the module docstring)."""
    aten, registry = torch.ops.aten, flop_counter.flop_registry
    mapping: dict[torch._ops.OpOverloadPacket, Formula] = {}
    for inplace, op in INPLACE_PRODUCTS.items():  # the same arguments: (self, a, b, beta, alpha)
        mapping[getattr(aten, inplace)] = _raw(registry[getattr(aten, op)])
    for name in SDPA_KERNELS:
        for op_name in (name, f"{name}_backward"):
            op = getattr(aten, op_name, None)
            if op is None:  # not in this PyTorch build
                continue
            if op in registry:
                dense = registry[op]
            elif name == CPU_SDPA:
                dense = _cpu_sdpa_backward if op_name.endswith("_backward") else _cpu_sdpa
            else:
                continue
            mapping[op] = _causal_aware(op, dense)
    # Products computed in C come with their formulas (imported here, which also registers the ops, so
    # that importing this module does not import the attention package).
    from attnlab.attention.cpu import loop_flops

    mapping.update({op: _raw(formula) for op, formula in loop_flops().items()})
    return mapping


def counted(op: torch._ops.OpOverloadPacket) -> bool:
    """Whether count_flops counts `op` (an aten op such as torch.ops.aten.bmm)."""
    return op in flop_counter.flop_registry or op in formulas()


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of running fn()."""
    with FlopCounterMode(display=False, custom_mapping=formulas()) as counter:
        fn()
    return int(counter.get_total_flops())


def count_flops_inside(root: nn.Module, kind: type[nn.Module], fn: Callable[[], object]) -> int:
    """FLOPs of running fn() spent inside the forward of `root`'s submodules of type `kind` (e.g. every
    `attnlab.Attention` kernel, whatever attribute holds it); a `kind` nested in another counts once."""
    found = [m for m in root.modules() if isinstance(m, kind)]
    depth, total, counter = 0, 0, None

    def enter(module: nn.Module, args: Any) -> None:
        nonlocal depth, counter
        depth += 1
        if depth == 1:
            counter = FlopCounterMode(display=False, custom_mapping=formulas())
            counter.__enter__()

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal depth, total
        depth -= 1
        if depth == 0:
            counter.__exit__(None, None, None)
            total += int(counter.get_total_flops())

    handles = [m.register_forward_pre_hook(enter) for m in found]
    handles += [m.register_forward_hook(leave) for m in found]
    try:
        fn()
    finally:
        for handle in handles:
            handle.remove()
        if depth > 0:  # fn raised inside a kernel: leave the counter's mode
            counter.__exit__(None, None, None)
    return total
