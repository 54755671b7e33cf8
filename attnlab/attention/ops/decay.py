"""Decay factors e^x with the negligible ones flushed to exactly zero, shared by every chunked form that
decays a state (gated linear attention, the gated delta rule) and by the C kernels (cpu/kernels.py
passes FLUSH_BELOW to them, so both languages flush at the same threshold)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

FLUSH_BELOW = 1e-20  # decay factors below this are set to 0 (see flushed_exp)


def flushed_exp(x: Tensor) -> Tensor:
    """e^x as a new tensor, with values below FLUSH_BELOW (x < -46) set to exactly 0. A decay that
    small scales a term by less than 1e-20 of one that is not decayed, 13 orders of magnitude under
    fp32's resolution; left in, such factors and their products are subnormal floats, which x86 CPUs
    handle in microcode, far slower than normal ones (docs/measurements.md)."""
    return F.threshold_(x.exp(), FLUSH_BELOW, 0.0)


def flushed_exp_(x: Tensor) -> Tensor:
    """flushed_exp in place (x is a temporary of the caller's)."""
    return F.threshold_(x.exp_(), FLUSH_BELOW, 0.0)
