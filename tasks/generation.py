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

    All hypotheses step together as one batch of B*K rows (row b*K + j: beam j of source b). The
    cross attention state is computed once per source, copied to its K beams once, and not
    reordered while beams are: a beam's parent always has the same source
    (DecodingState.select(same_source=True)). Sources whose K hypotheses have all ended leave the
    batch (once a quarter of it has), so a long sentence does not keep the short ones stepping."""
    if beam < 1:
        raise ValueError(f"task.decode.beam={beam} must be >= 1")
    B, K, device = memory.shape[0], beam, memory.device
    banned = torch.tensor([bos_id, pad_id], device=device)
    rows = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,) source row of each hypothesis
    state = decoder.start(memory, memory_padding_mask).select(rows)
    active = torch.arange(B, device=device)  # (Ba,) the sources still in the batch
    token = torch.full((B * K,), bos_id, dtype=torch.long, device=device)  # (Ba*K,)
    scores = torch.full((B, K), float("-inf"), device=device)  # (Ba, K) summed log-probabilities
    scores[:, 0] = 0.0  # one live hypothesis at the start, so beams do not duplicate it
    done = torch.zeros(B, K, dtype=torch.bool, device=device)  # (Ba, K) ended with EOS
    lengths = torch.zeros(B, K, device=device)  # (Ba, K) tokens generated, EOS included
    history = torch.zeros(B, K, 0, dtype=torch.long, device=device)  # (Ba, K, t)
    outputs: dict[int, list[int]] = {}
    for step in range(_budget(decoder, max_new_tokens)):
        Ba = active.shape[0]
        logits, state = decoder.step(token, state)  # (Ba*K, V)
        logp = torch.log_softmax(_ban_(logits.float(), banned), -1)  # (Ba*K, V)
        # Only a hypothesis's own K best tokens can enter the next beam (its continuations share its
        # score and length), so the ranking runs over K*K candidates per source, never K*V.
        Kp = min(K, logp.shape[-1])
        logp, best_tokens = logp.topk(Kp, dim=-1)  # (Ba*K, K') each
        logp = logp.view(Ba, K, Kp)  # (Ba, K, K') log-probabilities
        # A finished hypothesis has one continuation (padding) that keeps its score and length.
        logp = logp.masked_fill(done[..., None], float("-inf"))
        logp[..., 0].masked_fill_(done, 0.0)
        tokens = best_tokens.view(Ba, K, Kp).masked_fill(done[..., None], pad_id)  # (Ba, K, K')
        cand_len = lengths + (~done).float()  # (Ba, K) length of every continuation of each hypothesis
        cand = (scores[..., None] + logp).view(Ba, K * Kp)  # (Ba, K*K') summed log-probabilities
        ranked = cand  # length-normalised: score / length**length_penalty (one factor per parent)
        if length_penalty != 0.0:
            norm = cand_len.clamp(min=1.0).pow(length_penalty)  # (Ba, K)
            ranked = (cand.view(Ba, K, Kp) / norm[..., None]).view(Ba, K * Kp)
        top = ranked.topk(K, dim=-1).indices  # (Ba, K)
        parent, token_bk = top // Kp, tokens.view(Ba, K * Kp).gather(1, top)  # (Ba, K) each
        scores = cand.gather(1, top)
        lengths = cand_len.gather(1, parent)
        done = done.gather(1, parent) | (token_bk == eos_id)
        history = torch.cat(
            [history.gather(1, parent[..., None].expand(-1, -1, history.shape[-1])), token_bk[..., None]], -1
        )
        first_rows = torch.arange(Ba, device=device)[:, None] * K  # (Ba, 1)
        state = state.select((parent + first_rows).view(-1), same_source=True)  # (Ba*K,) the parents' rows
        token = token_bk.view(-1)  # (Ba*K,) padding for finished hypotheses
        if not _time_to_check(step, device):
            continue
        ended = done.all(-1)  # (Ba,) sources whose every hypothesis has ended
        n_ended = int(ended.sum())
        if n_ended == Ba:
            break
        if 4 * n_ended >= Ba:  # a quarter of the batch has ended: take it out
            outputs |= _best(active[ended], scores[ended], lengths[ended], history[ended], length_penalty)
            keep = (~ended).nonzero().squeeze(1)  # (Ba',)
            active, scores, lengths, done, history = (
                x[keep] for x in (active, scores, lengths, done, history)
            )
            beam_rows = (keep[:, None] * K + torch.arange(K, device=device)).view(-1)  # (Ba'*K,)
            state, token = state.select(beam_rows), token[beam_rows]
    outputs |= _best(active, scores, lengths, history, length_penalty)
    return [_strip(outputs[b], eos_id, pad_id) for b in range(B)]


def _best(
    sources: Tensor, scores: Tensor, lengths: Tensor, history: Tensor, length_penalty: float
) -> dict[int, list[int]]:
    """{source: its best hypothesis's tokens} by score / length**length_penalty; sources (S,),
    scores and lengths (S, K), history (S, K, t)."""
    final = scores / lengths.clamp(min=1.0).pow(length_penalty)  # (S, K)
    final = final.masked_fill(~torch.isfinite(scores), float("-inf"))
    best = final.argmax(-1)  # (S,)
    chosen = history[torch.arange(len(sources), device=history.device), best]  # (S, t)
    return dict(zip(sources.tolist(), chosen.tolist()))


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
