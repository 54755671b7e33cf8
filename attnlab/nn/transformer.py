"""Pre-norm Transformer blocks, encoder, causal decoder with cross attention, encoder-decoder."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.attention import get_attention_class
from attnlab.attention.base import State
from attnlab.errors import ConfigError
from attnlab.nn.layer import MultiHeadAttention
from attnlab.nn.layer_options import LayerOptions
from attnlab.nn.pattern import LayerSpec, check_role, parse_pattern
from attnlab.nn.positional import ROPE_BASE, PositionalEmbedding
from attnlab.nn.spec import AttentionSpec

log = logging.getLogger(__name__)


@dataclass
class EncoderRoles:
    self_attention: str | None = None  # None = the run's `attention`
    layers: list[Any] | None = (
        None  # this stack's per-layer pattern (attnlab/nn/pattern.py); None = model.layers
    )


@dataclass
class DecoderRoles:
    self_attention: str | None = None  # must be causal-capable
    cross_attention: str | None = None  # must support cross attention and key padding masks
    layers: list[Any] | None = (
        None  # this stack's per-layer pattern (attnlab/nn/pattern.py); None = model.layers
    )


@dataclass
class ModelConfig:
    """Model hyperparameters: the single source of their defaults (stored as the schema of `model=`)."""

    d_model: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    mlp_ratio: int = 4
    dropout: float = 0.1
    # The longest sequence the model takes (an absolute table's size); longer text is cut with a logged
    # count. null: as long as the task's generated rows (attnlab.config.sequence_lengths.resolve_max_len)
    max_len: int | None = 512
    # sinusoidal | learned (absolute, added to the embeddings, up to max_len) | rope | alibi | none
    # (in the self-attention layers, any length): attnlab/nn/positional.py, docs/positions.md
    positional: str = "sinusoidal"
    rope_base: float = ROPE_BASE  # RoPE's θ base (positional=rope)
    # Causal LM only: before each block, add a learned map of the previous position's residual stream
    # (a 2-tap causal "token shift", as RWKV; the short convolutions of H3/Based/Mamba/fla layers play
    # the same part). It hands every layer the previous token, which an attention layer otherwise has
    # to learn to fetch (an induction head's first half). The MQAR, MAD and passkey presets turn it on
    # (its effect on MQAR: docs/measurements.md "The MQAR preset's token shift and output head").
    token_shift: bool = False
    # The output head shares the token embedding's weights (Press & Wolf 2017); the recall presets untie
    # it (measured against the tied head in the same section of docs/measurements.md).
    tie_embeddings: bool = True
    # Encoder-decoder only: the encoder's and the decoder's token embeddings are one matrix (and, with
    # tie_embeddings, the output head too: fairseq's --share-all-embeddings), so a token such as "%s"
    # or "--force" means the same on both sides, which copying it needs. Needs one vocabulary for
    # both sides (task.data.shared_tokenizer=true).
    share_embeddings: bool = False
    # One variant per layer (attnlab/nn/pattern.py): [gated_deltanet*3,multihead]; its length is the depth
    # of each stack it applies to (model.encoder.layers / model.decoder.layers: one stack's own).
    # None = `attention` at every layer.
    layers: list[Any] | None = None
    # Layer options around every self-attention kernel (attnlab/nn/layer_options.py; defaults there).
    short_conv: int = LayerOptions.short_conv  # causal depthwise convolution width on q, k, v; 0 = off
    output_gate: bool = LayerOptions.output_gate  # sigmoid gate from the token on the attention output
    qk_norm: bool = LayerOptions.qk_norm  # RMS norm of q and k per head
    encoder: EncoderRoles = field(default_factory=EncoderRoles)
    decoder: DecoderRoles = field(default_factory=DecoderRoles)

    @classmethod
    def from_config(cls, cfg) -> ModelConfig:
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
        data["encoder"] = EncoderRoles(**dict(data.get("encoder") or {}))
        data["decoder"] = DecoderRoles(**dict(data.get("decoder") or {}))
        return cls(**data)


def stack_layers(cfg: ModelConfig, spec: AttentionSpec, stack: str) -> list[LayerSpec]:
    """The layers of the encoder's or the decoder's self-attention stack (`stack`: "encoder" or "decoder";
    a causal LM's is "decoder"): the stack's own pattern, else model.layers, else the role's variant
    at each of model.<stack>_layers; role capabilities checked per layer."""
    roles = cfg.encoder if stack == "encoder" else cfg.decoder
    role = f"{stack}_self"
    options = LayerOptions.from_config(cfg)
    own = roles.layers is not None
    pattern = roles.layers if own else cfg.layers
    if pattern is None:
        role_spec = spec.for_role(role, roles.self_attention)
        return [LayerSpec(role_spec, options)] * getattr(cfg, f"{stack}_layers")
    key = f"model.{stack}.layers" if own else "model.layers"
    if roles.self_attention not in (None, spec.name):
        raise ConfigError(
            f"model.{stack}.self_attention={roles.self_attention} and {key} both choose the {stack}'s layers; "
            f"drop model.{stack}.self_attention and name the variant in {key}"
        )
    layers = parse_pattern(pattern, attention=spec, options=options, key=key)
    check_role(layers, role, key)
    return layers


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ratio: int, dropout: float):
        super().__init__(
            nn.Linear(d_model, ratio * d_model),
            nn.GELU(),
            nn.Linear(ratio * d_model, d_model),
            nn.Dropout(dropout),
        )


class TransformerBlock(nn.Module):
    """Pre-norm block: x + SelfAttn(LN x) [+ CrossAttn(LN x, memory)] + MLP(LN x).

    The one block of attnlab: the encoder, the decoder (forward and `step`) and the bench's
    `target=block` all run it, so what is trained is what is decoded and measured."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        self_spec: AttentionSpec,
        *,
        max_len: int,
        cross_spec: AttentionSpec | None = None,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        positional: str = "none",
        rope_base: float = ROPE_BASE,
        options: LayerOptions | None = None,
    ):
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadAttention(
            d_model,
            heads,
            self_spec,
            max_len=max_len,
            dropout=dropout,
            positional=positional,
            rope_base=rope_base,
            options=options,
        )  # positions (rope/alibi) in self attention only: cross attention relates no positions
        self.cross_attention = None
        if cross_spec is not None:
            self.norm_cross = nn.LayerNorm(d_model)
            self.cross_attention = MultiHeadAttention(
                d_model, heads, cross_spec, max_len=max_len, dropout=dropout
            )
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, mlp_ratio, dropout)

    @classmethod
    def stack(
        cls, cfg: ModelConfig, layers: Sequence[LayerSpec], *, cross_spec: AttentionSpec | None = None
    ) -> nn.ModuleList:
        """One block per layer spec (`stack_layers`), sized by the model config (d_model, heads, max_len,
        mlp_ratio, dropout, positional, rope_base)."""
        return nn.ModuleList(
            cls(cfg.d_model, cfg.heads, layer.attention, max_len=cfg.max_len, cross_spec=cross_spec,
                mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout, positional=cfg.positional,
                rope_base=cfg.rope_base, options=layer.options)
            for layer in layers
        )  # fmt: skip

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool = False,
        padding_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        segments: Tensor | None = None,
    ) -> Tensor:
        x = x + self.self_attention(
            self.norm_self(x),
            causal=causal,
            key_padding_mask=None if causal else padding_mask,
            segments=segments,  # packed documents (B, N): self attention stays inside each
        )
        if self.cross_attention is not None:
            x = x + self.cross_attention(self.norm_cross(x), memory, key_padding_mask=memory_padding_mask)
        return x + self.mlp(self.norm_mlp(x))

    def step(self, x: Tensor, state: State, *, memory: State | None = None) -> tuple[Tensor, State]:
        """One causal decoding step of the same block: x (B, 1, C) -> (B, 1, C) and the new
        self-attention state; `memory` is the cross attention's state of the encoder memory
        (MultiHeadAttention.project_memory), computed once per source."""
        out, state = self.self_attention.step(self.norm_self(x), state)
        x = x + out
        if self.cross_attention is not None:
            x = x + self.cross_attention.attend_memory(self.norm_cross(x), memory)
        return x + self.mlp(self.norm_mlp(x)), state


