"""What every attnlab task shares: optimiser + schedule, and the cost hooks the CostMeter calls."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


class EncodedDataModule(L.LightningDataModule):
    """Serves encoded examples per split (`self.encoded`, filled by `setup`) through `self.collate`."""

    data: Any  # the task's data config (batch_size, num_workers, ...)
    batch_size: int
    encoded: dict[str, list]

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.encoded[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=self.collate,
            num_workers=int(self.data.get("num_workers", 0)),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class AttnlabTask(L.LightningModule):
    """Base LightningModule: AdamW with linear warm-up and cosine decay over the run's steps."""

    def __init__(self, *, lr: float, weight_decay: float, warmup_steps: int):
        super().__init__()
        if lr <= 0:
            from attnlab.errors import ConfigError

            raise ConfigError(f"task.module.lr={lr} must be positive")
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def count_tokens(self, batch: dict[str, Any]) -> int:
        """Real (non-padding) tokens in a batch, for throughput."""
        return int(sum((~mask).sum() for key, mask in batch.items() if key.endswith("padding_mask")))

    def count_positions(self, batch: dict[str, Any]) -> int:
        """Positions the model computes on, padding included (for FLOPs per token)."""
        return int(sum(mask.numel() for key, mask in batch.items() if key.endswith("padding_mask")))

    def on_validation_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        shown = {
            k: f"{float(v):.4g}" for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")
        }
        log.info("step %d: %s", self.global_step, "  ".join(f"{k}={v}" for k, v in sorted(shown.items())))

    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in self.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.warmup_steps, total // 2)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
