"""Gated linear attention (retention, GLA, simple GLA): reference.py the recurrence, chunk.py the
chunked form."""

from attnlab.attention.ops.gated_linear.chunk import chunk_gla
from attnlab.attention.ops.gated_linear.reference import naive_recurrent_gla, recurrent_step_gla

__all__ = ["chunk_gla", "naive_recurrent_gla", "recurrent_step_gla"]
