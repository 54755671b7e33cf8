"""One experiment run: data, model, Lightning training, evaluation, results.json.

`run(cfg) -> dict` is a plain function (tests call it with a composed config); `attnlab.run.app.job`
is the thin wrapper Hydra runs (exit statuses, failed.json).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from attnlab.attention import describe, get_attention_class
from attnlab.config.checks import check_config
from attnlab.console import drop_framework_warnings
from attnlab.host.allocator import keep_freed_memory
from attnlab.host.threads import training_threads
from attnlab.nn.hf_models import is_hf_model
from attnlab.nn.pattern import config_label
from attnlab.nn.spec import AttentionSpec
from attnlab.nn.stacks import describe_stacks
from attnlab.run.budget import basis_text, budget_line, run_budget
from attnlab.run.callbacks import CostMeter, NumericalError
from attnlab.run.checkpoints import DataRecord, already_finished_message, check_checkpoint, data_settings
from attnlab.run.eval_lengths import evaluate_at_lengths, state_at_lengths
from attnlab.run.interrupts import set_phase
from attnlab.run.lock import holding
from attnlab.run.results import RESULTS_FILE, best_key, is_partial, read_finished, write_results
from attnlab.run.schedule import validate_within_budget
from attnlab.run.tracking import ensure_wandb_mode, quiet_wandb_init, start_wandb, wandb_run_id
from attnlab.tasks.common import check_datamodule

log = logging.getLogger("attnlab.train")  # its name in run.log (docs/runs.md) from before the move to run/


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; write and return its results."""
    check_config(cfg)  # the task contract included (attnlab.tasks.common.check_task_config)
    run_dir = Path(cfg.paths.run_dir)
    if cfg.ckpt_path == "last" and (finished := read_finished(run_dir)) is not None:
        log.info(already_finished_message(run_dir))  # never re-run, never rewritten
        return finished
    run_dir.mkdir(parents=True, exist_ok=True)
    with holding(run_dir):  # one run per run directory, for the run's life (attnlab.run.lock)
        return train_in(cfg, run_dir)


def train_in(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """`run` once the run directory is this run's own."""
    validate_within_budget(cfg)  # max_steps below val_check_interval: validate at the last step
    drop_framework_warnings()  # as `python -m attnlab` does, for in-process callers too
    L.seed_everything(cfg.seed, workers=True)

    set_phase("preparing the data")
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")  # loads and validates the data before any training step
    check_datamodule(datamodule, cfg.task)
    set_phase("building the model")
    module = instantiate(cfg.task.module, _recursive_=False)(
        datamodule=datamodule, model=cfg.model, attention=cfg.attention
    )

    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    if not cfg.trainer.enable_progress_bar:  # Lightning refuses a progress bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.trainer.fast_dev_run:  # a check that the config runs: no checkpoints (Lightning's save_last would)
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    callbacks.append(DataRecord(data_settings(cfg.task.get("data"))))  # compared when a run resumes from it
    cost = next((c for c in callbacks if isinstance(c, CostMeter)), None) or CostMeter()
    if cost not in callbacks:
        callbacks.append(cost)
    loggers = build_loggers(cfg)
    if not loggers:  # Lightning refuses a learning-rate monitor without a logger (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir)
    )
    on_cpu = trainer.strategy.root_device.type == "cpu"
    with (
        training_threads(cfg.threads) as threads,
        keep_freed_memory(on_cpu and cfg.keep_freed_memory) as allocation,
    ):
        log.info("%s; memory: %s", threads, allocation)
        try:
            results = fit_and_test(cfg, run_dir, trainer, module, datamodule, cost, loggers)
        finally:
            finish_loggers(loggers)  # flush wandb files; a sweep's next run must not reuse this wandb run
    # The console's last line, after wandb's: a run that stopped before its planned steps says so.
    if trainer.is_global_zero and (line := budget_line(results["budget"], run_dir)) is not None:
        (log.warning if is_partial(results) else log.info)(line)
    return results


