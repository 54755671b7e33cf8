"""Causal language modelling: a decoder-only stack (attnlab.nn.CausalLM); next-token loss, perplexity
and token accuracy, beside a unigram baseline.

Two kinds of rows, chosen by the data config's `columns`:

- text (`columns: {text: ...}`; built-in: the shipped Python-docs corpus; or any hub set / local
  file): tokenized (bytes or BPE), PACKED into one stream with an EOS after each document and cut
  into windows of model.max_len + 1 tokens (attnlab.data.packing says why packing, not chunking);
  every token is a target. With task.data.packing.boundaries=true (the default) batches carry
  per-token segment ids, and no document sees another (attnlab.nn.segments): the EOS before a
  document opens it, as a BOS would. A model that cannot take segments gets one document per row.
- pre-tokenized (`columns: {ids: ..., loss_mask: ...}`; built-in: MQAR, task=mqar): each row is
  one example of at most model.max_len + 1 ids, over a vocabulary of `task.data.vocab_size`, with
  a per-token loss mask saying which tokens count (MQAR: only the answers).

Batches: {ids (B, N) inputs, targets (B, N) the next tokens, loss_mask (B, N) True where a target
counts, padding_mask (B, N) True where padded; segments (B, N) document ids, packed text only}. Loss, perplexity (exp of the mean loss) and
accuracy (argmax = target) are over the counted positions only.

Baselines, logged at test time: test/unigram_ppl, the perplexity of the train targets' token
frequencies (add-one smoothed over the vocabulary) on the test targets; test/baseline_acc, the
accuracy of a uniform guess among the tokens that are targets in train (for MQAR: chance among the
values).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from attnlab.data import build_tokenizer, load_splits
from attnlab.data.generators import generator_params, get_generator
from attnlab.data.packing import Window, pack, windows
from attnlab.errors import ConfigError, DataError
from attnlab.nn import AttentionSpec, CausalLM, ModelConfig
from attnlab.nn.hf_models import hf_causal_lm, is_hf_model
from attnlab.nn.segments import Unpacked
from attnlab.tasks.common import STAGES, AttnlabTask, EncodedDataModule

log = logging.getLogger(__name__)
TEXT_COLUMNS, TOKENIZED_COLUMNS = ("text",), ("ids", "loss_mask")


class LMDataModule(EncodedDataModule):
    """Rows -> windows of at most max_len + 1 tokens -> {ids, targets, loss_mask, padding_mask}."""

    def __init__(self, data: Mapping, *, max_len: int, cache_dir: str | None = None):
        super().__init__()
        self.data, self.max_len, self.cache_dir = data, max_len, cache_dir
        self.boundaries = bool((data.get("packing") or {}).get("boundaries", False))  # packed text only
        self.batch_size = int(data["batch_size"])
        self.columns = {k: v for k, v in dict(data["columns"]).items() if v is not None}
        if set(self.columns) not in (set(TEXT_COLUMNS), set(TOKENIZED_COLUMNS)):
            raise ConfigError(
                f"task.data.columns has {sorted(self.columns)}; a language model reads either {{text: <column>}} "
                f"(text, packed) or {{ids: <column>, loss_mask: <column>}} (pre-tokenized rows with a loss mask)"
            )
        self.tokenized = "ids" in self.columns
        self.tokenizer = None
        self.vocab_size = 0
        self.pad_id = 0
        self.encoded: dict[str, list[Window]] = {}
        self.baselines: dict[str, float] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.encoded:
            return
        name, _ = generator_params(self.data.get("builtin") or {})
        builtin = get_generator(name) if name else None
        rows = load_splits(self.data, columns=self.columns, builtin=builtin, cache_dir=self.cache_dir)
        if self.tokenized:
            self.vocab_size = int(self.data["vocab_size"])
        else:
            self.tokenizer = build_tokenizer(
                self.data["tokenizer"],
                train_texts=(str(r["text"]) for r in rows["train"]),
                vocab_size=self.data["vocab_size"],
                cache_dir=self.cache_dir,
            )
            self.vocab_size, self.pad_id = self.tokenizer.vocab_size, self.tokenizer.pad_id
        self.encoded = {
            split: self.encode_rows(split, split_rows, max_len=self.max_len)
            for split, split_rows in rows.items()
        }
        self.baselines = unigram_baselines(self.encoded["train"], self.encoded["test"], self.vocab_size)
        log.info(
            "lm data: %s windows of <= %d tokens; %s targets; vocab %d; test unigram ppl %.4g",
            ", ".join(f"{s}={len(v)}" for s, v in self.encoded.items()),
            self.max_len + 1,
            ", ".join(f"{s}={sum(sum(m) for _, m in v)}" for s, v in self.encoded.items()),
            self.vocab_size,
            self.baselines["unigram_ppl"],
        )

    def encode_rows(self, split: str, rows: list[dict], *, max_len: int) -> list[Window]:
        """One split's rows as windows of at most max_len + 1 tokens (text: packed and cut; pre-tokenized:
        one window per row, never cut)."""
        if self.tokenized:
            return self._tokenized_windows(split, rows, max_len)
        return self._text_windows(split, rows, max_len)

    def _text_windows(self, split: str, rows: list[dict], max_len: int) -> list[Window]:
        texts = [str(r["text"]) for r in rows]
        ids = self.tokenizer.encode_batch(texts) if hasattr(self.tokenizer, "encode_batch") else None
        ids = ids if ids is not None else [self.tokenizer.encode(t) for t in texts]
        stream, mask = pack(ids, eos_id=self.tokenizer.eos_id)
        out = windows(stream, mask, size=max_len + 1)
        if not out:
            raise DataError(f"the {split} split has no text to model; check task.data.columns.text")
        return out

    def _tokenized_windows(self, split: str, rows: list[dict], max_len: int) -> list[Window]:
        out: list[Window] = []
        for i, row in enumerate(rows):
            ids, mask = [int(t) for t in row["ids"]], [bool(m) for m in row["loss_mask"]]
            where = f"row {i} of the {split} split"
            if len(ids) != len(mask):
                raise DataError(f"{where}: ids ({len(ids)}) and loss_mask ({len(mask)}) differ in length")
            if len(ids) > max_len + 1:
                raise DataError(
                    f"{where} has {len(ids)} tokens, more than model.max_len + 1 = {max_len + 1}; "
                    f"pre-tokenized rows are not cut: set model.max_len={len(ids) - 1} or more"
                )
            if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
                raise DataError(
                    f"{where} has token ids outside [0, task.data.vocab_size={self.vocab_size}); "
                    f"set task.data.vocab_size={max(ids) + 1} or more"
                )
            out.extend(windows(ids, mask, size=max_len + 1))
        if not out:
            raise DataError(f"the {split} split has no position in its loss_mask; nothing to learn or score")
        return out

    def collate(self, items: Sequence[Window]) -> dict[str, torch.Tensor]:
        n = max(len(ids) for ids, _ in items) - 1
        ids = torch.full((len(items), n + 1), self.pad_id, dtype=torch.long)  # (B, N + 1)
        counted = torch.zeros(len(items), n + 1, dtype=torch.bool)  # (B, N + 1)
        padding_mask = torch.ones(len(items), n, dtype=torch.bool)  # (B, N)
        for row, (window_ids, window_mask) in enumerate(items):
            ids[row, : len(window_ids)] = torch.as_tensor(window_ids)
            counted[row, : len(window_mask)] = torch.as_tensor(window_mask)
            padding_mask[row, : len(window_ids) - 1] = False
        batch = {
            "ids": ids[:, :-1],
            "targets": ids[:, 1:],
            "loss_mask": counted[:, 1:],
            "padding_mask": padding_mask,
        }
        if self.boundaries and not self.tokenized:
            batch["segments"] = document_segments(batch["ids"], self.tokenizer.eos_id)
        return batch


def document_segments(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, N) segment ids of packed windows: a new document at each EOS, which opens the document
    after it (it is that document's BOS: the first token is predicted from it alone, as a document
    run by itself would be); the last document's padding joins it (causal: nothing reads it)."""
    return (ids == eos_id).long().cumsum(dim=1)  # (B, N)


