"""Sequence classification: encoder + pooling + linear classifier; accuracy and macro-F1.

Default data: built-in LRA-style ListOps (long-range, separates exact from approximate attention).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from attnlab.data import build_tokenizer, check_labels, encode_texts, load_splits, pad_batch
from attnlab.data.listops import listops
from attnlab.errors import ConfigError, DataError
from attnlab.nn import AttentionSpec, Encoder, ModelConfig
from attnlab.nn.hf_models import hf_encoder, is_hf_model
from attnlab.tasks.common import STAGES, AttnlabTask, EncodedDataModule

log = logging.getLogger(__name__)
POOLINGS = ("mean", "cls")


class ClassifyDataModule(EncodedDataModule):
    """Rows {text, label} -> batches {ids (B, N), padding_mask (B, N), labels (B,)}."""

    def __init__(self, data: Mapping, *, max_len: int, pooling: str = "mean", cache_dir: str | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"task.pooling={pooling!r} is unknown; choose one of {list(POOLINGS)}")
        self.data, self.max_len, self.pooling, self.cache_dir = data, max_len, pooling, cache_dir
        self.batch_size = int(data["batch_size"])
        self.tokenizer = None
        self.encoded: dict[str, list[tuple[list[int], int]]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.encoded:
            return
        rows = load_splits(self.data, columns=self.data["columns"], builtin=listops, cache_dir=self.cache_dir)
        check_labels(rows["train"])
        self.labels = sorted({row["label"] for row in rows["train"]}, key=lambda x: (isinstance(x, str), x))
        self.tokenizer = build_tokenizer(
            self.data["tokenizer"],
            train_texts=(r["text"] for r in rows["train"]),
            vocab_size=self.data["vocab_size"],
            cache_dir=self.cache_dir,
        )
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.encoded = {
            split: self.encode_rows(split, split_rows, max_len=self.max_len)
            for split, split_rows in rows.items()
        }
        # The trivial baseline: always predict the most common training class.
        majority_class = int(torch.bincount(torch.tensor([y for _, y in self.encoded["train"]])).argmax())
        self.baseline_acc = sum(y == majority_class for _, y in self.encoded["test"]) / len(
            self.encoded["test"]
        )
        log.info(
            "classify data: %s; %d classes; majority-class baseline test accuracy %.3f",
            ", ".join(f"{s}={len(v)}" for s, v in self.encoded.items()),
            len(self.labels),
            self.baseline_acc,
        )

    def encode_rows(self, split: str, rows: list[dict], *, max_len: int) -> list[tuple[list[int], int]]:
        """(ids cut to max_len tokens, class index) per row, by the tokenizer and classes of train."""
        unknown = {row["label"] for row in rows} - self.index.keys()
        if unknown:
            raise DataError(
                f"{split} split has labels never seen in train: {sorted(map(str, unknown))[:5]}; "
                "every class must appear in the training split"
            )
        ids, _ = encode_texts(
            [row["text"] for row in rows],
            self.tokenizer,
            max_len,
            add_cls=self.pooling == "cls",
            what=f"{split} text",
        )
        return [(seq, self.index[row["label"]]) for seq, row in zip(ids, rows)]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def collate(self, items: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        ids, padding_mask = pad_batch([seq for seq, _ in items], self.tokenizer.pad_id)
        return {"ids": ids, "padding_mask": padding_mask, "labels": torch.tensor([y for _, y in items])}


class Classifier(nn.Module):
    """Encoder -> pooled representation -> class logits. ids (B, N) -> (B, classes)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        cfg: ModelConfig | None,
        spec: AttentionSpec | None,
        pooling: str,
        *,
        encoder: nn.Module | None = None,
    ):
        super().__init__()
        # model=hf hands in a transformers encoder (attnlab.nn.hf_models.hf_encoder) with its width `d_model`
        self.encoder = encoder if encoder is not None else Encoder(vocab_size, cfg, spec)
        self.pooling = pooling
        self.head = nn.Linear(cfg.d_model if encoder is None else encoder.d_model, num_classes)

    def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(ids, padding_mask)  # (B, N, C)
        if self.pooling == "cls":
            pooled = h[:, 0]  # (B, C), the CLS token
        else:
            real = (~padding_mask).unsqueeze(-1).to(h.dtype)  # (B, N, 1)
            pooled = (h * real).sum(1) / real.sum(1).clamp(min=1.0)  # mean over real tokens (B, C)
        return self.head(pooled)


class ClassifyTask(AttnlabTask):
    """Logs {val,test}/{loss,acc,f1} and test/baseline_acc (the majority class)."""

    PADDING_MASKS = ("padding_mask",)
    METRICS = ("loss", "acc", "f1")
    attention_roles = ("encoder_self",)  # what the model asks of its attention (attnlab.nn.spec.ROLES)

    def __init__(
        self,
        *,
        vocab_size: int,
        num_classes: int,
        model: Mapping,
        attention: Mapping,
        labels: list | None = None,
        baseline_acc: float | None = None,
        pooling: str = "mean",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
    ):
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        self.save_hyperparameters()
        if is_hf_model(model):
            encoder = hf_encoder(vocab_size, model, attention)
            if encoder.causal and pooling == "cls":
                raise ConfigError(
                    "task.pooling=cls reads the first token, which a causal model computes from itself alone; "
                    "use task.pooling=mean, or a bidirectional model (model.config.model_type=bert)"
                )
            self.model = Classifier(vocab_size, num_classes, None, None, pooling, encoder=encoder)
        else:
            spec = AttentionSpec.from_config(attention)
            self.model = Classifier(vocab_size, num_classes, ModelConfig.from_config(model), spec, pooling)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": metrics.clone(prefix=f"{stage}/") for stage in STAGES}
        )

    @classmethod
    def from_datamodule(
        cls, *, datamodule: ClassifyDataModule, model: Mapping, attention: Mapping, **hparams: Any
    ):
        from omegaconf import OmegaConf

        as_dict = (lambda c: OmegaConf.to_container(c, resolve=True)) if OmegaConf.is_config(model) else dict
        return cls(
            vocab_size=datamodule.tokenizer.vocab_size,
            num_classes=datamodule.num_classes,
            labels=list(datamodule.labels),
            baseline_acc=datamodule.baseline_acc,
            model=as_dict(model),
            attention=as_dict(attention),
            pooling=datamodule.pooling,
            **hparams,
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["ids"], batch["padding_mask"])

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self(batch), batch["labels"])

    def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["labels"])
        batch_size = batch["labels"].shape[0]
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=stage != "test",
            batch_size=batch_size,
            on_step=stage == "train",
            on_epoch=True,
            sync_dist=True,  # the mean over all ranks (a no-op on one device); torchmetrics sync themselves
        )
        self.metrics[f"{stage}_metrics"].update(logits.detach(), batch["labels"])
        self.log_dict(
            self.metrics[f"{stage}_metrics"],
            prog_bar=stage == "val",
            batch_size=batch_size,
            on_step=False,
            on_epoch=True,
        )
        return loss

    def on_test_epoch_end(self) -> None:
        if self.hparams.baseline_acc is not None:  # majority-class accuracy, beside the model's
            # the same constant on every rank; sync_dist keeps Lightning's DDP reduction (and its warning) quiet
            self.log("test/baseline_acc", float(self.hparams.baseline_acc), sync_dist=True)
