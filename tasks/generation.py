"""Greedy and beam-search decoding over the Decoder's incremental API.

    state = decoder.start(memory, memory_padding_mask)         # cross-attention keys/values, once
    logits, state = decoder.step(token, state)                 # token (B,) -> logits (B, V)
    state = state.select(index)                                # reorder rows (beams)

Each step feeds one token per row, so a step costs what the variant's state costs: O(t) for the
softmax KV cache, O(1) in the generated length t for linear/performer (running sums) and local
(rolling window). Variants without a state make the Decoder recompute the prefix (logged once).

Beam search keeps finished hypotheses in the beam (they extend only by themselves, at no cost) and
ranks candidates by score / length**length_penalty; with beam=1 it is exactly greedy decoding.
Outputs are token id lists without BOS, EOS or padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.nn import Decoder


@dataclass
class DecodeConfig:
    """How a generation task decodes (`task.decode`): the single source of these defaults, stored as
    the config `task/decode/default` that translate and summarise list in their defaults."""

    beam: int = 4  # test-time beam size (1 = greedy)
    length_penalty: float = 1.0  # hypotheses ranked by log-prob / length**length_penalty
    max_new_tokens: int = 128  # capped at model.max_len - 1
    val_samples: int = 64  # the validation metric on the first N validation rows (keeps validation cheap)
    val_beam: int = 1  # greedy during validation
    test_samples: int | None = None  # None = every test row
    table_rows: int = 50  # rows of the wandb samples table (all go to <run_dir>/samples_test.jsonl)


# CPU kernels run synchronously, so asking whether every row has finished costs nothing there; on an
# accelerator the question waits for the queued kernels, so it is asked every few steps only.
ACCELERATOR_CHECK_EVERY = 8


def _budget(decoder: Decoder, max_new_tokens: int) -> int:
    """At most max_new_tokens steps, and never past the decoder's positional table (BOS takes one)."""
    if max_new_tokens < 1:
        raise ValueError(f"task.decode.max_new_tokens={max_new_tokens} must be >= 1")
    return min(max_new_tokens, decoder.positions.max_len - 1)


def _time_to_check(step: int, device: torch.device) -> bool:
    """Whether to ask (a host sync) if every row has finished after `step`."""
    return device.type == "cpu" or (step + 1) % ACCELERATOR_CHECK_EVERY == 0


def _ban_(logits: Tensor, banned: Tensor) -> Tensor:
    """Tokens a hypothesis may never produce (BOS, padding): logits (B, V) set to -inf there, in place."""
    return logits.index_fill_(1, banned, float("-inf"))


def _strip(row: list[int], eos_id: int, pad_id: int) -> list[int]:
    """A generated row without what follows its EOS, the EOS itself, and padding."""
    row = row[: row.index(eos_id)] if eos_id in row else row
    return [t for t in row if t != pad_id]