def fit_and_test(
    cfg: DictConfig,
    run_dir: Path,
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: Any,
    cost: CostMeter,
    loggers: list,
) -> dict[str, Any]:
    """Fit, evaluate the best checkpoint on the test split, and record the results (rank zero)."""
    ckpt_path = resolve_ckpt_path(cfg, run_dir)
    # unreadable, another task/model/attention/data, or already at max_steps: one line
    check_checkpoint(
        ckpt_path,
        module.hparams,
        max_steps=trainer.max_steps,
        data=data_settings(cfg.task.get("data")),
        own_run=cfg.ckpt_path == "last",
    )
    set_phase("training")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except (SIGTERMException, NumericalError) as stop:  # failed.json records the budget (write_failure)
        stop.budget = run_budget(trainer, stop)
        if trainer.is_global_zero and (line := budget_line(stop.budget, run_dir)) is not None:
            log.warning(line)
        raise
    set_phase("testing")
    budget = run_budget(trainer)  # what the fit got of its steps, read before the test stage
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    best = checkpoint.best_model_path if checkpoint is not None and not cfg.trainer.fast_dev_run else ""
    # The fit's last train/val metrics (what a sweeper optimises), kept before trainer.test resets them.
    metrics = {k: _number(v) for k, v in trainer.callback_metrics.items() if not k.startswith("cost/")}
    # The monitored validation score of the checkpoint the test reads (best/val/acc): a study selects
    # on it, so the run it reports was chosen on the very weights its test metric comes from.
    score = getattr(checkpoint, "best_model_score", None) if best else None
    if score is not None and math.isfinite(_number(score)):
        metrics[best_key(cfg.task.monitor)] = _number(score)
    # before test: loading the best checkpoint rewinds the meter
    train_cost = cost.summary(module.device) | {"threads": torch.get_num_threads()}
    test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    for stage_metrics in test_metrics:
        metrics.update({k: _number(v) for k, v in stage_metrics.items()})
    # task.eval_lengths: the same weights on the test set regenerated at other lengths (test/acc@4096)
    metrics.update(
        {k: _number(v) for k, v in evaluate_at_lengths(cfg, module, datamodule, best or None).items()}
    )
    train_cost |= state_at_lengths(cfg, module)  # decode_state_bytes@<length> for task.eval_lengths
    results = collect_results(cfg, module, metrics, train_cost | module.test_cost(), best, budget)
    results["basis"] = basis(cfg, trainer, budget, best)  # quoted wherever the figure is (the resume line)
    # metrics are reduced across ranks (torchmetrics, sync_dist): every rank agrees
    if trainer.world_size > 1:
        log.info(
            "rank %d of %d: %s = %s, %s = %s",
            trainer.global_rank,
            trainer.world_size,
            cfg.task.monitor,
            metrics.get(cfg.task.monitor),
            cfg.task.primary_metric,
            metrics.get(cfg.task.primary_metric),
        )
    # multi-process runs: one results.json and one wandb summary, from rank zero
    if not trainer.is_global_zero:
        return results
    write_results(run_dir, results)
    for logger in loggers:
        log_summary(logger, results)
    log.info(
        "%s = %s  |  %s  |  results: %s",
        cfg.task.primary_metric,
        shown(metrics.get(cfg.task.primary_metric)),
        results["basis"],
        run_dir / RESULTS_FILE,
    )
    return results


def basis(cfg: DictConfig, trainer: L.Trainer, budget: dict, best: str) -> str:
    """The seed, budget, learning rate and tested weights behind the run's figure (attnlab.run.budget)."""
    data, module = cfg.task.get("data") or {}, cfg.task.get("module") or {}
    batch = data.get("batch_size")
    if isinstance(batch, int):  # examples per optimiser step, over accumulation and processes
        batch *= int(trainer.accumulate_grad_batches) * int(trainer.world_size)
    lr = module.get("lr")
    return basis_text(
        budget,
        seed=cfg.seed,
        batch=batch if isinstance(batch, int) else None,
        lr=float(lr) if isinstance(lr, int | float) else None,
        checkpoint=cfg.task.monitor if best else None,
    )


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for logger_cfg in (cfg.logger or {}).values():
        if logger_cfg is None:
            continue
        extra: dict[str, Any] = {}
        if "WandbLogger" in str(logger_cfg.get("_target_", "")):
            ensure_wandb_mode()
            extra["group"] = logger_cfg.get("group") or sweep_group(cfg)  # logger.wandb.group wins
            extra["tags"] = list(cfg.tags) + [
                f"task:{cfg.task.name}",
                f"attention:{variant_label(cfg)}"[:64],
            ]  # wandb's tag limit
            extra["id"] = wandb_run_id(cfg.paths.run_dir)  # a resumed run continues its wandb run
        logger = instantiate(logger_cfg, **extra)
        quiet_wandb_init(logger)
        if "WandbLogger" in str(logger_cfg.get("_target_", "")):
            start_wandb(logger)  # online within a timeout, else offline with one warning: the run goes on
        logger.log_hyperparams(
            {"config": OmegaConf.to_container(cfg, resolve=True)}
        )  # the full resolved config
        loggers.append(logger)
    return loggers