def scaled_embedding(vocab_size: int, d_model: int) -> tuple[nn.Embedding, float]:
    """Vaswani et al./fairseq scaling for an embedding that a tied output head shares: rows N(0, 1/d),
    multiplied by √d on the way in, so the token signal matches the positions' while the initial
    logits are O(1) (loss ≈ ln V at step 0; N(0, 1) rows give ~64 at d=256, V=8000)."""
    embed = nn.Embedding(vocab_size, d_model)
    nn.init.normal_(embed.weight, std=d_model**-0.5)
    return embed, math.sqrt(d_model)


class Encoder(nn.Module):
    """Token embedding + positions + N bidirectional blocks. ids (B, N) -> (B, N, C).

    `scaled=True` (the encoder of an encoder-decoder, whose embedding the decoder may share) uses
    `scaled_embedding`; a classifier's encoder keeps N(0, 1) rows (same forward at initialisation)."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, spec: AttentionSpec, *, scaled: bool = False):
        super().__init__()
        layers = stack_layers(cfg, spec, "encoder")
        if scaled:
            self.embed, self.embed_scale = scaled_embedding(vocab_size, cfg.d_model)
        else:
            self.embed, self.embed_scale = nn.Embedding(vocab_size, cfg.d_model), 1.0
        self.positions = PositionalEmbedding(cfg.positional, cfg.max_len, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = TransformerBlock.stack(cfg, layers)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        x = self.dropout(self.positions.add(self.embed(ids) * self.embed_scale))  # (B, N, C)
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask)
        return self.norm(x)


class Decoder(nn.Module):
    """Causal decoder with cross attention over an encoder memory. ids (B, T) -> logits (B, T, V)."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, spec: AttentionSpec):
        super().__init__()
        layers = stack_layers(cfg, spec, "decoder")
        cross_spec = spec.for_role("cross", cfg.decoder.cross_attention)
        self.embed, self.embed_scale = scaled_embedding(vocab_size, cfg.d_model)  # the tied head's rows
        self.positions = PositionalEmbedding(cfg.positional, cfg.max_len, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = TransformerBlock.stack(cfg, layers, cross_spec=cross_spec)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight  # tied input/output embeddings
        self.incremental = all(layer.attention.capabilities.incremental for layer in layers)
        self._warned_fallback = False

    def forward(self, ids: Tensor, memory: Tensor, memory_padding_mask: Tensor | None = None) -> Tensor:
        x = self.dropout(self.positions.add(self.embed(ids) * self.embed_scale))  # (B, T, C)
        for block in self.blocks:
            x = block(x, causal=True, memory=memory, memory_padding_mask=memory_padding_mask)
        return self.lm_head(self.norm(x))  # (B, T, V)

    # ---- generation -----------------------------------------------------------------------------
    def start(self, memory: Tensor, memory_padding_mask: Tensor | None) -> DecodingState:
        """The state before the first generated token: each layer's cross attention state of the
        memory (its keys/values, or their summary) is computed here, once per source."""
        B = memory.shape[0]
        selfs: list[State] | None = None
        cross: list[State] = []
        if self.incremental:
            cross = [
                block.cross_attention.project_memory(memory, memory_padding_mask) for block in self.blocks
            ]
            selfs = [
                block.self_attention.init_state(B, device=memory.device, dtype=memory.dtype)
                for block in self.blocks
            ]
        elif not self._warned_fallback:
            self._warned_fallback = True
            log.info(
                "decoder self-attention '%s' has no incremental state: generation recomputes the prefix at every step",
                fallback_name(self.blocks),
            )
        return DecodingState(
            memory, memory_padding_mask, cross, selfs, ids=memory.new_zeros(B, 0, dtype=torch.long)
        )

    def step(self, token: Tensor, state: DecodingState) -> tuple[Tensor, DecodingState]:
        """Feed one token per row: token (B,) -> next-token logits (B, V) and the new state."""
        ids = torch.cat([state.ids, token[:, None]], dim=1)  # (B, t)
        if state.self_states is None:  # recomputation fallback for variants without a state
            logits = self.forward(ids, state.memory, state.memory_padding_mask)[:, -1]
            return logits, state.replace(ids=ids)
        t = state.ids.shape[1]
        x = self.positions.add(self.embed(token[:, None]) * self.embed_scale, offset=t)  # (B, 1, C)
        new_states = []
        for block, self_state, memory in zip(self.blocks, state.self_states, state.cross):
            x, self_state = block.step(x, self_state, memory=memory)
            new_states.append(self_state)
        return self.lm_head(self.norm(x))[:, -1], state.replace(ids=ids, self_states=new_states)


def fallback_name(blocks: nn.ModuleList) -> str:
    """The first self-attention variant of a stack without incremental state (for the fallback's log line)."""
    names = [block.self_attention.spec.name for block in blocks]
    return next((n for n in names if not get_attention_class(n).capabilities.incremental), names[0])


@dataclass
class DecodingState:
    memory: Tensor  # (B, Nk, C)
    memory_padding_mask: Tensor | None  # (B, Nk)
    cross: list[State]  # per layer, the cross attention's memory_state (computed once); [] = fallback
    self_states: list[State] | None  # per layer variant state; None = recompute the prefix
    ids: Tensor  # (B, t) tokens fed so far

    def replace(self, **changes) -> DecodingState:
        return DecodingState(**{**self.__dict__, **changes})

    def select(self, index: Tensor, *, same_source: bool = False) -> DecodingState:
        """Reorder/select batch rows: index (B',) of rows to keep. `same_source=True` promises that each
        row is taken from a row with the same encoder memory (beam search reordering the hypotheses of
        one source), so the memory and the cross attention states stay as they are: no copy per step."""
        from attnlab.attention.base import Attention

        def rows(x: Tensor | None) -> Tensor | None:
            return x if x is None or same_source else x.index_select(0, index)

        return DecodingState(
            rows(self.memory),
            rows(self.memory_padding_mask),
            self.cross if same_source else [Attention.reorder_state(m, index) for m in self.cross],
            None
            if self.self_states is None
            else [Attention.reorder_state(s, index) for s in self.self_states],
            self.ids.index_select(0, index),
        )


class EncoderDecoder(nn.Module):
    """Sequence-to-sequence Transformer: encoder over the source, causal decoder over the target."""

    def __init__(
        self, vocab_size: int, cfg: ModelConfig, spec: AttentionSpec, target_vocab_size: int | None = None
    ):
        super().__init__()
        self.encoder = Encoder(vocab_size, cfg, spec, scaled=True)
        self.decoder = Decoder(target_vocab_size or vocab_size, cfg, spec)
        if cfg.share_embeddings:
            if (target_vocab_size or vocab_size) != vocab_size:
                raise ConfigError(
                    f"model.share_embeddings=true needs one vocabulary for source and target (got {vocab_size} and "
                    f"{target_vocab_size}); set task.data.shared_tokenizer=true or model.share_embeddings=false"
                )
            self.decoder.embed = self.encoder.embed  # one (V, C) matrix for both sides
            if cfg.tie_embeddings:
                self.decoder.lm_head.weight = self.encoder.embed.weight

    def forward(self, src: Tensor, src_padding_mask: Tensor | None, tgt_in: Tensor) -> Tensor:
        memory = self.encoder(src, src_padding_mask)  # (B, N, C)
        return self.decoder(tgt_in, memory, src_padding_mask)  # (B, T, V)
