"""MAD's six synthetic tasks (attnlab.data.mad) on task=lm's causal model.

Rows are mad-lab's (inputs, targets) pairs: {"ids": N tokens read, "targets": N tokens asked, IGNORE
where nothing is asked}. Unlike task=lm's rows the targets are not the inputs shifted (selective
copying and memorization ask tokens that never appear in the input), so this data module serves
them as they are; the task is LMTask's, counting loss, perplexity and accuracy at the asked positions.

Batches: {ids (B, N), targets (B, N), loss_mask (B, N) True where asked, padding_mask (B, N) True where
padded}. Baselines at test time as task=lm: test/baseline_acc (a uniform guess among the tokens asked
in train) and test/unigram_ppl.

kind=compression reads through a bottleneck, as mad-lab's AutoEncoder backbone: the causal stack's
last position (the compression token) is the only thing an MLP decoder sees, with the position to
reconstruct; every other kind reads the model's next-token head at each asked position.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.data import load_splits
from attnlab.data.generators import generator_params
from attnlab.data.mad import IGNORE, mad, vocabulary
from attnlab.errors import ConfigError, DataError
from attnlab.nn import CausalLM
from attnlab.nn.positional import PositionalEmbedding
from attnlab.tasks.common import EncodedDataModule
from attnlab.tasks.lm import LMTask, unigram_baselines

log = logging.getLogger(__name__)
COLUMNS = ("ids", "targets")
BOTTLENECK_KINDS = ("compression",)


class MADDataModule(EncodedDataModule):
    """Rows {ids, targets} -> (ids, targets) pairs -> {ids, targets, loss_mask, padding_mask}."""

    def __init__(self, data: Mapping, *, max_len: int, cache_dir: str | None = None):
        super().__init__()
        self.data, self.max_len, self.cache_dir = data, max_len, cache_dir
        self.batch_size = int(data["batch_size"])
        self.columns = {k: v for k, v in dict(data["columns"]).items() if v is not None}
        if set(self.columns) != set(COLUMNS):
            raise ConfigError(
                f"task.data.columns has {sorted(self.columns)}; task=mad reads {{ids: <column>, targets: <column>}}"
            )
        name, params = generator_params(data.get("builtin") or {})
        if name != "mad":
            raise ConfigError(f"task.data.builtin is generator '{name}'; task=mad reads the 'mad' generator")
        self.kind = str(params["kind"])  # the structured config always holds it
        self.vocab_size = vocabulary(self.kind, params.get("vocab_size"))
        self.pad_id = 0
        self.encoded: dict[str, list[tuple[list[int], list[int]]]] = {}
        self.baselines: dict[str, float] = {}

    @property
    def bottleneck(self) -> bool:
        return self.kind in BOTTLENECK_KINDS

    def setup(self, stage: str | None = None) -> None:
        if self.encoded:
            return
        rows = load_splits(self.data, columns=self.columns, builtin=mad, cache_dir=self.cache_dir)
        self.encoded = {
            split: [self._encode(r, i, split) for i, r in enumerate(rs)] for split, rs in rows.items()
        }
        for split, pairs in self.encoded.items():
            if not any(t != IGNORE for _, targets in pairs for t in targets):
                raise DataError(
                    f"the {split} split asks nothing (every target is {IGNORE}); nothing to score"
                )
        if self.bottleneck and len({len(ids) for pairs in self.encoded.values() for ids, _ in pairs}) > 1:
            raise DataError(
                "kind=compression rows differ in length; its bottleneck reads each row's last token"
            )
        asked = {
            s: [(_asked_tokens(t), [x != IGNORE for x in t]) for _, t in p] for s, p in self.encoded.items()
        }
        self.baselines = unigram_baselines(asked["train"], asked["test"], self.vocab_size)
        log.info(
            "mad %s: %s rows of <= %d tokens; vocab %d; chance accuracy %.4g",
            self.kind,
            ", ".join(f"{s}={len(v)}" for s, v in self.encoded.items()),
            max(len(ids) for pairs in self.encoded.values() for ids, _ in pairs),
            self.vocab_size,
            self.baselines["baseline_acc"],
        )

    def encode_rows(self, split: str, rows: list[dict], *, max_len: int) -> list:
        """Rows of `split` (generated at another length: task.eval_lengths) encoded as `setup` does."""
        return [self._encode(r, i, split, max_len=max_len) for i, r in enumerate(rows)]

    def _encode(
        self, row: Mapping, i: int, split: str, *, max_len: int | None = None
    ) -> tuple[list[int], list[int]]:
        ids, targets = [int(t) for t in row["ids"]], [int(t) for t in row["targets"]]
        where = f"row {i} of the {split} split"
        max_len = self.max_len if max_len is None else max_len
        if len(ids) != len(targets):
            raise DataError(f"{where}: ids ({len(ids)}) and targets ({len(targets)}) differ in length")
        if len(ids) > max_len:
            raise DataError(
                f"{where} has {len(ids)} tokens, more than model.max_len={max_len}; set model.max_len={len(ids)}"
            )
        if not all(0 <= t < self.vocab_size for t in ids) or not all(
            t == IGNORE or 0 <= t < self.vocab_size for t in targets
        ):
            raise DataError(f"{where} has token ids outside [0, vocab_size={self.vocab_size})")
        return ids, targets

    def collate(self, items: Sequence[tuple[list[int], list[int]]]) -> dict[str, Tensor]:
        n = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), n), self.pad_id, dtype=torch.long)  # (B, N)
        targets = torch.full((len(items), n), IGNORE, dtype=torch.long)  # (B, N)
        padding_mask = torch.ones(len(items), n, dtype=torch.bool)  # (B, N)
        for row, (row_ids, row_targets) in enumerate(items):
            ids[row, : len(row_ids)] = torch.as_tensor(row_ids)
            targets[row, : len(row_targets)] = torch.as_tensor(row_targets)
            padding_mask[row, : len(row_ids)] = False
        return {"ids": ids, "targets": targets, "loss_mask": targets != IGNORE, "padding_mask": padding_mask}


def _asked_tokens(targets: list[int]) -> list[int]:
    return [0 if t == IGNORE else t for t in targets]  # (ids, mask) windows for unigram_baselines


class BottleneckDecoder(nn.Module):
    """mad-lab's AutoEncoder decoder: the code plus a fixed position, through a two-layer MLP that keeps
    the width. code (B, C) -> (B, N, C), one row per position to reconstruct."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.positions = PositionalEmbedding("sinusoidal", max_len, d_model)
        self.mlp = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model),
            nn.GELU(),
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model),
            nn.GELU(),
            nn.LayerNorm(d_model),
        )

    def forward(self, code: Tensor, length: int) -> Tensor:
        return self.mlp(code[:, None, :] + self.positions(length)[None])  # (B, N, C)


