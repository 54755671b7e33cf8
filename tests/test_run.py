"""The experiment run end to end: config composition, every _target_, fast_dev_run per variant, results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ROOT, compose_run, read_wandb_offline_run, run_cli
from hydra.utils import instantiate

from attnlab.attention import available_attentions, registry_entry
from attnlab.run.train import run

BUILTINS = [n for n in available_attentions() if registry_entry(n).source == "built-in"]
CONF = ROOT / "conf"
SMALL_DATA = ["task.data.limit.train=64", "task.data.limit.validation=32", "task.data.limit.test=32"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "schema")


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("trainer", [t for t in options("trainer") if t != "default"])
def test_model_and_trainer_options_compose_and_instantiate(tmp_path, model, trainer):
    cfg = compose_run(tmp_path, [f"model={model}", f"trainer={trainer}"], fast=False)
    if cfg.model.get("family") == "hf":  # a transformers model (model=hf*): its own config holds the sizes
        assert cfg.model.config.hidden_size % cfg.model.config.num_attention_heads == 0
    else:
        assert cfg.model.d_model % cfg.model.heads == 0
    if cfg.trainer.accelerator == "gpu":  # composes everywhere; instantiating needs a GPU
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
        return
    trainer_obj = instantiate(cfg.trainer, logger=False)
    expected_steps = 1 if cfg.trainer.fast_dev_run else cfg.trainer.max_steps  # fast_dev_run runs one batch
    assert trainer_obj.max_steps == expected_steps


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_options_instantiate(tmp_path, logger, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_run(tmp_path, [f"logger={logger}"])
    for logger_cfg in (cfg.logger or {}).values():
        assert instantiate(logger_cfg) is not None


def test_callbacks_instantiate(tmp_path):
    cfg = compose_run(tmp_path, [], fast=False)
    built = {name: instantiate(c) for name, c in cfg.callbacks.items()}
    assert set(built) == {
        "checkpoint",
        "latest",
        "early_stopping",
        "lr_monitor",
        "progress",
        "summary",
        "cost",
        "finite",
        "resume",
        "graceful_stop",
        "average",
    }
    assert built["average"] is None  # checkpoint averaging is opt-in (callbacks.average)
    assert built["checkpoint"].monitor == cfg.task.monitor == built["early_stopping"].monitor


@pytest.mark.parametrize("task", options("task"))
def test_task_datamodule_and_module_instantiate(tmp_path, task):
    # generated rows are never cut: a task whose generator's default length passes the tiny model's
    # max_len (helpers.FAST) is generated at that length
    fits = {"passkey": ["task.data.builtin.seq_len=128"]}.get(task, [])
    cfg = compose_run(tmp_path, [f"task={task}", *SMALL_DATA, *fits])
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.setup("fit")
    module = instantiate(cfg.task.module, _recursive_=False)(
        datamodule=datamodule, model=cfg.model, attention=cfg.attention
    )
    assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize("attention", BUILTINS)
def test_classify_fast_dev_run_with_each_builtin_variant(tmp_path, attention):
    cfg = compose_run(tmp_path, ["trainer=debug", "logger=none", f"attention={attention}", *SMALL_DATA])
    results = run(cfg)
    assert results["status"] == "ok" and results["attention"]["name"] == attention
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0
    assert results["cost"]["attention_flops_per_token"] > 0


def test_short_run_writes_complete_results_and_checkpoints(tmp_path):
    cfg = compose_run(
        tmp_path,
        [
            "logger=csv",
            "attention=linear",
            "trainer.max_steps=12",
            "trainer.val_check_interval=6",
            "trainer.log_every_n_steps=1",
            *SMALL_DATA,
        ],
    )
    results = run(cfg)
    run_dir = Path(cfg.paths.run_dir)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["task"] == "classify" and saved["seed"] == 0 and saved["primary_metric"] == "test/acc"
    assert {"test/acc", "test/f1", "test/baseline_acc", "val/acc", "val/loss"} <= saved["metrics"].keys()
    cost = saved["cost"]
    assert cost["train_tokens_per_s"] > 0 and cost["step_time_s"] > 0 and cost["peak_memory_mb"] > 0
    assert cost["peak_memory_kind"] == "cpu_peak_rss_run" and cost["attention_flops_per_token"] > 0
    assert saved["attention"] == results["attention"]
    assert (
        saved["attention"]["complexity"] == "O(N·d²)" and saved["attention"]["params"]["feature_map"] == "elu"
    )
    assert saved["attention"]["capabilities"]["causal"] is True
    assert saved["config"]["attention"]["name"] == "linear"  # the resolved config
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and (
        run_dir / "checkpoints" / "best.ckpt"
    ).exists()
    metrics_csv = (run_dir / "csv" / "metrics.csv").read_text()
    assert "cost/train_tokens_per_s" in metrics_csv and "train/loss_step" in metrics_csv


# Resuming run a's checkpoint in a new directory b is the case under test; Lightning warns that the
# checkpoint's directory changed, which is the point here (a resume in place has its own tests).
@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_resume_from_checkpoint_continues_the_step_count(tmp_path):
    first = compose_run(
        tmp_path / "a", ["logger=none", "trainer.max_steps=6", "trainer.val_check_interval=3", *SMALL_DATA]
    )
    run(first)
    last = Path(first.paths.run_dir) / "checkpoints" / "last.ckpt"
    resumed = compose_run(
        tmp_path / "b",
        [
            "logger=none",
            "trainer.max_steps=9",
            "trainer.val_check_interval=3",
            f"ckpt_path={last}",
            *SMALL_DATA,
        ],
    )
    run(resumed)
    import torch

    state = torch.load(Path(resumed.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 9


def test_wandb_offline_run_directory_holds_the_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key, so offline without a prompt
    cfg = compose_run(
        tmp_path,
        [
            "logger=wandb",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "trainer.log_every_n_steps=1",
            *SMALL_DATA,
        ],
    )
    run(cfg)
    runs = list((Path(cfg.paths.run_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (event_log,) = runs[0].glob("*.wandb")  # what `wandb sync` uploads and `wandb leet` shows
    logged = read_wandb_offline_run(event_log)
    assert "train/loss_step" in logged["history"] and "val/acc" in logged["history"]
    summary = logged["summary"]
    assert "test/acc" in summary and summary["cost/attention_flops_per_token"] > 0
    assert summary["attention/name"] == "multihead"
    assert (summary["budget/steps_done"], summary["budget/stopped_by"]) == (4, "max_steps")


def test_files_source_run_on_jsonl_written_by_the_test(tmp_path):
    rows = [
        {"review": f"{'good' if i % 2 else 'bad'} movie number {i}", "sentiment": "pos" if i % 2 else "neg"}
        for i in range(60)
    ]
    paths = {}
    for split, part in (("train", rows[:40]), ("validation", rows[40:50]), ("test", rows[50:])):
        paths[split] = tmp_path / f"{split}.jsonl"
        paths[split].write_text("\n".join(json.dumps(r) for r in part))
    cfg = compose_run(
        tmp_path,
        [
            "trainer=debug",
            "logger=none",
            "task.data.source=files",
            *(f"task.data.{split}={path}" for split, path in paths.items()),
            "task.data.columns.text=review",
            "task.data.columns.label=sentiment",
        ],
    )
    results = run(cfg)
    assert results["metrics"]["test/acc"] >= 0.0


def test_cli_single_run_and_unknown_variant_error(tmp_path):
    bad = run_cli(["attention=lineer", "trainer=debug", "logger=none"], cwd=tmp_path)
    assert bad.returncode == 2
    assert "did you mean 'linear'" in bad.stderr and "Traceback" not in bad.stderr + bad.stdout
    assert not list(tmp_path.rglob("results.json"))


def test_cli_mistyped_attention_parameter(tmp_path):
    bad = run_cli(["attention=linear", "attention.feture_map=relu", "trainer=debug"], cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean 'feature_map'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_role_error_names_the_override(tmp_path):
    bad = run_cli(["task=translate", "attention=lowrank", "trainer=debug", "logger=none"], cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "model.decoder.self_attention=" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_multirun_sweep_shares_a_directory(tmp_path):
    result = run_cli(
        [
            "-m",
            "attention=full,linear",
            "trainer=debug",
            "logger=csv",
            *SMALL_DATA,
            "model.d_model=32",
            "model.heads=2",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = sorted(tmp_path.glob("multirun/classify/*/*/results.json"))
    assert [json.loads(p.read_text())["attention"]["name"] for p in found] == ["full", "linear"]
    assert len({p.parent.parent for p in found}) == 1


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_options_compose(tmp_path, experiment):
    cfg = compose_run(tmp_path, [f"experiment={experiment}"], fast=False)
    assert experiment in cfg.tags
    if cfg.task.data.source != "builtin":  # shipped or hub data: its loader's own tests cover it
        return
    from attnlab.data.generators import generator_params, get_generator

    name, params = generator_params(cfg.task.data.builtin)
    small = {k: v for k, v in {"n_train": 4, "n_validation": 2, "n_test": 2}.items() if k in params}
    rows = get_generator(name)(**params | small)
    lengths = [len(r["text"]) if "text" in r else len(r["ids"]) - 1 for r in rows["train"]]
    if cfg.task.name != "lm":  # lm packs its documents into windows: any length fits
        assert all(n <= cfg.model.max_len for n in lengths)
