"""Nothing runaway, nothing silently wrong (issue 30): the memory estimate made from a config before
anything is built (attnlab/nn/estimate.py), and the guards a catalogue row cannot state."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import compose_run
from hydra.utils import instantiate

from attnlab.errors import ConfigError
from attnlab.nn.estimate import GB, available_memory, check_fits, estimate
from attnlab.run.app import run_args

SPLITS = {"train": 32, "validation": 8, "test": 8}


def _built_parameters(cfg) -> int:
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.setup("fit")
    module = instantiate(cfg.task.module, _recursive_=False)(
        datamodule=datamodule, model=cfg.model, attention=cfg.attention
    )
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("task", ["classify", "mqar"])
def test_the_parameter_estimate_is_a_close_floor_of_the_built_model(tmp_path, task):
    """A floor (never refuses a model that fits) and a close one (biases, norms and heads are all
    it leaves out) for an encoder and a decoder-only task. (A trained BPE vocabulary is not known
    before training: the estimate counts the byte tokenizer's, so it is a looser floor there.)"""
    small = {"classify": "task.data.limit", "mqar": "task.data.builtin"}[task]
    sizes = [f"{small}.{'n_' if task == 'mqar' else ''}{split}={n}" for split, n in SPLITS.items()]
    cfg = compose_run(tmp_path, [f"task={task}", "model.d_model=64", "model.mlp_ratio=4", *sizes])
    built = _built_parameters(cfg)
    found = estimate(cfg).parameters
    assert 0.7 * built <= found <= built, (found, built)


def test_a_variants_own_working_memory_enters_the_estimate(tmp_path):
    """based keeps phi(q), phi(k) with 1 + f + f(f+1)/2 Taylor features: quadratic in feature_dim."""
    small = estimate(compose_run(tmp_path, ["attention=based", "attention.feature_dim=16"]))
    large = estimate(compose_run(tmp_path, ["attention=based", "attention.feature_dim=64"]))
    assert large.kernel_bytes > 10 * small.kernel_bytes  # features 2145 vs 153; the window's scores stay
    assert large.activation_bytes - large.kernel_bytes == small.activation_bytes - small.kernel_bytes


def test_train_short_test_long_is_estimated_at_the_training_length(tmp_path):
    """model.max_len=4096 sizes the positions for a test at 4K; the batches trained on are 128 tokens,
    so the activations are those of 128 (the refusal, if any, says to lower the generated length)."""
    short = ["task=mqar", "task.data.builtin.seq_len=128"]
    sized_for_4k = estimate(compose_run(tmp_path, [*short, "model.max_len=4096"]))
    sized_for_128 = estimate(compose_run(tmp_path, [*short, "model.max_len=128"]))
    assert sized_for_4k.activation_bytes == sized_for_128.activation_bytes
    trained_at_4k = estimate(
        compose_run(tmp_path, ["task=mqar", "task.data.builtin.seq_len=4096", "model.max_len=4096"])
    )
    assert trained_at_4k.activation_bytes > 20 * sized_for_4k.activation_bytes


def test_the_refusal_names_the_estimate_the_memory_and_what_to_lower(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_MEMORY_GB", "1")
    cfg = compose_run(tmp_path, ["model.mlp_ratio=100000"])
    with pytest.raises(ConfigError) as refused:
        check_fits(cfg)
    message = str(refused.value)
    assert (
        message.startswith("this model needs at least ")
        and "1.0 GB is allowed by ATTNLAB_MEMORY_GB=1" in message
    )
    assert "lower model.mlp_ratio=100000" in message and "\n" not in message
    fits = check_fits(compose_run(tmp_path))  # the default tiny model fits in 1 GB
    assert 0 < fits.total_bytes < GB


def test_available_memory_is_the_machines_unless_limited(monkeypatch):
    monkeypatch.delenv("ATTNLAB_MEMORY_GB", raising=False)
    free, where = available_memory("cpu")
    assert free > 0 and where
    monkeypatch.setenv("ATTNLAB_MEMORY_GB", "lots")
    with pytest.raises(ConfigError, match="ATTNLAB_MEMORY_GB=lots must be a number of GB"):
        available_memory("cpu")


def test_a_warmup_longer_than_the_run_is_capped_with_a_line(tmp_path, caplog):
    """warmup_steps past max_steps would train the whole run at a fraction of the lr: capped at half
    the run, and said."""
    caplog.set_level(logging.INFO)
    code, message = run_args(
        [
            f"paths.run_dir={tmp_path / 'run'}",
            f"paths.data_cache={tmp_path / 'cache'}",
            "model.d_model=32",
            "model.heads=2",
            "model.encoder_layers=1",
            "model.max_len=64",
            "logger=none",
            "callbacks.progress=null",
            "trainer.enable_progress_bar=false",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "task.data.limit.train=64",
            "task.data.limit.validation=16",
            "task.data.limit.test=16",
            "task.module.warmup_steps=1000",
        ]
    )
    assert code == 0, message
    assert (
        "task.module.warmup_steps=1000 is more than half of the run's 4 steps: warming up over 2"
        in caplog.text
    )


def test_an_unknown_wandb_mode_is_one_line_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "garbage")
    code, message = run_args(
        [f"paths.run_dir={tmp_path / 'run'}", f"paths.data_cache={tmp_path / 'cache'}", "logger=wandb"]
    )
    assert code == 2
    assert message.startswith("error: WANDB_MODE=garbage is not a wandb mode;") and "\n" not in message
    assert not Path(tmp_path / "run").exists()


def test_max_new_tokens_past_the_positions_says_where_generation_stops(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = compose_run(
        tmp_path,
        [
            "task=translate",
            "task.decode.max_new_tokens=100000",
            "model.max_len=64",
            "task.data.tokenizer=bytes",
        ],
    )
    _built_parameters(cfg)
    assert (
        "task.decode.max_new_tokens=100000: generation stops at 63 tokens (model.max_len - 1)" in caplog.text
    )
