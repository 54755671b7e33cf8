"""What a user sees: the console of a run, --help, the files of trainer=debug, the CPU threads chosen."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import compose_run, run_cli

from attnlab.errors import ConfigError
from attnlab.host.threads import PASSIVE_OPENMP, available_cores, choose_threads
from attnlab.run.train import run

TINY = [
    "model.d_model=32",
    "model.heads=2",
    "model.encoder_layers=1",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "task.data.batch_size=8",
    "task.data.limit.train=48",
    "task.data.limit.validation=16",
    "task.data.limit.test=8",
]


@pytest.mark.slow  # a command-line run: ~15-30 s on 2 busy cores
def test_a_run_prints_each_line_once_and_no_framework_noise(tmp_path):
    done = run_cli([*TINY, "logger=wandb"], cwd=tmp_path)  # progress bar and model summary on
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    logged = [re.sub(r"^\[[^]]*\]\[[^]]*\]\[\w+\] - ", "", line) for line in console.splitlines()]
    logged = [line.strip() for line in logged if line.strip()]
    repeated = {line: n for line, n in Counter(logged).items() if n > 1 and not set(line) <= set("━─│┃ ")}
    assert not repeated, repeated
    for noise in (
        "Total FLOPs",
        "FLOPs",
        "Epoch 0/-2",
        "deprecated",
        "💡",
        "0.00it/s",
        "anonymous",
        "INFO: ",
    ):
        assert noise not in console, noise
    # epochs counted from 1, as wandb's final `epoch` (issue 30; it was "Epoch 0")
    assert "threads: " in console and "Epoch 1" in console and "Parameters:" in console


def test_help_of_the_app_and_of_the_bench_name_attnlab_and_their_own_groups(tmp_path):
    app = subprocess.run(
        [sys.executable, "-m", "attnlab", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert app.returncode == 0 and app.stdout.startswith("attnlab:"), app.stdout[:300]
    for group in ("attention:", "task:", "trainer:", "hydra/launcher: basic, parallel"):
        assert group in app.stdout, group
    assert "powered by Hydra" not in app.stdout

    bench = subprocess.run(
        [sys.executable, "-m", "attnlab.bench", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert bench.returncode == 0 and bench.stdout.startswith("attnlab.bench:"), bench.stdout[:300]
    groups = bench.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert re.findall(r"^(\S+): ", groups, re.M) == ["logger"], groups


def test_trainer_debug_writes_no_checkpoint(tmp_path):
    cfg = compose_run(tmp_path, ["trainer=debug", "logger=none"])
    results = run(cfg)
    assert results["status"] == "ok"
    assert not list(Path(cfg.paths.run_dir).rglob("*.ckpt"))


# ---- threads ------------------------------------------------------------------------------------
def test_threads_auto_takes_the_smallest_allotment(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert choose_threads("auto") == (cores, f"CPU affinity: {cores} core{'s' if cores > 1 else ''}")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cores() == (1, "SLURM_CPUS_PER_TASK: 1 core")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(cores + 4))  # more than the affinity allows
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what joblib gives each of its workers
    assert available_cores() == (1, "OMP_NUM_THREADS: 1 core")
    assert choose_threads(3) == (3, "threads=3")


@pytest.mark.parametrize("bad", [0, -1, "many", 2.5, True])
def test_threads_must_be_auto_or_a_positive_number(bad):
    with pytest.raises(ConfigError, match=r"threads=.*give auto .* or a number >= 1"):
        choose_threads(bad)


def test_importing_attnlab_makes_openmp_wait_passively_unless_the_user_chose():
    check = "import os, attnlab; print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'])"
    env = {k: v for k, v in os.environ.items() if k not in PASSIVE_OPENMP}
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["PASSIVE", "0"]
    out = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        check=True,
    )
    assert out.stdout.split() == ["ACTIVE", "0"]
