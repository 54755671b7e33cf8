"""Packed documents: per-token segment ids, and attention that never crosses a segment boundary.

    segments (B, N) int: one id per token, constant along each document of a row (documents are
    contiguous; ids need only differ between neighbouring documents). Decoding is one document.

A kernel that declares `Capabilities(segments=True)` takes them natively (`segment_ids=`: softmax
masks query-key pairs of different segments). For any other kernel with key padding masks the layer
honours them generically: each row's documents are unpacked into a right-padded batch of their own
(one document per row, positions from 0), the kernel runs on it with a key padding mask, and the
outputs are packed back: a recurrent state starts afresh with each document, a softmax sees only
its own document. A kernel with neither cannot be given segments (CapabilityError); the LM task then
falls back to one document per batch row at the data level (tasks/lm.py), with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def segment_starts(segments: Tensor) -> Tensor:
    """(B, N) True at the first token of each document (position 0 of every row included)."""
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return starts


def segment_positions(segments: Tensor) -> Tensor:
    """(B, N) each token's position inside its own document: 0 at every document start."""
    N = segments.shape[1]
    index = torch.arange(N, device=segments.device).expand_as(segments)  # (B, N)
    start_index = torch.where(segment_starts(segments), index, 0).cummax(dim=1).values  # (B, N)
    return index - start_index


@dataclass(frozen=True)
class Unpacked:
    """Where each packed token (b, n) goes in the batch of documents: row `document`, column `position`."""

    document: Tensor  # (B·N,) document (row) index of each packed token
    position: Tensor  # (B·N,) its position inside the document
    documents: int  # D rows
    length: int  # L: the longest document
    padding: Tensor  # (D, L) True where a document row is padding

    @classmethod
    def of(cls, segments: Tensor) -> Unpacked:
        starts = segment_starts(segments).reshape(-1)  # (B·N,): a row's first token starts a document
        document = starts.long().cumsum(0) - 1  # (B·N,)
        position = segment_positions(segments).reshape(-1)  # (B·N,)
        D, L = int(document[-1]) + 1, int(position.max()) + 1
        padding = torch.ones(D, L, dtype=torch.bool, device=segments.device)
        padding[document, position] = False
        return cls(document, position, D, L, padding)

    def unpack(self, x: Tensor) -> Tensor:
        """Packed x (B, H, N, ...) -> documents (D, H, L, ...), zeros where padded."""
        B, H, N = x.shape[:3]
        flat = x.transpose(1, 2).reshape(B * N, H, *x.shape[3:])  # (B·N, H, ...)
        out = x.new_zeros(self.documents, self.length, H, *x.shape[3:])  # (D, L, H, ...)
        out[self.document, self.position] = flat
        return out.transpose(1, 2)  # (D, H, L, ...)

    def unpack_mask(self, mask: Tensor | None) -> Tensor:
        """A packed key padding mask (B, N) or None -> (D, L): padded in the documents or in the rows."""
        if mask is None:
            return self.padding
        out = self.padding.clone()
        out[self.document, self.position] = mask.reshape(-1)
        return out

    def pack(self, y: Tensor, shape: torch.Size) -> Tensor:
        """Documents y (D, H, L, ...) -> packed (B, H, N, ...) of `shape`."""
        B, H, N = shape[:3]
        flat = y.transpose(1, 2)[self.document, self.position]  # (B·N, H, ...)
        return flat.reshape(B, N, H, *y.shape[3:]).transpose(1, 2)


def attend_in_segments(layer, q, k, v, gates, segments, *, causal: bool, key_padding_mask):
    """The layer's kernel over q, k, v (B, H, N, D) (and its gates) that never crosses a segment
    boundary -> (B, H, N, Dv); rope positions restart at each document."""
    from attnlab.attention.base import capability_error

    caps = type(layer.kernel).capabilities
    extra = layer.positions.kernel_inputs()
    if caps.segments:  # native: the kernel masks across segments itself
        q, k = layer.positions.rotate(q, k, segment_positions(segments))
        return layer.kernel(
            q, k, v, causal=causal, key_padding_mask=key_padding_mask, segment_ids=segments, **gates, **extra
        )
    if not caps.key_padding_mask:
        raise capability_error(type(layer.kernel), "segments")
    plan = Unpacked.of(segments)
    q, k, v = (plan.unpack(t) for t in (q, k, v))  # (D, H, L, ·)
    q, k = layer.positions.rotate(q, k)  # each document from position 0
    docs_gates = {name: plan.unpack(g) for name, g in gates.items()}  # (D, H, L[, D])
    mask = plan.unpack_mask(key_padding_mask)  # (D, L)
    out = layer.kernel(q, k, v, causal=causal, key_padding_mask=mask, **docs_gates, **extra)  # (D, H, L, Dv)
    return plan.pack(out, (*segments.shape[:1], out.shape[1], segments.shape[1]))
