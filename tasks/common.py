"""The task contract: what attnlab calls on a task's data module and Lightning module, declared here.

A task is one module (a data module + a Lightning module subclassing the two classes below) and one
config file (conf/task/<name>.yaml, or a plugin's; see docs/adding-a-task.md). `attnlab.run.train`
checks both classes against this contract before any data is loaded (`check_task_class`) and the
data module once it is set up (`check_datamodule`): a missing member is a one-line TaskError.

EncodedDataModule (data module)
    collate(items) -> batch        a list of encoded examples -> a dict of tensors
    setup(stage)                   fills `encoded` with a list of examples per split (SPLITS)
    data, batch_size               its `task.data` config and batch size
    encode_rows(split, rows, *, max_len) -> list   optional: rows encoded as setup encodes them, at most
                                   max_len tokens; with it, task.eval_lengths rebuilds the test split at
                                   other lengths (test_dataloader_at; attnlab.run.eval_lengths)
AttnlabTask (Lightning module)
    from_datamodule(*, datamodule, model, attention, **hparams)   classmethod building the module
    compute_loss(batch) -> loss    the training loss (the cost meter counts attention FLOPs on it)
    shared_step(batch, stage) -> loss   the loss of a batch, logging the stage's figures (stage: train,
                                   val or test); the base class's training_step, validation_step and
                                   test_step call it, so no task writes them (or override all three)
    PADDING_MASKS                  the batch keys holding (B, N) padding masks (True = padding), from
                                   which count_tokens/count_positions count; or override both
    METRICS                        names the task logs as val/<name> and test/<name>: task.monitor
                                   is one val/<name>, task.primary_metric one test/<name>
    test_cost() -> dict            optional: cost figures measured in the test stage (results.json `cost`)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader

from attnlab.data import SPLITS
from attnlab.errors import ConfigError, TaskError, did_you_mean

log = logging.getLogger(__name__)
MONITOR_MODES = ("min", "max")
STAGES = ("train", "val", "test")  # shared_step's stage: the prefix of every figure it logs
STEP_HOOKS = ("training_step", "validation_step", "test_step")  # what shared_step stands in for


class EncodedDataModule(L.LightningDataModule):
    """Serves encoded examples per split (`self.encoded`, filled by `setup`) through `self.collate`."""

    data: Any  # the task's data config (batch_size, num_workers, ...)
    batch_size: int
    encoded: dict[str, list]
    REQUIRED: ClassVar[tuple[str, ...]] = ("collate", "setup")  # what a subclass must define

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_rows(self, split: str, rows: list[dict], *, max_len: int) -> list:
        """Rows of `split` encoded as `setup` encodes them, for sequences of up to `max_len` tokens."""
        raise NotImplementedError

    def test_dataloader_at(self, length: int) -> DataLoader:
        """The test split regenerated at `length` tokens by the task's built-in generator (same knobs
        and seed), sized in tokens (attnlab.data.eval_sizes.eval_rows, eval_batch_size), in order. At the
        length the split already has, the split itself: test/acc@<that length> is test/acc."""
        from attnlab.data.eval_sizes import eval_batch_size, eval_rows
        from attnlab.data.generators import generate_test_at, generator_params, length_knobs

        builtin = self.data.get("builtin") or {}
        name, params = generator_params(builtin)
        knobs = length_knobs(name, length) if name else None
        # knobs already set (mqar at its seq_len); no knob (corpus): the windows are the model's length
        as_trained = knobs is not None and knobs.items() <= params.items()
        if as_trained and (knobs or length == getattr(self, "max_len", None)):
            examples = self.encoded["test"]
        else:
            limit = (self.data.get("limit") or {}).get("test")
            rows = generate_test_at(builtin, length, eval_rows(params.get("n_test"), length, limit))
            examples = self.encode_rows("test", rows, max_len=length)
        return DataLoader(
            examples,
            batch_size=eval_batch_size(self.batch_size, length),
            shuffle=False,
            collate_fn=self.collate,
            num_workers=int(self.data.get("num_workers", 0)),
        )

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

    PADDING_MASKS: ClassVar[tuple[str, ...]] = ()  # batch keys of (B, N) padding masks, True = padding
    METRICS: ClassVar[tuple[str, ...]] = ()  # logged as val/<name> and test/<name>
    REQUIRED: ClassVar[tuple[str, ...]] = ("from_datamodule", "compute_loss")  # what a subclass must define

    def __init__(self, *, lr: float, weight_decay: float, warmup_steps: int):
        super().__init__()
        if lr <= 0:
            raise ConfigError(f"task.module.lr={lr} must be positive")
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps

    @classmethod
    def from_datamodule(cls, *, datamodule: EncodedDataModule, model: Mapping, attention: Mapping, **hparams):
        """The module for a set-up data module (vocabulary, classes...), the model and attention configs."""
        raise NotImplementedError

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """The loss of `batch`, logging `stage`'s figures under `<stage>/` (stage: one of STAGES)."""
        raise NotImplementedError

    # Lightning's three step hooks, written once: a task fills shared_step
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def count_tokens(self, batch: dict[str, Any]) -> int:
        """Real (non-padding) tokens in a batch, for throughput."""
        return int(sum((~batch[key]).sum() for key in self.PADDING_MASKS))

    def test_cost(self) -> dict[str, Any]:
        """Cost figures the task measured during its test stage, added to results.json's `cost` beside
        the training figures (e.g. seq2seq decoding speed); none by default."""
        return {}

    def count_positions(self, batch: dict[str, Any]) -> int:
        """Positions the model computes on, padding included (for FLOPs per token)."""
        return int(sum(batch[key].numel() for key in self.PADDING_MASKS))

    def on_validation_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:  # DDP: one line, not one per rank
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
        if warmup < self.warmup_steps:  # a warm-up past the run's end would train it at a tiny lr throughout
            log.info(
                "task.module.warmup_steps=%d is more than half of the run's %d steps: warming up over %d",
                self.warmup_steps, total, warmup,
            )  # fmt: skip

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# ---- the contract, checked ---------------------------------------------------------------------------
def _defines(cls: type, member: str, base: type) -> bool:
    """Whether `cls` or a class between it and `base` defines `member` (not `base` itself)."""
    mro = cls.__mro__
    return any(member in klass.__dict__ for klass in mro[: mro.index(base)])


