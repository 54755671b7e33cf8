"""Helpers shared by the run tests: compose the app's config the way `python -m attnlab` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from attnlab.schemas import store_configs

ROOT = Path(__file__).resolve().parents[1]

# Tiny, fast settings for end-to-end runs in tests.
FAST = [
    "model.d_model=32",
    "model.heads=2",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.max_len=128",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
]


def compose_run(tmp_path: Path, overrides: list[str] = (), *, fast: bool = True) -> DictConfig:
    """The composed config of `python -m attnlab <overrides>`, writing under tmp_path."""
    store_configs()
    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                f"paths.run_dir={tmp_path / 'run'}",
                f"paths.data_cache={tmp_path / 'cache'}",
                *(FAST if fast else []),
                *overrides,
            ],
        )


def run_cli(args: list[str], cwd: Path, *, module: str = "attnlab", timeout: int = 300, env: dict | None = None):
    """Run `python -m <module> args` in a subprocess (offline wandb); returns CompletedProcess."""
    environment = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    environment.pop("HYDRA_FULL_ERROR")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment
    )


def run_if(*, min_gpus: int = 0, bf16: bool = False):
    """Skip a test unless this machine has what it needs (lightning-hydra-template's RunIf, reduced):
    `@run_if(min_gpus=1, bf16=True)`."""
    import pytest
    import torch

    reasons = []
    gpus = torch.cuda.device_count()
    if gpus < min_gpus:
        reasons.append(f"needs {min_gpus} CUDA GPU(s), found {gpus}")
    if bf16 and not (gpus and torch.cuda.is_bf16_supported()):
        reasons.append("needs a CUDA GPU with bfloat16")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))