def sweep_group(cfg: DictConfig) -> str | None:
    """A sweep's runs share one wandb group (its sweep directory); a single run has none."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ValueError, ImportError):
        return None
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return f"{cfg.task.name}-{Path(hydra_cfg.sweep.dir).name}"


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    if cfg.ckpt_path in (None, ""):
        return None
    from attnlab.errors import ConfigError

    if cfg.ckpt_path == "last":  # `python -m attnlab` points the run directory at the newest resumable run
        own = run_dir / "checkpoints" / "last.ckpt"
        if not own.exists():
            raise ConfigError(
                f"ckpt_path=last but {own} does not exist; drop ckpt_path for a fresh run or give a .ckpt file"
            )
        return str(own)
    path = Path(cfg.ckpt_path)
    if not path.exists():
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} does not exist; give a .ckpt file (e.g. <run_dir>/checkpoints/last.ckpt)"
        )
    return str(path)


def collect_results(
    cfg: DictConfig, module: L.LightningModule, metrics: dict, cost: dict, best: str, budget: dict
) -> dict:
    cls = get_attention_class(cfg.attention.name)
    attention = describe(cls) | {
        "params": {k: v for k, v in OmegaConf.to_container(cfg.attention).items() if k != "name"}
    }
    label = variant_label(cfg)
    if label != cfg.attention.name:  # a per-layer pattern (attnlab/nn/pattern.py): its layers, summed costs
        attention = describe_stacks(module, label) or attention
    return {
        "status": "ok",
        "task": cfg.task.name,
        "primary_metric": cfg.task.primary_metric,
        "primary_mode": cfg.task.monitor_mode,
        "metrics": metrics,
        "cost": cost,
        "attention": attention,
        "parameters": sum(p.numel() for p in module.parameters()),
        "max_len": cfg.model.max_len,
        "seed": cfg.seed,
        "budget": budget,  # {steps_done, steps_planned, stopped_by}: attnlab.run.budget
        "best_checkpoint": best or None,
        "run_dir": str(cfg.paths.run_dir),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def variant_label(cfg: DictConfig) -> str:
    """The run's variant as tags and results name it: `attention`, or the label of its per-layer pattern."""
    if is_hf_model(cfg.model):  # a transformers model: its own layers
        return str(cfg.attention.name)
    return config_label(cfg.model, AttentionSpec.from_config(cfg.attention)) or str(cfg.attention.name)


def finish_loggers(loggers: list) -> None:
    for logger in loggers:
        finish = getattr(getattr(logger, "_experiment", None), "finish", None)  # only a started wandb run
        if finish is not None:
            finish()


def log_summary(logger: Any, results: dict) -> None:
    experiment = getattr(logger, "experiment", None)
    summary = getattr(experiment, "summary", None)
    if summary is None:
        return
    flat = {f"cost/{k}": v for k, v in results["cost"].items() if v is not None}
    flat |= {f"attention/{k}": v for k, v in results["attention"].items() if not isinstance(v, dict)}
    flat |= {k: v for k, v in results["metrics"].items()}
    flat["parameters"] = results["parameters"]
    flat |= {f"budget/{k}": v for k, v in results["budget"].items() if v is not None}
    summary.update(flat)


def shown(value: float | None) -> str:
    """A metric as the console shows it: 4 significant digits (results.json keeps full precision)."""
    return "n/a" if value is None else f"{value:.4g}"


def _number(value: Any) -> float:
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else float("nan")
