"""A task added from outside attnlab, as docs/adding-a-task.md says: this one module and its config
file (attnlab_tiny_task.yaml, beside it), installed through entry-point metadata only:

    [project.entry-points."attnlab.tasks"]
    tiny = "attnlab_tiny_task"

The task: is a string of a's and b's mostly a's? Its batch keys are its own (`letters`, `blank`,
`answer`): the framework learns from PADDING_MASKS which one is the padding mask.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from attnlab.data import build_tokenizer, encode_texts, load_splits, pad_batch
from attnlab.nn import AttentionSpec, Encoder, ModelConfig
from attnlab.tasks.common import AttnlabTask, EncodedDataModule


def majority(*, n_train: int = 256, n_validation: int = 64, n_test: int = 64, seed: int = 0) -> dict:
    """The built-in data: rows {text: 5 to 15 letters a/b, label: 1 when a's are the majority}."""
    rng = random.Random(seed)

    def row() -> dict:
        text = "".join(rng.choice("ab") for _ in range(rng.choice(range(5, 16, 2))))  # odd: no ties
        return {"text": text, "label": int(text.count("a") > len(text) // 2)}

    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    return {split: [row() for _ in range(n)] for split, n in sizes.items()}


class MajorityDataModule(EncodedDataModule):
    def __init__(self, data: Mapping, *, max_len: int):
        super().__init__()
        self.data, self.max_len, self.batch_size = data, max_len, int(data["batch_size"])
        self.encoded = {}

    def setup(self, stage: str | None = None) -> None:
        rows = load_splits(self.data, columns=self.data["columns"], builtin=majority)
        self.tokenizer = build_tokenizer("bytes")
        for split, split_rows in rows.items():
            ids, _ = encode_texts([r["text"] for r in split_rows], self.tokenizer, self.max_len)
            self.encoded[split] = [(seq, int(r["label"])) for seq, r in zip(ids, split_rows)]

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        letters, blank = pad_batch([seq for seq, _ in items], self.tokenizer.pad_id)  # (B, N) each
        return {"letters": letters, "blank": blank, "answer": torch.tensor([y for _, y in items])}


class MajorityTask(AttnlabTask):
    PADDING_MASKS = ("blank",)
    METRICS = ("loss", "acc")

    def __init__(self, *, vocab_size: int, model: Mapping, attention: Mapping, lr: float, weight_decay: float,
                 warmup_steps: int):  # fmt: skip
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        self.save_hyperparameters()
        cfg = ModelConfig.from_config(model)
        self.encoder = Encoder(vocab_size, cfg, AttentionSpec.from_config(attention))
        self.head = nn.Linear(cfg.d_model, 2)

    @classmethod
    def from_datamodule(cls, *, datamodule: MajorityDataModule, model, attention, **hparams):
        from omegaconf import OmegaConf

        plain = {"model": OmegaConf.to_container(model), "attention": OmegaConf.to_container(attention)}
        return cls(vocab_size=datamodule.tokenizer.vocab_size, **plain, **hparams)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.encoder(batch["letters"], batch["blank"])  # (B, N, C)
        real = (~batch["blank"]).unsqueeze(-1).float()  # (B, N, 1)
        return self.head((h * real).sum(1) / real.sum(1).clamp(min=1.0))  # (B, 2)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self(batch), batch["answer"])

    def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["answer"])
        acc = (logits.argmax(-1) == batch["answer"]).float().mean()
        self.log_dict({f"{stage}/loss": loss, f"{stage}/acc": acc}, batch_size=len(batch["answer"]))
        return loss
