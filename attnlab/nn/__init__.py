"""Plain torch modules built around any registered attention variant."""

from attnlab.nn.causal_lm import CausalLM, LMState
from attnlab.nn.layer import MultiHeadAttention
from attnlab.nn.positional import PositionalEmbedding
from attnlab.nn.spec import AttentionSpec
from attnlab.nn.transformer import (
    Decoder,
    DecoderRoles,
    DecodingState,
    Encoder,
    EncoderDecoder,
    EncoderRoles,
    FeedForward,
    ModelConfig,
    TransformerBlock,
)

__all__ = [
    "DecoderRoles",
    "EncoderRoles",
    "AttentionSpec",
    "CausalLM",
    "LMState",
    "Decoder",
    "DecodingState",
    "Encoder",
    "EncoderDecoder",
    "FeedForward",
    "ModelConfig",
    "MultiHeadAttention",
    "PositionalEmbedding",
    "TransformerBlock",
]
