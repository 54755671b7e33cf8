"""Lightning callbacks of an attnlab run: the cost meter."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning as L
import torch

from attnlab.flops import count_flops
from attnlab.nn.state_size import decode_state_bytes


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory so far and how it was measured: CUDA allocator peak, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocator"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_peak_rss"


class CostMeter(L.Callback):
    """Train tokens/s, step time, peak memory and attention FLOPs per token, logged as `cost/*`.

    Tokens are real (non-padding) tokens as counted by the task's `count_tokens(batch)`. Step time
    covers forward, backward and the optimiser step, CUDA-synchronised on GPU; the first
    `warmup_steps` steps are excluded. Attention FLOPs are measured once, on the first batch, with
    torch.utils.flop_counter over the attention kernels only (modules named `*.kernel`), divided by
    the number of positions processed (padding included: that is what the kernel computes on).
    The decoding state (attnlab.nn.state_size) is measured once training ends, at the context length
    of the first training batch (its longest `*padding_mask` row: model.max_len for task=lm).
    """

    def __init__(self, warmup_steps: int = 5):
        if warmup_steps < 0:
            raise ValueError(f"callbacks.cost.warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.timed_steps = 0
        self.timed_seconds = 0.0
        self.timed_tokens = 0
        self.attention_flops_per_token: float | None = None
        self.context_length: int | None = None
        self.decode_state: dict[str, Any] = {}
        self._start = 0.0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.attention_flops_per_token is None:
            self.attention_flops_per_token = self.measure_attention_flops(pl_module, batch)
            widths = [mask.shape[-1] for key, mask in batch.items() if key.endswith("padding_mask")]
            self.context_length = max(widths, default=None)
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._sync(pl_module)
        elapsed = time.perf_counter() - self._start
        self.steps += 1
        if self.steps <= self.warmup_steps:
            return
        self.timed_steps += 1
        self.timed_seconds += elapsed
        self.timed_tokens += int(pl_module.count_tokens(batch))
        pl_module.log_dict(
            {"cost/step_time_s": elapsed, "cost/train_tokens_per_s": self.timed_tokens / self.timed_seconds},
            on_step=True,
            on_epoch=False,
            batch_size=1,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.context_length is not None:
            self.decode_state = decode_state_bytes(pl_module, self.context_length)

    @staticmethod
    def measure_attention_flops(pl_module: L.LightningModule, batch: Any) -> float:
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            flops = count_flops(lambda: pl_module.compute_loss(batch), module_suffix=".kernel")
        pl_module.train(was_training)
        return flops / max(1, pl_module.count_positions(batch))

    def summary(self, device: torch.device) -> dict[str, Any]:
        peak, method = peak_memory_mb(device)
        timed = self.timed_steps > 0
        return {
            "train_tokens_per_s": self.timed_tokens / self.timed_seconds if timed else None,
            "step_time_s": self.timed_seconds / self.timed_steps if timed else None,
            "timed_steps": self.timed_steps,
            "peak_memory_mb": peak,
            "peak_memory_kind": method,
            "attention_flops_per_token": self.attention_flops_per_token,
            **self.decode_state,  # decode_state_bytes, decode_state_kind, decode_state_length
        }
