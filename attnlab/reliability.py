"""Runs that fail cleanly and resume exactly.

- `FiniteGuard`: a NaN/Inf loss or gradient stops the run with one line naming the step and the
  attention variant, before the optimiser applies it (so `last.ckpt` stays the last good state).
- `ExactResume`: checkpoints carry the RNG states and the position in the (seeded, per-epoch)
  training order, so a resumed run continues with exactly the batches and dropout masks the
  uninterrupted run would have used.
- `GracefulStop`: SIGTERM, or a first Ctrl-C, stops at the next step boundary and writes
  `checkpoints/last.ckpt`; the message says how to resume (`ckpt_path=last`).
- `ckpt_path=last` continues the newest run of the task/attention in its own directory; a run that
  already finished (results.json, status ok) is reported and left untouched: nothing is re-run or
  rewritten. `ckpt_path=<file>` starts a new run directory from any checkpoint.
- `SweepSummary`: a Hydra callback; after a multirun it lists the failed members (each has a
  `failed.json`, never a `results.json`) in `<sweep dir>/sweep_summary.json`.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from attnlab.errors import AttnlabError
from attnlab.run.interrupts import set_training
from attnlab.run.results import (
    SWEEP_SUMMARY_FILE,
    read_failure,
    read_finished,
    results_path,
    write_failure_record,
    write_json_atomic,
)

log = logging.getLogger("attnlab")


class NumericalError(AttnlabError, FloatingPointError):
    """The loss or a gradient became NaN/Inf."""


# ---- NaN/Inf guard -------------------------------------------------------------------------------
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


# ---- exact resume --------------------------------------------------------------------------------
class ResumableLoader:
    """A training DataLoader whose order is a function of (seed, epoch) and which can start mid-epoch.

    Lightning treats it as stateful (state_dict/load_state_dict): the checkpoint records the epoch
    and the batches already trained on, and the resumed run skips exactly those.
    """

    def __init__(
        self,
        loader: DataLoader,
        *,
        seed: int,
        progress: Callable[[], tuple[int, int]],
        rank: int = 0,
        world_size: int = 1,
    ):
        self.loader, self.seed, self.progress = loader, seed, progress
        self.rank, self.world_size = rank, world_size
        self.batch_size = loader.batch_size
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        per_rank = math.ceil(len(self.loader.dataset) / self.world_size)
        return per_rank // self.batch_size if self.loader.drop_last else math.ceil(per_rank / self.batch_size)

    def order(self, epoch: int) -> list[int]:
        """This rank's indices for `epoch`; with several ranks, a disjoint share as DistributedSampler gives."""
        n = len(self.loader.dataset)
        if isinstance(self.loader.sampler, RandomSampler):
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            indices = torch.randperm(n, generator=generator).tolist()
        else:
            indices = list(range(n))
        if self.world_size > 1:  # pad to a multiple of the world size, then every world_size-th index
            indices += indices[: (-n) % self.world_size]
            indices = indices[self.rank :: self.world_size]
        return indices

    def __iter__(self) -> Iterator[Any]:
        epoch, _ = self.progress()
        skip = 0
        if self._resume is not None:
            resume_epoch, done = self._resume
            self._resume = None
            if resume_epoch == epoch:
                skip = done
        indices = self.order(epoch)[skip * self.batch_size :]
        dl = self.loader
        # Its own generator: creating the iterator must not draw from the global RNG (dropout's).
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
        yield from DataLoader(
            dl.dataset,
            batch_size=self.batch_size,
            sampler=indices,
            collate_fn=dl.collate_fn,
            num_workers=dl.num_workers,
            drop_last=dl.drop_last,
            pin_memory=dl.pin_memory,
            worker_init_fn=dl.worker_init_fn,
            generator=generator,
        )

    def state_dict(self) -> dict[str, int]:
        epoch, done = self.progress()
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches_done"]))


class ExactResume(L.Callback):
    """Make a resumed run continue exactly: RNG states and the training-data position travel in the checkpoint."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rng_to_restore: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None or getattr(datamodule, "_attnlab_resumable", False):
            return
        original = datamodule.train_dataloader
        epoch_loop = trainer.fit_loop.epoch_loop

        def progress() -> tuple[int, int]:  # batches whose optimiser step is done, in the current epoch
            return trainer.current_epoch, epoch_loop.batch_progress.current.processed

        def train_dataloader() -> Any:
            loader = original()
            if not isinstance(loader, DataLoader):
                return loader
            return ResumableLoader(
                loader,
                seed=self.seed,
                progress=progress,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
            )

        datamodule.train_dataloader = train_dataloader
        datamodule._attnlab_resumable = True

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = (
            np.random.get_state()
        )  # plain types: loadable with weights_only
        numpy_state = [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(position),
            int(has_gauss),
            float(gauss),
        ]
        state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return {"seed": self.seed, "rng": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rng, self._rng_to_restore = self._rng_to_restore, None
        if rng is None:
            return
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        kind, keys, position, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


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


# ---- failures and sweeps -------------------------------------------------------------------------
def write_failure(run_dir: Path | None, error: BaseException, message: str) -> None:
    """Record a failed run: failed.json (never results.json) and the traceback appended to run.log."""
    if run_dir is None:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "run.log", "a") as handle:
        handle.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    record = {
        "error": type(error).__name__,
        "message": message,
        "user_error": isinstance(error, AttnlabError),
    }
    if isinstance(getattr(error, "budget", None), dict):  # set by attnlab.run.train: the fit stopped early
        record["budget"] = error.budget
    write_failure_record(run_dir, record)


def find_resumable_run(base: Path) -> Path | None:
    """The newest run directory under `base` (outputs/<task>/<attention>) holding checkpoints/last.ckpt."""
    found = sorted(base.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent.parent if found else None


def already_finished_message(run_dir: Path) -> str:
    """What `ckpt_path=last` says of a run that has finished: it is neither re-run nor rewritten."""
    results = read_finished(run_dir) or {}
    metric = results.get("primary_metric")
    value = (results.get("metrics") or {}).get(metric)
    return (
        f"{run_dir} already finished ({metric} = {value}), nothing to resume; its results: "
        f"{results_path(run_dir)}. To train on from it in a new run directory: "
        f"ckpt_path={Path(run_dir) / 'checkpoints' / 'last.ckpt'} with a larger trainer.max_steps"
    )


def summarise_sweep(sweep_dir: Path) -> dict[str, Any]:
    """{ok, failed: [{job, message}]} over a sweep's job directories; written to sweep_summary.json."""
    ok, failed = [], []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if results_path(job).exists():
            ok.append(job.name)
        elif (record := read_failure(job)) is not None:
            failed.append({"job": job.name, "message": record.get("message", "")})
    summary = {"ok": ok, "failed": failed}
    write_json_atomic(sweep_dir / SWEEP_SUMMARY_FILE, summary)
    return summary


try:  # Hydra's callback API (hydra.experimental) is available in every supported Hydra
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[assignment,misc]


class SweepSummary(_HydraCallback):
    """After a multirun: write sweep_summary.json and print the failed members (if any)."""

    failures = 0  # read by attnlab.run.app.entry for the exit status

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarise_sweep(sweep_dir)
        SweepSummary.failures = len(summary["failed"])
        line = f"sweep {sweep_dir}: {len(summary['ok'])} ok, {len(summary['failed'])} failed"
        print(line, file=sys.stderr)
        for item in summary["failed"]:
            print(f"  failed {item['job']}: {item['message']}", file=sys.stderr)
