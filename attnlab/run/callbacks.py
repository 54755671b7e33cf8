"""Lightning callbacks of an attnlab run: the cost meter, checkpoint averaging, and the two that
make a run fail cleanly.

- `CostMeter`: train tokens/s, step time, peak memory, attention FLOPs per token (`cost/*`).
- `CheckpointAverage`: the uniform average of the weights from a fraction of max_steps on.
- `FiniteGuard`: a NaN/Inf loss or gradient stops the run with one line naming the step and the
  attention variant, before the optimiser applies it (so `last.ckpt` stays the last good state).
- `GracefulStop`: SIGTERM, or a first Ctrl-C, stops at the next step boundary and writes
  `checkpoints/last.ckpt`; the message says how to resume (`ckpt_path=last`).
"""

from __future__ import annotations

import logging
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from attnlab.attention import Attention
from attnlab.errors import AttnlabError
from attnlab.flops import count_flops_inside
from attnlab.host import resident
from attnlab.nn.state_size import decode_state_bytes
from attnlab.run.interrupts import set_training

log = logging.getLogger("attnlab")


def reset_peak_memory(device: torch.device) -> bool:
    """Start this run's peak from the memory in use now; False where the platform cannot reset it.

    A sequential sweep or study runs many jobs in one process: without a reset every run would report
    the highest peak of the runs before it. CUDA: the allocator's counter. Linux CPU: writing "5" to
    /proc/self/clear_refs resets the kernel's high-water mark of resident memory (VmHWM). Elsewhere
    (macOS), the peak stays the process's lifetime peak (`peak_memory_kind` says "cpu_peak_rss").
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    return resident.reset_peak()  # the heap an earlier run freed but kept is handed back, not counted again


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory and how it was measured: the CUDA allocator's peak, the resident high-water mark since
    the last `reset_peak_memory` (Linux: "cpu_peak_rss_run"), or the process's lifetime peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocator"
    high_water = resident.status_bytes("VmHWM")
    if high_water is not None:
        return high_water / 2**20, "cpu_peak_rss_run"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_peak_rss"


class CostMeter(L.Callback):
    """Train tokens/s, step time, peak memory and attention FLOPs per token, logged as `cost/*`.

    Tokens are real (non-padding) tokens as counted by the task's `count_tokens(batch)`. Step time
    covers forward, backward and the optimiser step, CUDA-synchronised on GPU; the first
    `warmup_steps` steps are excluded. Attention FLOPs are measured once, on the first batch, with
    torch.utils.flop_counter inside the attention kernels only (every `attnlab.Attention` module of
    the task, found by type, whatever attribute holds it), divided by the number of positions
    processed (padding included: that is what the kernel computes on).
    The decoding state (attnlab.nn.state_size) is measured once training ends, at the context length
    of the first training batch (its longest padding-mask row: model.max_len for task=lm).

    A resumed run reports one set of figures: the meter's state travels in the checkpoint
    (`state_dict`), so FLOPs per token stay those of the run's first batch, tokens/s and step time
    merge the timed steps of every segment (each segment skips its own `warmup_steps`), and peak
    memory is the maximum over the segments; each run's peak starts when its fit starts (see
    `reset_peak_memory`), so the runs of a sequential sweep do not inherit each other's peaks.
    It also records the data's real sequence lengths
    (`seq_len_mean`, `seq_len_max`), which the report shows beside the model's `max_len`.
    """

    def __init__(self, warmup_steps: int = 5):
        if warmup_steps < 0:
            raise ValueError(f"callbacks.cost.warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.steps = 0  # in this process (segment); warm-up is skipped per segment
        self.timed_steps = 0
        self.timed_seconds = 0.0
        self.timed_tokens = 0
        self.attention_flops_per_token: float | None = None
        self.context_length: int | None = None
        self.decode_state: dict[str, Any] = {}
        self.earlier_peak_memory_mb = 0.0  # the peak of the segments before a resume
        self.segments = 1
        self.sequences = 0  # the data's real lengths, over every training batch: see sequence_lengths
        self.sequence_tokens = 0
        self.longest_sequence = 0
        self._device = torch.device("cpu")
        self._start = 0.0
        self._peak_reset = False  # whether this process's peak counter was reset when the fit started

    def state_dict(self) -> dict[str, Any]:
        return {
            "timed_steps": self.timed_steps,
            "timed_seconds": self.timed_seconds,
            "timed_tokens": self.timed_tokens,
            "attention_flops_per_token": self.attention_flops_per_token,
            "peak_memory_mb": self.peak_memory()[0],
            "segments": self.segments,
            "sequences": self.sequences,
            "sequence_tokens": self.sequence_tokens,
            "longest_sequence": self.longest_sequence,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.timed_steps = int(state_dict["timed_steps"])
        self.timed_seconds = float(state_dict["timed_seconds"])
        self.timed_tokens = int(state_dict["timed_tokens"])
        self.attention_flops_per_token = state_dict["attention_flops_per_token"]
        self.earlier_peak_memory_mb = float(state_dict["peak_memory_mb"])
        self.segments = int(state_dict["segments"]) + 1
        self.sequences = int(state_dict.get("sequences", 0))
        self.sequence_tokens = int(state_dict.get("sequence_tokens", 0))
        self.longest_sequence = int(state_dict.get("longest_sequence", 0))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # the peak is this run's, not that of the runs before it in the process
            self._peak_reset = reset_peak_memory(trainer.strategy.root_device)

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._device = pl_module.device
        if self.attention_flops_per_token is None:
            self.attention_flops_per_token = self.measure_attention_flops(pl_module, batch)
        if self.context_length is None:  # each segment of a resumed run measures it again
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
        lengths = sequence_lengths(batch)
        if lengths is not None:
            self.sequences += lengths.numel()
            self.sequence_tokens += int(lengths.sum())
            self.longest_sequence = max(self.longest_sequence, int(lengths.max()))
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
            flops = count_flops_inside(pl_module, Attention, lambda: pl_module.compute_loss(batch))
        pl_module.train(was_training)
        return flops / max(1, pl_module.count_positions(batch))

    def peak_memory(self, device: torch.device | None = None) -> tuple[float, str]:
        """Peak memory over every segment of the run, and how it was measured."""
        peak, method = peak_memory_mb(device or self._device)
        if method == "cpu_peak_rss_run" and not self._peak_reset:  # the kernel's mark, never reset
            method = "cpu_peak_rss"
        return max(peak, self.earlier_peak_memory_mb), method

    def summary(self, device: torch.device) -> dict[str, Any]:
        peak, method = self.peak_memory(device)
        timed = self.timed_steps > 0
        return {
            "train_tokens_per_s": self.timed_tokens / self.timed_seconds if timed else None,
            "step_time_s": self.timed_seconds / self.timed_steps if timed else None,
            "timed_steps": self.timed_steps,
            "peak_memory_mb": peak,
            "peak_memory_kind": method,
            "attention_flops_per_token": self.attention_flops_per_token,
            **self.decode_state,  # decode_state_bytes, decode_state_kind, decode_state_length
            "segments": self.segments,  # 1, or 1 + the number of resumes
            # real (non-padding) tokens per training example, its longest sequence (seq2seq: source or target)
            "seq_len_mean": self.sequence_tokens / self.sequences if self.sequences else None,
            "seq_len_max": self.longest_sequence if self.sequences else None,
        }


def sequence_lengths(batch: Any) -> torch.Tensor | None:
    """Real tokens of each example's longest sequence (B,), from the batch's `*padding_mask` entries
    (True = padding), or None when the batch has none."""
    if not isinstance(batch, dict):
        return None
    masks = [m for key, m in batch.items() if key.endswith("padding_mask") and isinstance(m, torch.Tensor)]
    if not masks:
        return None
    real = [(~m.bool()).sum(dim=-1) for m in masks]  # each (B,)
    return torch.stack(real).amax(dim=0)  # (B,)


class CheckpointAverage(WeightAveraging):
    """Checkpoint averaging (fairseq's scripts/average_checkpoints.py, Vaswani et al. 2017 §6.1) taken
    in memory: the uniform average of the weights at every `every`-th optimizer step from `start` x
    trainer.max_steps on. Once it holds a snapshot, validation, the saved checkpoints (hence the best
    checkpoint the test loads) and the final weights are the average; before, the current weights.

        +callbacks.average._target_=attnlab.run.callbacks.CheckpointAverage +callbacks.average.start=0.7
    """

    def __init__(self, *, start: float = 0.5, every: int = 100):
        from attnlab.errors import ConfigError

        if not 0.0 <= start < 1.0:
            raise ConfigError(
                f"callbacks.average.start={start} must be in [0, 1): the fraction of max_steps to start at"
            )
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(
                f"callbacks.average.every={every} must be a positive integer (steps between snapshots)"
            )
        super().__init__(use_buffers=True)
        self.start, self.every = start, every
        self._first_step = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        total = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else 0
        self._first_step = int(self.start * total)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return (
            step_idx is not None
            and step_idx >= self._first_step
            and (step_idx - self._first_step) % self.every == 0
        )

    def snapshots(self) -> int:
        """How many snapshots the average holds (0 before `start`)."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.snapshots():
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.snapshots():
            super().on_validation_epoch_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.snapshots():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.snapshots():
            super().on_train_end(trainer, pl_module)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning's WeightAveraging puts the raw weights (current_model_state) back into the module
        # whenever it holds an average, which after a fit includes `trainer.test(ckpt_path=best)`: the
        # test would score the last step's raw weights. Only a resumed fit needs them; testing,
        # validating and predicting keep the checkpoint's state_dict, the average, already loaded.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


# ---- NaN/Inf guard -------------------------------------------------------------------------------
class NumericalError(AttnlabError, FloatingPointError):
    """The loss or a gradient became NaN/Inf."""


class FiniteGuard(L.Callback):
    """Stop at the first non-finite loss or gradient, before the optimiser step applies it.

    Gradients are not checked under fp16 loss scaling (`16-mixed`), where the GradScaler skips
    steps with overflowing gradients by design; the loss still is. `inject_nan_at_step` poisons one
    gradient at that step (tests of this guard only).
    """

    def __init__(
        self, attention: str = "?", check_gradients: bool = True, inject_nan_at_step: int | None = None
    ):
        self.attention, self.check_gradients, self.inject_nan_at_step = (
            attention,
            check_gradients,
            inject_nan_at_step,
        )

    def _fail(self, trainer: L.Trainer, what: str) -> None:
        last = next(
            (c.last_model_path for c in trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")), ""
        )
        kept = f"last good checkpoint kept: {last}" if last else "no checkpoint was written yet"
        raise NumericalError(
            f"{what} at step {trainer.global_step + 1} with attention '{self.attention}' "
            f"(precision {trainer.precision}); {kept}; lower task.module.lr, keep trainer.gradient_clip_val, "
            f"or use trainer.precision=32-true"
        )

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if not torch.isfinite(loss.detach()).all():
            self._fail(trainer, f"non-finite training loss ({float(loss.detach().float().mean())})")

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if (
            self.inject_nan_at_step is not None
            and trainer.global_step + 1 == self.inject_nan_at_step
            and grads
        ):
            grads[0].fill_(float("nan"))
        if not self.check_gradients or not grads or str(trainer.precision).startswith("16"):
            return
        norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])  # (P,)
        if not torch.isfinite(norms).all():
            bad = next(
                n
                for (n, p) in pl_module.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            )
            self._fail(trainer, f"non-finite gradient (first in {bad})")


