"""Decoder-only causal language model: the decoder stack without cross attention.

    ids (B, N) -> logits (B, N, V); position t sees tokens 0..t only.

Its layers are `model.layers` (a per-layer pattern, attnlab/nn/pattern.py: its length is the depth)
or, without one, `model.decoder_layers` layers of the run's `attention` (or `model.decoder.self_attention`);
each layer's variant must be causal-capable (the `decoder_self` role checks it when the model is built,
with a one-line error naming the layer otherwise).
Generation goes through `start` / `step`, as the seq2seq `Decoder`: a per-layer variant state when
the variant has one (KV cache, running sums, rolling window), else recomputation of the prefix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.attention.base import Attention, State
from attnlab.nn.positional import PositionalEmbedding
from attnlab.nn.segments import segment_positions, segment_starts
from attnlab.nn.spec import AttentionSpec
from attnlab.nn.transformer import (
    ModelConfig,
    TransformerBlock,
    fallback_name,
    scaled_embedding,
    stack_layers,
)

log = logging.getLogger(__name__)


class CausalLM(nn.Module):
    """Token embedding + positions + N causal blocks + tied output head. ids (B, N) -> (B, N, V)."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, spec: AttentionSpec):
        super().__init__()
        layers = stack_layers(cfg, spec, "decoder")
        self.max_len = cfg.max_len
        self.embed, self.embed_scale = scaled_embedding(vocab_size, cfg.d_model)  # the tied head's rows
        self.positions = PositionalEmbedding(cfg.positional, cfg.max_len, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = TransformerBlock.stack(cfg, layers)
        # token_shift (ModelConfig): per block, a map of the previous position's residual stream
        self.shifts = (
            nn.ModuleList(nn.Linear(cfg.d_model, cfg.d_model) for _ in layers) if cfg.token_shift else None
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight  # tied input/output embeddings
        self.incremental = all(layer.attention.capabilities.incremental for layer in layers)
        self._warned_fallback = False

    def forward(self, ids: Tensor, segments: Tensor | None = None) -> Tensor:
        return self.lm_head(self.hidden(ids, segments))  # (B, N, V)

    def hidden(self, ids: Tensor, segments: Tensor | None = None) -> Tensor:
        """The final (normalised) representations, before the output head: ids (B, N) -> (B, N, C).
        A loss over a few positions applies `lm_head` to those rows only (MQAR: its answers).
        segments (B, N): packed documents (attnlab.nn.segments); each is modelled as if alone."""
        positions = None if segments is None else segment_positions(segments)  # (B, N) from 0 per document
        x = self.dropout(
            self.positions.add(self.embed(ids) * self.embed_scale, positions=positions)
        )  # (B, N, C)
        for i, block in enumerate(self.blocks):
            if self.shifts is not None:
                previous = nn.functional.pad(x, (0, 0, 1, 0))[:, :-1]  # (B, N, C): position t holds x[t-1]
                if segments is not None:  # a document's first token has no previous one
                    previous = previous.masked_fill(segment_starts(segments)[..., None], 0.0)
                x = x + self.shifts[i](previous)
            x = block(x, causal=True, segments=segments)
        return self.norm(x)

    @property
    def takes_segments(self) -> bool:
        """Whether every layer can keep packed documents apart (natively or by unpacking them)."""
        return all(
            kernel.segments or kernel.key_padding_mask
            for kernel in (type(block.self_attention.kernel).capabilities for block in self.blocks)
        )

    # ---- generation -----------------------------------------------------------------------------
    def start(self, batch: int, *, device: torch.device, dtype: torch.dtype) -> LMState:
        """The state before the first token."""
        selfs: list[State] | None = None
        if self.incremental:
            selfs = [
                block.self_attention.init_state(batch, device=device, dtype=dtype) for block in self.blocks
            ]
        elif not self._warned_fallback:
            self._warned_fallback = True
            log.info(
                "self-attention '%s' has no incremental state: generation recomputes the prefix at every step",
                fallback_name(self.blocks),
            )
        previous = None
        if self.shifts is not None:  # the residual stream before each block at the previous position
            width = self.embed.embedding_dim
            previous = [torch.zeros(batch, 1, width, device=device, dtype=dtype) for _ in self.blocks]
        return LMState(selfs, ids=torch.zeros(batch, 0, dtype=torch.long, device=device), previous=previous)

    def step(self, token: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """Feed one token per row: token (B,) -> next-token logits (B, V) and the new state."""
        ids = torch.cat([state.ids, token[:, None]], dim=1)  # (B, t)
        if state.self_states is None:  # recomputation fallback for variants without a state
            return self.forward(ids)[:, -1], state.replace(ids=ids)
        t = state.ids.shape[1]
        x = self.positions.add(self.embed(token[:, None]) * self.embed_scale, offset=t)  # (B, 1, C)
        new_states, new_previous = [], []
        for i, (block, self_state) in enumerate(zip(self.blocks, state.self_states)):
            if self.shifts is not None:
                new_previous.append(x)
                x = x + self.shifts[i](state.previous[i])  # (B, 1, C)
            x, self_state = block.step(x, self_state)  # the same pre-norm block as in training
            new_states.append(self_state)
        changes = {"ids": ids, "self_states": new_states}
        if self.shifts is not None:
            changes["previous"] = new_previous
        return self.lm_head(self.norm(x))[:, -1], state.replace(**changes)

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy continuation: prompt (B, P) -> (B, P + max_new_tokens), capped at max_len tokens."""
        state = self.start(prompt.shape[0], device=prompt.device, dtype=self.embed.weight.dtype)
        logits = None
        for t in range(prompt.shape[1]):
            logits, state = self.step(prompt[:, t], state)
        out = prompt
        for _ in range(min(max_new_tokens, self.max_len - prompt.shape[1])):
            token = logits.argmax(-1)  # (B,)
            out = torch.cat([out, token[:, None]], dim=1)
            if out.shape[1] >= self.max_len:
                break
            logits, state = self.step(token, state)
        return out


@dataclass
class LMState:
    self_states: list[State] | None  # per layer variant state; None = recompute the prefix
    ids: Tensor  # (B, t) tokens fed so far
    previous: list[Tensor] | None = None  # token_shift: per block, the input at the last position (B, 1, C)

    def replace(self, **changes) -> LMState:
        return LMState(**{**self.__dict__, **changes})

    def select(self, index: Tensor) -> LMState:
        """Reorder/select batch rows (beam search)."""
        states = (
            None
            if self.self_states is None
            else [Attention.reorder_state(s, index) for s in self.self_states]
        )
        previous = None if self.previous is None else [p.index_select(0, index) for p in self.previous]
        return LMState(states, self.ids.index_select(0, index), previous)