def _missing(cls: type, base: type) -> list[str]:
    return [member for member in base.REQUIRED if not _defines(cls, member, base)]


def task_class_of(make_module: Callable[..., Any]) -> type:
    """The class a `task.module` config builds: its `_target_` is `<Class>.from_datamodule` (partial)."""
    target = getattr(make_module, "func", make_module)  # functools.partial from `_partial_: true`
    owner = getattr(target, "__self__", target)  # the class of a bound classmethod
    return owner if isinstance(owner, type) else type(owner)


def check_task_config(task: Any) -> type:
    """The task class `task.module` builds, checked against the contract (before any data is read)."""
    from hydra.utils import instantiate

    try:
        make_module = instantiate(task.module, _recursive_=False)  # <Task>.from_datamodule, partial
    except Exception as error:  # a task plugin whose module does not import, a misspelt _target_
        cause = error.__cause__ or error
        raise TaskError(
            f"task '{task.get('name')}': task.module._target_={task.module.get('_target_')} cannot be "
            f"loaded ({type(cause).__name__}: {' '.join(str(cause).split())}); fix the module or its config"
        ) from error
    cls = task_class_of(make_module)
    check_task_class(cls, task)
    return cls


def check_task_class(cls: type, task: Mapping) -> None:
    """`cls` honours the AttnlabTask contract and `task.monitor`/`primary_metric` name metrics it logs."""
    where = f"task '{task.get('name')}': {cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, AttnlabTask)):
        raise TaskError(
            f"{where} is not an attnlab.tasks.common.AttnlabTask; subclass it (docs/adding-a-task.md) "
            "and point task.module._target_ at <Class>.from_datamodule"
        )
    missing = _missing(cls, AttnlabTask)
    counts = _defines(cls, "count_tokens", AttnlabTask) and _defines(cls, "count_positions", AttnlabTask)
    if not cls.PADDING_MASKS and not counts:
        missing.append("PADDING_MASKS (or count_tokens and count_positions)")
    steps = all(_defines(cls, hook, AttnlabTask) for hook in STEP_HOOKS)
    if not _defines(cls, "shared_step", AttnlabTask) and not steps:
        missing.append("shared_step (or training_step, validation_step and test_step)")
    if not cls.METRICS:
        missing.append("METRICS")
    if missing:
        raise TaskError(f"{where} does not define {', '.join(missing)}; see attnlab.tasks.common.AttnlabTask")
    for key, stage in (("monitor", "val"), ("primary_metric", "test")):
        logged = [f"{stage}/{m}" for m in cls.METRICS]
        if task.get(key) not in logged:
            raise ConfigError(
                f"task.{key}={task.get(key)}{did_you_mean(str(task.get(key)), logged)} is not a metric "
                f"{cls.__name__} logs; choose one of {', '.join(logged)}"
            )
    if task.get("monitor_mode") not in MONITOR_MODES:
        raise ConfigError(f"task.monitor_mode={task.get('monitor_mode')} must be min or max")


def check_datamodule(datamodule: Any, task: Mapping) -> None:
    """A set-up data module honours the EncodedDataModule contract: its members and every split."""
    cls = type(datamodule)
    where = f"task '{task.get('name')}': {cls.__module__}.{cls.__qualname__}"
    if not isinstance(datamodule, EncodedDataModule):
        raise TaskError(f"{where} is not an attnlab.tasks.common.EncodedDataModule; subclass it")
    missing = _missing(cls, EncodedDataModule)
    missing += [name for name in ("data", "batch_size") if not hasattr(datamodule, name)]
    splits = getattr(datamodule, "encoded", None) or {}
    missing += [f"encoded['{split}']" for split in SPLITS if split not in splits]
    if missing:
        raise TaskError(
            f"{where} does not define {', '.join(missing)}; see attnlab.tasks.common.EncodedDataModule"
        )
