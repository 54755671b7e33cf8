"""The delta rule with a per-dimension decay (KDA) and its DPLR generalisation (RWKV-7): reference.py
the recurrences, chunk.py the chunked forms."""

from attnlab.attention.ops.kda.chunk import chunk_dplr, chunk_kda
from attnlab.attention.ops.kda.reference import (
    naive_recurrent_dplr,
    naive_recurrent_kda,
    recurrent_step_dplr,
    recurrent_step_kda,
)

__all__ = [
    "chunk_dplr",
    "chunk_kda",
    "naive_recurrent_dplr",
    "naive_recurrent_kda",
    "recurrent_step_dplr",
    "recurrent_step_kda",
]