@torch.no_grad()
def greedy(
    decoder: Decoder,
    memory: Tensor,
    memory_padding_mask: Tensor | None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
) -> list[list[int]]:
    """Argmax decoding: memory (B, N, C) -> B token lists."""
    B, device = memory.shape[0], memory.device
    budget = _budget(decoder, max_new_tokens)
    banned = torch.tensor([bos_id, pad_id], device=device)
    state = decoder.start(memory, memory_padding_mask)
    token = torch.full((B,), bos_id, dtype=torch.long, device=device)  # (B,)
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    out = torch.full((B, budget), pad_id, dtype=torch.long, device=device)  # (B, budget)
    for step in range(budget):
        logits, state = decoder.step(token, state)  # (B, V)
        token = _ban_(logits, banned).argmax(-1).masked_fill_(done, pad_id)  # finished rows emit padding
        out[:, step] = token
        done |= token == eos_id
        if _time_to_check(step, device) and bool(done.all()):
            break
    return [_strip(row, eos_id, pad_id) for row in out.tolist()]


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    memory: Tensor,
    memory_padding_mask: Tensor | None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    beam: int = DecodeConfig.beam,
    length_penalty: float = DecodeConfig.length_penalty,
) -> list[list[int]]:
    """Beam search: memory (B, N, C) -> B token lists (the best hypothesis of each row).

    All B x K hypotheses step together as one batch of B*K rows (row b*K + j: beam j of source b).
    The cross attention state is computed once per source, copied to its K beams once, and never
    reordered: a beam's parent always has the same source (DecodingState.select(same_source=True))."""
    if beam < 1:
        raise ValueError(f"task.decode.beam={beam} must be >= 1")
    B, K, device = memory.shape[0], beam, memory.device
    banned = torch.tensor([bos_id, pad_id], device=device)
    rows = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,) source row of each hypothesis
    state = decoder.start(memory, memory_padding_mask).select(rows)
    offsets = torch.arange(B, device=device)[:, None] * K  # (B, 1) first row of each source
    token = torch.full((B * K,), bos_id, dtype=torch.long, device=device)  # (B*K,)
    scores = torch.full((B, K), float("-inf"), device=device)  # (B, K) summed log-probabilities
    scores[:, 0] = 0.0  # one live hypothesis at the start, so beams do not duplicate it
    done = torch.zeros(B, K, dtype=torch.bool, device=device)  # (B, K) ended with EOS
    lengths = torch.zeros(B, K, device=device)  # (B, K) tokens generated, EOS included
    history = torch.zeros(B, K, 0, dtype=torch.long, device=device)  # (B, K, t)
    for step in range(_budget(decoder, max_new_tokens)):
        logits, state = decoder.step(token, state)  # (B*K, V)
        logp = torch.log_softmax(_ban_(logits.float(), banned), -1)  # (B*K, V)
        # Only a hypothesis's own K best tokens can enter the next beam (its continuations share its
        # score and length), so the ranking runs over K*K candidates per source, never K*V.
        Kp = min(K, logp.shape[-1])
        logp, best_tokens = logp.topk(Kp, dim=-1)  # (B*K, K') each
        logp = logp.view(B, K, Kp)  # (B, K, K') log-probabilities
        # A finished hypothesis has one continuation (padding) that keeps its score and length.
        logp = logp.masked_fill(done[..., None], float("-inf"))
        logp[..., 0].masked_fill_(done, 0.0)
        tokens = best_tokens.view(B, K, Kp).masked_fill(done[..., None], pad_id)  # (B, K, K')
        cand_len = lengths + (~done).float()  # (B, K) length of every continuation of each hypothesis
        cand = (scores[..., None] + logp).view(B, K * Kp)  # (B, K*K') summed log-probabilities
        ranked = cand  # length-normalised: score / length**length_penalty (one factor per parent)
        if length_penalty != 0.0:
            norm = cand_len.clamp(min=1.0).pow(length_penalty)  # (B, K)
            ranked = (cand.view(B, K, Kp) / norm[..., None]).view(B, K * Kp)
        top = ranked.topk(K, dim=-1).indices  # (B, K)
        parent, token_bk = top // Kp, tokens.view(B, K * Kp).gather(1, top)  # (B, K) each
        scores = cand.gather(1, top)
        lengths = cand_len.gather(1, parent)
        was_done = done.gather(1, parent)
        done = was_done | (token_bk == eos_id)
        history = torch.cat(
            [history.gather(1, parent[..., None].expand(-1, -1, history.shape[-1])), token_bk[..., None]], -1
        )
        state = state.select((parent + offsets).view(-1), same_source=True)  # (B*K,) rows of the parents
        token = token_bk.view(-1)  # (B*K,) padding for finished hypotheses
        if _time_to_check(step, device) and bool(done.all()):
            break
    final = scores / lengths.clamp(min=1.0).pow(length_penalty)  # (B, K)
    final = final.masked_fill(~torch.isfinite(scores), float("-inf"))
    best = final.argmax(-1)  # (B,)
    chosen = history[torch.arange(B, device=device), best].tolist()  # (B, t)
    return [_strip(row, eos_id, pad_id) for row in chosen]


def generate(
    decoder: Decoder,
    memory: Tensor,
    memory_padding_mask: Tensor | None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    beam: int = 1,
    length_penalty: float = DecodeConfig.length_penalty,
) -> list[list[int]]:
    """Greedy when beam == 1, beam search otherwise."""
    common = {"bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id, "max_new_tokens": max_new_tokens}
    if beam == 1:
        return greedy(decoder, memory, memory_padding_mask, **common)
    return beam_search(
        decoder, memory, memory_padding_mask, beam=beam, length_penalty=length_penalty, **common
    )
