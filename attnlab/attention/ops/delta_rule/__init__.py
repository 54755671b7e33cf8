"""The (gated) delta rule (DeltaNet, gated DeltaNet, gated DeltaProduct): reference.py the
recurrence, chunk.py the chunked WY/UT form."""

from attnlab.attention.ops.delta_rule.chunk import chunk_delta_rule
from attnlab.attention.ops.delta_rule.reference import naive_recurrent_delta_rule, recurrent_step_delta_rule

__all__ = ["chunk_delta_rule", "naive_recurrent_delta_rule", "recurrent_step_delta_rule"]
