"""Functional kernels of the gated linear-time family, in fla's shape: each op takes explicit tensors
in layout (B, H, N, D), gates (B, H, N) or (B, H, N, D), computes in the input's dtype (callers pass
fp32) and comes in three forms with one semantics:

    naive_*           the readable recurrence, one position at a time (the test oracle)
    chunk_*           the chunked parallel form for training (sub-quadratic, autograd backward)
    recurrent_step_*  one decoding step on an O(1) state

gated_linear  retention (fixed decay), GLA and simple GLA (data-dependent decay)
delta_rule    DeltaNet and gated DeltaNet (the delta rule, WY/UT-transformed chunks)
based         Based's Taylor feature map (linear attention over 2nd-order features)

Log decays `g` are natural logs (decay = exp(g) <= 1), as in fla.
"""

from attnlab.attention.ops.based import (
    chunk_based,
    naive_recurrent_based,
    recurrent_step_based,
    taylor_features,
)
from attnlab.attention.ops.delta_rule import (
    chunk_delta_rule,
    naive_recurrent_delta_rule,
    recurrent_step_delta_rule,
)
from attnlab.attention.ops.gated_linear import chunk_gla, naive_recurrent_gla, recurrent_step_gla
from attnlab.attention.ops.kda import (
    chunk_dplr,
    chunk_kda,
    naive_recurrent_dplr,
    naive_recurrent_kda,
    recurrent_step_dplr,
    recurrent_step_kda,
)

__all__ = [
    "chunk_based",
    "chunk_delta_rule",
    "chunk_dplr",
    "chunk_gla",
    "chunk_kda",
    "naive_recurrent_based",
    "naive_recurrent_delta_rule",
    "naive_recurrent_dplr",
    "naive_recurrent_gla",
    "naive_recurrent_kda",
    "recurrent_step_based",
    "recurrent_step_delta_rule",
    "recurrent_step_dplr",
    "recurrent_step_gla",
    "recurrent_step_kda",
    "taylor_features",
]
