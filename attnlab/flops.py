"""FLOP counting with `torch.utils.flop_counter`, completed where it would count 0.

- PyTorch's CPU attention kernel: FlopCounterMode knows the CUDA SDPA kernels but not
  `_scaled_dot_product_flash_attention_for_cpu` (what F.scaled_dot_product_attention runs on CPU).
  We register the formula PyTorch uses for the CUDA kernels (dense: causal masking is not
  discounted, as upstream).
- In-place products: its formulas are keyed by op, and `baddbmm_` / `addmm_` (the accumulating
  products of the linear-attention kernels) are ops of their own, so they counted nothing: a third
  of causal `linear`'s FLOPs. They get the formulas of `baddbmm` / `addmm`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

_registered = False
INPLACE_PRODUCTS = {"baddbmm_": "baddbmm", "addmm_": "addmm"}  # in-place op -> op with the same formula


def _register_missing_formulas() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    aten = torch.ops.aten
    for inplace, op in INPLACE_PRODUCTS.items():
        packet = getattr(aten, inplace)
        if packet not in flop_counter.flop_registry:  # the same arguments: (self, a, b, beta, alpha)
            formula = flop_counter.flop_registry[getattr(aten, op)]
            flop_counter.register_flop_formula(packet, get_raw=True)(formula)
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None and forward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(forward, get_raw=True)
        def _cpu_sdpa(query, key, value, *args, out_val=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)

    if backward is not None and backward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(backward, get_raw=True)
        def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


def counted(op: torch._ops.OpOverloadPacket) -> bool:
    """Whether count_flops counts `op` (an aten op such as torch.ops.aten.bmm): FlopCounterMode's
    formulas and the ones registered here."""
    _register_missing_formulas()
    return op in flop_counter.flop_registry


def count_flops(fn: Callable[[], object], *, module_suffix: str | None = None) -> int:
    """FLOPs of running fn(); with module_suffix, only those inside modules whose name ends with it."""
    _register_missing_formulas()
    with FlopCounterMode(display=False) as counter:
        fn()
    if module_suffix is None:
        return int(counter.get_total_flops())
    counts = counter.get_flop_counts()
    # Nested names repeat the counts of their children: keep only the innermost matching modules.
    matching = [name for name in counts if name.endswith(module_suffix)]
    return int(sum(sum(counts[name].values()) for name in matching))
