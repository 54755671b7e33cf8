"""Based's Taylor linear attention: reference.py the recurrence, chunk.py the chunked form."""

from attnlab.attention.ops.based.chunk import chunk_based, taylor_features
from attnlab.attention.ops.based.reference import naive_recurrent_based, recurrent_step_based

__all__ = ["chunk_based", "naive_recurrent_based", "recurrent_step_based", "taylor_features"]