def one_document_per_row(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A packed batch re-laid as one document per row, right-padded: (B, N) -> (D, L) each, for a
    model that cannot take segments. Same targets and loss mask, so the same loss."""
    plan = Unpacked.of(batch["segments"])
    out = {}
    for key in ("ids", "targets", "loss_mask"):
        out[key] = plan.unpack(batch[key][:, None])[:, 0]  # (D, L); padding: 0 / False
    out["padding_mask"] = plan.unpack_mask(batch.get("padding_mask"))  # (D, L)
    return out


def unigram_baselines(train: Sequence[Window], test: Sequence[Window], vocab_size: int) -> dict[str, float]:
    """test/unigram_ppl (add-one smoothed train target frequencies) and test/baseline_acc (see the module doc)."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids, mask in train:
        counted = torch.as_tensor(ids)[torch.as_tensor(mask)]
        counts += torch.bincount(counted, minlength=vocab_size).double()
    log_p = torch.log((counts + 1.0) / (counts.sum() + vocab_size))  # (V,)
    test_targets = torch.cat([torch.as_tensor(ids)[torch.as_tensor(mask)] for ids, mask in test])
    return {
        "unigram_ppl": math.exp(-float(log_p[test_targets].mean())),
        "baseline_acc": 1.0 / max(1, int((counts > 0).sum())),
    }


class Perplexity(MeanMetric):
    """exp of the mean of the per-token losses it is given (token-weighted over the epoch)."""

    def compute(self) -> torch.Tensor:
        return torch.exp(super().compute())


class LMTask(AttnlabTask):
    """Logs {val,test}/{loss,ppl,acc} over counted positions, and test/unigram_ppl, test/baseline_acc."""

    PADDING_MASKS = ("padding_mask",)
    METRICS = ("loss", "ppl", "acc")
    attention_roles = ("decoder_self",)  # what the model asks of its attention (attnlab.nn.spec.ROLES)

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
    ):
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        self.save_hyperparameters()
        if is_hf_model(model):  # model=hf: a transformers causal LM, ids (B, N) -> logits (B, N, V)
            self.model = hf_causal_lm(vocab_size, model, attention)
        else:
            self.model = CausalLM(
                vocab_size, ModelConfig.from_config(model), AttentionSpec.from_config(attention)
            )
        self._warned_unpacking = False
        # per counted token: its negative log-likelihood (-> perplexity) and whether argmax was right
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": cls()
                for stage in STAGES
                for name, cls in (("ppl", Perplexity), ("acc", MeanMetric))
            }
        )

    @classmethod
    def from_datamodule(cls, *, datamodule: LMDataModule, model: Mapping, attention: Mapping, **hparams: Any):
        from omegaconf import OmegaConf

        as_dict = (lambda c: OmegaConf.to_container(c, resolve=True)) if OmegaConf.is_config(model) else dict
        return cls(
            vocab_size=datamodule.vocab_size,
            baselines=dict(datamodule.baselines),
            model=as_dict(model),
            attention=as_dict(attention),
            **hparams,
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = self.documents_apart(batch)
        return self.model(batch["ids"], *self._segments(batch))  # (B, N, V)

    def documents_apart(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch as the model can keep its packed documents apart: as it is when the model takes
        segment ids; else one document per row (warned once), never attention across documents."""
        if "segments" not in batch or getattr(self.model, "takes_segments", False):
            return batch
        if not self._warned_unpacking:
            self._warned_unpacking = True
            log.warning(
                "the model cannot take packed-document segments (model=hf, or a kernel with neither "
                "Capabilities.segments nor key_padding_mask): one document per batch row instead"
            )
        return one_document_per_row(batch)

    @staticmethod
    def _segments(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return (batch["segments"],) if "segments" in batch else ()

    def counted_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits at the counted positions only: (M, V), M = loss_mask.sum(). The output
        head runs on those rows alone (MQAR counts ~1 position in 16: that much less head compute)."""
        batch = self.documents_apart(batch)
        hidden = self.model.hidden(batch["ids"], *self._segments(batch))  # (B, N, C)
        return self.model.lm_head(hidden[batch["loss_mask"]]).float()  # (M, V)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross entropy over the counted positions (0, with a gradient, when none count)."""
        batch = self.documents_apart(batch)
        logits = self.counted_logits(batch)  # (M, V)
        if logits.shape[0] == 0:
            return logits.sum() * 0.0
        return F.cross_entropy(logits, batch["targets"][batch["loss_mask"]])

    def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        batch = self.documents_apart(batch)
        logits = self.counted_logits(batch)  # (M, V)
        targets = batch["targets"][batch["loss_mask"]]  # (M,)
        counted = int(targets.numel())
        if counted:
            losses = F.cross_entropy(logits, targets, reduction="none")  # (M,)
            loss = losses.mean()
            self.metrics[f"{stage}_ppl"].update(losses.detach())
            self.metrics[f"{stage}_acc"].update((logits.detach().argmax(-1) == targets).float())
        else:
            loss = logits.sum() * 0.0
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=stage != "test",
            batch_size=max(1, counted),  # the epoch value is the mean over counted tokens
            on_step=stage == "train",
            on_epoch=True,
            sync_dist=True,
        )
        for name in ("ppl", "acc"):
            self.log(
                f"{stage}/{name}",
                self.metrics[f"{stage}_{name}"],
                prog_bar=stage == "val",
                on_step=False,
                on_epoch=True,
            )
        return loss

    def on_test_epoch_end(self) -> None:
        for name, value in (self.hparams.baselines or {}).items():  # beside the model's figures
            self.log(f"test/{name}", float(value), sync_dist=True)  # a constant: every rank agrees
