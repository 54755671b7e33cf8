"""Scaling out with the engines the field trusts: Lightning DDP/FSDP, Hydra's joblib and submitit
launchers, Hydra's Optuna sweeper; and the GPU path (bf16-mixed, SDPA's fused kernels)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, compose_run, run_cli, run_if
from hydra import compose, initialize_config_module
from hydra.utils import get_class, instantiate

from attnlab.attention import registry_entry
from attnlab.config.schemas import store_configs
from attnlab.run.train import run

SMALL_DATA = ["task.data.limit.train=64", "task.data.limit.validation=32", "task.data.limit.test=32"]
SMALL_MODEL = [
    "model.d_model=32",
    "model.heads=2",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.max_len=128",
]
QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress=null"]
SEARCHES = sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml"))
VARIANT_SEARCHES = [s for s in SEARCHES if s != "optuna"]


def compose_hydra(overrides: list[str]):
    """The composed config including the `hydra` node (launcher, sweeper), as `python -m attnlab -m` sees it."""
    store_configs()
    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def search(name: str) -> str:
    """`hparams_search=<name>`; `+hparams_search=` while conf/config.yaml does not declare the group."""
    declared = "hparams_search" in (ROOT / "conf" / "config.yaml").read_text()
    return f"{'' if declared else '+'}hparams_search={name}"


# ---- multi-process training ------------------------------------------------------------------------
def test_ddp_trainer_config_builds_a_two_process_ddp_trainer(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    cfg = compose_run(
        tmp_path, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=1"]
    )
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_devices == 2 and trainer.num_nodes == 1 and trainer.world_size == 2


def test_fsdp_trainer_config_shards_per_transformer_block(tmp_path):
    from lightning.pytorch.strategies import FSDPStrategy

    from attnlab.nn import TransformerBlock

    cfg = compose_run(tmp_path, ["trainer=fsdp", "model=base"], fast=False)
    # Lightning's FSDP is GPU-only: the strategy object builds anywhere, the Trainer needs GPUs.
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "full"
    assert TransformerBlock in strategy.kwargs["auto_wrap_policy"]._module_classes


@pytest.mark.slow
# the DDP checkpoint resumes in another directory on purpose: Lightning's warning about it says nothing
@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_ddp_two_cpu_processes_reduce_metrics_and_rank_zero_writes(tmp_path):
    """Real 2-process DDP (gloo) launched by Lightning from the Hydra app; then a 1-process resume."""
    common = [*SMALL_DATA, *SMALL_MODEL, *QUIET, "trainer.val_check_interval=2"]
    result = run_cli(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "logger=wandb",
            "trainer.max_steps=4",
            *common,
        ],
        cwd=tmp_path,
        env={"HOME": str(tmp_path)},
        timeout=400,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # Each rank reports what it computed: identical, because torchmetrics and sync_dist reduce over both ranks.
    lines = re.findall(r"rank (\d) of 2: val/acc = ([\d.]+), test/acc = ([\d.]+)", output)
    reported = {rank: (val, test) for rank, val, test in lines}
    assert set(reported) == {"0", "1"} and reported["0"] == reported["1"], output[-4000:]

    # Rank zero alone writes results.json and logs to wandb.
    found = list(tmp_path.rglob("results.json"))
    assert len(found) == 1, found
    run_dir = found[0].parent
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    results = json.loads(found[0].read_text())
    assert results["config"]["trainer"]["strategy"] == "ddp" and results["config"]["trainer"]["devices"] == 2
    assert float(reported["0"][0]) == pytest.approx(results["metrics"]["val/acc"])

    # The training data was sharded: 64 examples / 2 ranks = one batch of 32 per rank per epoch.
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
    assert state["epoch"] >= 3, f"epoch {state['epoch']} after 4 steps: train data not sharded"

    # val/acc covers the whole validation set: recompute it in one process from the same weights.
    cfg = compose_run(tmp_path / "check", [*common, "trainer=cpu"])
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.setup("fit")
    module = (
        get_class(cfg.task.module._target_.rsplit(".", 1)[0])
        .load_from_checkpoint(last, map_location="cpu", weights_only=False)
        .eval()
    )
    correct = total = 0
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            correct += int((module(batch).argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
    assert total == 32 and correct / total == pytest.approx(results["metrics"]["val/acc"])

    # The DDP checkpoint resumes in a single process.
    resumed = compose_run(
        tmp_path / "resume",
        [*common, "trainer=cpu", "logger=none", "trainer.max_steps=6", f"ckpt_path={last}"],
    )
    run(resumed)
    state = torch.load(
        Path(resumed.paths.run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert state["global_step"] == 6


# ---- sweeps: joblib (local, parallel), submitit (SLURM; local executor in the test) ------------------
def test_slurm_launcher_preset_composes_from_the_trainer(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_hydra(
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.timeout_min=30",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min) == ("gpu", 30)
    # One SLURM task per GPU, as many nodes as the trainer has.
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.cpus_per_task > 0 and launcher.mem_gb > 0
    assert launcher.submitit_folder.endswith(".submitit/%j")
    single = compose_hydra(["hydra/launcher=slurm", "trainer=gpu"]).hydra.launcher
    assert (single.gpus_per_node, single.tasks_per_node, single.nodes) == (1, 1, 1)
    assert instantiate(launcher) is not None


def test_parallel_launcher_preset_is_joblib(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    launcher = compose_hydra(["hydra/launcher=parallel"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 2 and launcher.prefer == "processes"
    assert instantiate(launcher) is not None


@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = run_cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "attention=full,linear",
            "trainer=debug",
            "logger=none",
            *SMALL_DATA,
            *SMALL_MODEL,
        ],
        cwd=tmp_path,
        timeout=400,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    found = sorted(tmp_path.glob("multirun/classify/*/*/results.json"))
    assert [json.loads(p.read_text())["attention"]["name"] for p in found] == ["full", "linear"]
    sweep = found[0].parent.parent
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # submitit ran both jobs


# ---- hyperparameter search -------------------------------------------------------------------------
@pytest.mark.parametrize("name", SEARCHES)
def test_hparams_search_configs_compose(tmp_path, name):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_hydra([search(name)])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and cfg.task.monitor_mode == "max"
    assert sweeper.params["task.module.lr"].startswith("tag(log, interval(")
    if name == "optuna":
        return
    assert cfg.attention.name == name
    ((key, space),) = [(k, v) for k, v in sweeper.params.items() if k.startswith("attention.")]
    param = key.split(".", 1)[1]
    assert param in registry_entry(name).hyperparameters
    for value in re.fullmatch(r"choice\((.*)\)", space).group(1).split(","):  # every choice is a valid value
        assert str(compose_hydra([search(name), f"{key}={value.strip()}"]).attention[param]) == value.strip()


def test_optuna_search_runs_trials_in_parallel_and_reports_the_best(tmp_path):
    """Two trials at once through the joblib launcher; the study is kept in a SQLite database."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    database = tmp_path / "optuna.db"
    result = run_cli(
        [
            "-m",
            search("performer"),
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "hydra/launcher=parallel",
            f"hydra.sweeper.storage=sqlite:///{database}",
            "hydra.sweeper.study_name=test",
            "trainer=debug",
            "logger=none",
            *SMALL_DATA,
            *SMALL_MODEL,
        ],
        cwd=tmp_path,
        timeout=400,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    found = sorted(tmp_path.glob("multirun/classify/*/*/results.json"))
    trials = [json.loads(p.read_text()) for p in found]
    assert len(trials) == 2 and all(t["attention"]["name"] == "performer" for t in trials)
    assert len({t["config"]["task"]["module"]["lr"] for t in trials}) == 2  # the sampler chose the values
    assert all(1e-4 <= t["config"]["task"]["module"]["lr"] <= 3e-3 for t in trials)
    best = yaml.safe_load((found[0].parent.parent / "optimization_results.yaml").read_text())
    assert {"task.module.lr", "attention.features"} <= best["best_params"].keys()
    assert best["best_value"] == max(t["metrics"]["val/acc"] for t in trials)
    import optuna

    study = optuna.load_study(study_name="test", storage=f"sqlite:///{database}")
    assert len(study.trials) == 2 and study.best_value == best["best_value"]


# ---- the GPU path ------------------------------------------------------------------------------------
@run_if(min_gpus=1, bf16=True)
def test_gpu_bf16_mixed_fast_dev_run(tmp_path):
    cfg = compose_run(tmp_path, ["trainer=gpu", "trainer.fast_dev_run=true", "logger=none", *SMALL_DATA])
    assert cfg.trainer.precision == "bf16-mixed"
    results = run(cfg)
    assert results["status"] == "ok" and 0.0 <= results["metrics"]["test/acc"] <= 1.0
    assert results["cost"]["peak_memory_kind"] == "cuda_allocator" and results["cost"]["peak_memory_mb"] > 0


@run_if(min_gpus=1, bf16=True)
def test_gpu_multihead_fast_path_runs_on_the_flash_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from attnlab import build_attention

    attention = build_attention("multihead").cuda().eval()
    shape = (2, 4, 256, 64)  # (B, H, N, D)
    q, k, v = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if flash cannot run this call
        out = attention(q, k, v, causal=True)
    reference = build_attention("full").cuda().eval()(q.float(), k.float(), v.float(), causal=True)
    assert out.shape == shape and torch.allclose(out.float(), reference, atol=3e-2)