# ---- graceful stop -------------------------------------------------------------------------------
class GracefulStop(L.Callback):
    """SIGTERM (Lightning's flag) or a first Ctrl-C stop at the next step boundary and save last.ckpt."""

    # What stopped the last fit: SIGINT (a first Ctrl-C) or SIGTERM (Lightning's flag); the exit status
    # follows the shell's convention, 128 + the signal (`attnlab.run.app`: 130 or 143).
    stopped_by: ClassVar[int] = signal.SIGTERM

    def __init__(self) -> None:
        self._previous_sigint: Any = None
        self.saved: str | None = None
        GracefulStop.stopped_by = signal.SIGTERM

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_training(in_fit=True)  # attnlab.run.interrupts: validation now stops through SIGTERMException
        connector = getattr(trainer, "_signal_connector", None)
        if connector is None or not _main_thread():
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if connector.received_sigterm:  # second Ctrl-C: abort now
                raise KeyboardInterrupt
            GracefulStop.stopped_by = signal.SIGINT
            print(
                "\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort)",
                file=sys.stderr,
            )
            connector.received_sigterm = True

        self._previous_sigint = signal.signal(signal.SIGINT, on_sigint)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and _main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        set_training(in_step=True)  # a signal now waits for the step's end (Lightning's flag)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        set_training(in_step=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_training(in_fit=False, in_step=False)
        self._restore_sigint()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()
        set_training(in_fit=False, in_step=False)
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException):
            return
        checkpoint = getattr(trainer, "checkpoint_callback", None)
        dirpath = Path(getattr(checkpoint, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints")
        path = dirpath / "last.ckpt"
        path.unlink(missing_ok=True)  # may be a link to latest.ckpt: replace it, keep that one
        trainer.save_checkpoint(path)  # between steps: a consistent state
        self.saved = str(path)
        log.warning("interrupted at step %d: saved %s", trainer.global_step, path)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
