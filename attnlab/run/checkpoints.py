"""Is `ckpt_path` a checkpoint this run can continue? Checked before fitting, one line per problem.

A checkpoint is read once on the CPU and its saved hyperparameters (Lightning's `hyper_parameters`,
written by the task's `save_hyperparameters()`) are compared with those of the module this run
built: the task (the set of hyperparameter names), the attention variant and its parameters, the
model's sizes and the data-derived sizes (vocabulary, classes, labels). Settings a resumed run may
change (lr, weight decay, warm-up, decoding) are not compared. Without these checks Lightning either
loads a mismatched model silently (a multihead checkpoint into `attention=linear`: same weight
names) or fails with a multi-line state-dict error after the run started.

What a checkpoint carries beyond the weights, so that a resumed run continues exactly:
- `DataRecord`: the run's task.data settings (a resume on other data is refused).
- `ExactResume`: the RNG states and the position in the (seeded, per-epoch) training order, so a
  resumed run continues with exactly the batches and dropout masks the uninterrupted run would have
  used.

`ckpt_path=last` continues the newest run of the task/attention in its own directory
(`find_resumable_run`); a run that already finished (results.json, status ok) is reported and left
untouched (`already_finished_message`): nothing is re-run or rewritten. `ckpt_path=<file>` starts a
new run directory from any checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, RandomSampler

from attnlab.errors import ConfigError
from attnlab.run.results import read_finished, results_path

# Hyperparameters that define the weights' shapes or meaning; the rest may change on resume.
STRUCTURAL = (
    "vocab_size",
    "target_vocab_size",
    "num_classes",
    "labels",
    "pooling",
    "pad_id",
    "bos_id",
    "eos_id",
)
FRESH = "start fresh (drop ckpt_path)"
DATA_RECORD_KEY = "attnlab_data"  # the run's task.data settings, written into every checkpoint
# Data settings that change neither the rows nor their order.
DATA_FREE = ("num_workers",)

log = logging.getLogger("attnlab.checkpoint_check")  # its name in run.log from before the move to run/


class DataRecord(Callback):
    """Writes the run's task.data settings into each checkpoint (under DATA_RECORD_KEY), so a resumed
    run on other data (another file, limit, tokenizer, generator seed) is refused by check_checkpoint
    instead of continuing a model on data it was not trained on."""

    def __init__(self, data: Mapping[str, Any]):
        self.data = dict(data)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[DATA_RECORD_KEY] = self.data


def data_settings(data: Any) -> dict[str, Any]:
    """task.data as plain values, without the settings that do not change the data (DATA_FREE)."""
    plain = _plain(data) or {}
    return {k: v for k, v in plain.items() if k not in DATA_FREE}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _compare_data(where: str, saved: Any, ours: Mapping[str, Any] | None) -> None:
    if not isinstance(saved, Mapping) or ours is None:
        return  # written before data settings were recorded, or not compared (tests)
    old, new = _flatten(data_settings(saved)), _flatten(data_settings(ours))
    differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differ:
        shown = "; ".join(
            f"task.data.{k}={_short(old.get(k))} there, {_short(new.get(k))} here" for k in differ[:3]
        )
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        settings = " ".join(f"task.data.{k}={_short(old.get(k))}" for k in differ[:3])
        raise ConfigError(
            f"{where} was trained with other data settings: {shown}{more}; to continue it set {settings}, or {FRESH}"
        )


def check_checkpoint(
    path: str | None,
    hparams: Mapping[str, Any],
    *,
    max_steps: int | None = None,
    data: Mapping[str, Any] | None = None,
    own_run: bool = False,
) -> None:
    """Raise ConfigError when `path` cannot be read as a Lightning checkpoint, or was saved by another
    task, attention or model than the one described by `hparams` (the built module's hparams), or on
    other data settings than `data` (this run's task.data, as DataRecord stores it), or has already
    trained `max_steps` (this trainer's limit) steps: resuming it would train nothing and write a
    fresh results.json for the old model. `own_run` (ckpt_path=last: the run directory's own checkpoint,
    as a rerun study cell whose results were lost) says so in a line and lets the run test it."""
    if path is None:
        return
    checkpoint = read_checkpoint(path)
    _compare_data(f"ckpt_path={path}", checkpoint.get(DATA_RECORD_KEY), data)
    step = checkpoint.get("global_step")
    if max_steps is not None and max_steps > 0 and isinstance(step, int) and step >= max_steps:
        if own_run:  # ckpt_path=last: this run trained its steps and lost its results (killed while testing)
            log.info(
                "ckpt_path=%s has trained all %d of trainer.max_steps=%d steps: no training, the trained "
                "model is tested and its results written",
                path,
                step,
                max_steps,
            )
            return
        raise ConfigError(
            f"ckpt_path={path} has already trained {step} steps, trainer.max_steps={max_steps}: resuming would "
            f"train nothing; set trainer.max_steps=<n> above {step} to train on, or {FRESH}"
        )
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, Mapping):
        return  # saved without hyperparameters (a plain Lightning module): nothing to compare
    ours = {str(k): v for k, v in hparams.items()}
    where = f"ckpt_path={path}"
    if set(saved) != set(ours):
        raise ConfigError(
            f"{where} was saved by another task (its settings: {', '.join(sorted(map(str, saved)))}); "
            f"resume it with the task it was trained with, or {FRESH}"
        )
    _compare_attention(where, _plain(saved.get("attention")), _plain(ours.get("attention")))
    _compare_model(where, _plain(saved.get("model")), _plain(ours.get("model")))
    for key in STRUCTURAL:
        if key in ours and _plain(saved.get(key)) != _plain(ours[key]):
            raise ConfigError(
                f"{where} was trained on other data: its {key} is {_short(saved.get(key))}, this run's data gives "
                f"{_short(ours[key])}; resume with the same task.data settings it was trained with, or {FRESH}"
            )


def read_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint's contents, or a one-line ConfigError for a directory, an empty, truncated,
    corrupt or non-checkpoint file."""
    import torch

    file = Path(path)
    where = f"ckpt_path={path}"
    if file.is_dir():
        found = sorted(str(p) for p in file.rglob("*.ckpt"))[:3]
        hint = f", e.g. ckpt_path={found[0]}" if found else " (e.g. <run_dir>/checkpoints/last.ckpt)"
        raise ConfigError(f"{where} is a directory; give a .ckpt file{hint}")
    if file.stat().st_size == 0:
        raise ConfigError(f"{where} is an empty file; give another .ckpt file or {FRESH}")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated, corrupt, text, a pickle of something else...
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise ConfigError(
            f"{where} is not a readable checkpoint (truncated, corrupt or not a .ckpt: {reason}); "
            f"give another .ckpt file or {FRESH}"
        ) from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"{where} is not a Lightning checkpoint (no state_dict); give a .ckpt written by attnlab or {FRESH}"
        )
    return dict(checkpoint)


def _compare_attention(where: str, saved: Any, ours: Any) -> None:
    if not isinstance(saved, Mapping) or not isinstance(ours, Mapping):
        return
    if saved.get("name") != ours.get("name"):
        raise ConfigError(
            f"{where} holds a model with attention '{saved.get('name')}' but this run has attention={ours.get('name')}; "
            f"to continue it use attention={saved.get('name')}, or {FRESH}"
        )
    for key in sorted(set(saved) | set(ours)):
        if key not in ("name", "dropout") and saved.get(key) != ours.get(key):  # dropout: no weights
            raise ConfigError(
                f"{where} was trained with attention.{key}={saved.get(key)} but this run has attention.{key}="
                f"{ours.get(key)}; to continue it set attention.{key}={saved.get(key)}, or {FRESH}"
            )


def _compare_model(where: str, saved: Any, ours: Any) -> None:
    if not isinstance(saved, Mapping) or not isinstance(ours, Mapping):
        return
    for key in sorted(set(saved) | set(ours)):
        if key == "dropout":  # not a shape; a resumed run may change it
            continue
        if saved.get(key) != ours.get(key):
            value = saved.get(key)
            setting = (
                f"model.{key}={value}"
                if not isinstance(value, Mapping)
                else " ".join(f"model.{key}.{k}={v}" for k, v in value.items())
            )
            raise ConfigError(
                f"{where} was trained with model.{key}={_short(value)} but this run has model.{key}={_short(ours.get(key))}; "
                f"to continue it set {setting} (or the model= size it was trained with), or {FRESH}"
            )


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


# ---- ckpt_path=last ------------------------------------------------------------------------------
def find_resumable_run(base: Path) -> Path | None:
    """The newest run directory under `base` (outputs/<task>/<attention>) holding checkpoints/last.ckpt."""
    found = sorted(base.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent.parent if found else None


def already_finished_message(run_dir: Path) -> str:
    """What `ckpt_path=last` says of a run that has finished: it is neither re-run nor rewritten."""
    results = read_finished(run_dir) or {}
    metric = results.get("primary_metric")
    value = (results.get("metrics") or {}).get(metric)
    basis = f"; {results['basis']}" if results.get("basis") else ""  # older results.json have none
    return (
        f"{run_dir} already finished ({metric} = {value}{basis}), nothing to resume; its results: "
        f"{results_path(run_dir)}. To train on from it in a new run directory: "
        f"ckpt_path={Path(run_dir) / 'checkpoints' / 'last.ckpt'} with a larger trainer.max_steps"
    )
