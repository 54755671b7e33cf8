"""Sliding-window softmax attention by blocks (`local`, nsa's sliding branch, based's window): chunk.py."""

from attnlab.attention.ops.window.chunk import band_offsets, sliding_window_attention

__all__ = ["band_offsets", "sliding_window_attention"]