class MADTask(LMTask):
    """LMTask on MAD's rows; with `bottleneck` (kind=compression) every asked token is decoded from
    the last position's representation alone."""

    def __init__(
        self,
        *,
        vocab_size: int,
        model: Mapping,
        attention: Mapping,
        baselines: Mapping[str, float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        bottleneck: bool = False,
    ):
        super().__init__(
            vocab_size=vocab_size,
            model=model,
            attention=attention,
            baselines=baselines,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
        )
        self.decoder: BottleneckDecoder | None = None
        if bottleneck:
            if not isinstance(self.model, CausalLM):
                raise ConfigError(
                    "task=mad kind=compression needs attnlab's own model (its bottleneck reads hidden states)"
                )
            self.decoder = BottleneckDecoder(int(model["d_model"]), int(model["max_len"]))

    @classmethod
    def from_datamodule(
        cls, *, datamodule: MADDataModule, model: Mapping, attention: Mapping, **hparams: Any
    ):
        return super().from_datamodule(
            datamodule=datamodule,
            model=model,
            attention=attention,
            bottleneck=datamodule.bottleneck,
            **hparams,
        )

    def counted_logits(self, batch: dict[str, Tensor]) -> Tensor:
        if self.decoder is None:
            return super().counted_logits(batch)  # (M, V)
        hidden = self.model.hidden(batch["ids"])  # (B, N, C)
        code = hidden[:, -1]  # (B, C): the compression token (rows share one length: no padding)
        decoded = self.decoder(code, batch["ids"].shape[1])  # (B, N, C)
        return self.model.lm_head(decoded[batch["loss_mask"]]).float()  # (M, V)
