"""Helpers shared by the run tests: compose the app's config the way `python -m attnlab` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from attnlab.config.schemas import store_configs
from attnlab.config.sequence_lengths import resolve_max_len

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
    """The composed config of `python -m attnlab <overrides>`, writing under tmp_path, with
    model.max_len=null set to the generated length as the app's checks set it before anything reads it."""
    store_configs()
    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"paths.run_dir={tmp_path / 'run'}",
                f"paths.data_cache={tmp_path / 'cache'}",
                *(FAST if fast else []),
                *overrides,
            ],
        )
    resolve_max_len(cfg)
    return cfg


def run_cli(
    args: list[str], cwd: Path, *, module: str = "attnlab", timeout: int = 300, env: dict | None = None
):
    """Run `python -m <module> args` in a subprocess (offline wandb); returns CompletedProcess."""
    environment = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    environment.pop("HYDRA_FULL_ERROR")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
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


def read_wandb_offline_run(path: Path, *, wait_s: float = 60) -> dict:
    """History (last value per key), summary, run id and run (group, job_type) of an offline run's `.wandb` file.

    wandb's service may still be writing the file when `finish()` has returned: the file is read
    again (up to `wait_s`) until it holds the run's exit record and stops growing.

    wandb >= 0.2x no longer writes files/wandb-summary.json offline and ships no Python reader, so
    this decodes the record log directly: a 7-byte file header (":W&B", magic 0xBEE1, version), then
    32 KiB blocks of records, each with a 7-byte header (crc32, length, type: full/first/middle/last)
    holding a serialized `wandb_internal_pb2.Record`.
    """
    import time

    deadline, size = time.monotonic() + wait_s, -1
    while True:
        out = _read_wandb_records(path)
        complete = out.pop("complete") and path.stat().st_size == size  # an exit record, and no more writes
        if complete or time.monotonic() > deadline:
            return out
        size = path.stat().st_size
        time.sleep(0.5)


def _read_wandb_records(path: Path) -> dict:
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a wandb record log"
    block, header = 32768, 7
    payloads, pending, pos = [], b"", 7
    while pos + header <= len(data):
        room = block - pos % block
        if room < header:  # the rest of a block too small for a header is zero padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        chunk = data[pos + header : pos + header + length]
        pos += header + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            payloads.append(pending)
    out: dict = {"history": {}, "summary": {}, "run_id": None, "complete": False}
    for payload in payloads:
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {"group": record.run.run_group, "job_type": record.run.job_type}
            out["run_id"] = record.run.run_id
        out["complete"] = out["complete"] or kind == "exit"
        if kind in ("history", "summary"):
            items = record.history.item if kind == "history" else record.summary.update
            for item in items:
                key = item.key or "/".join(item.nested_key)
                out[kind][key] = json.loads(item.value_json)
    return out


class LargestTensor(TorchDispatchMode):
    """Records the largest numel of any tensor an op returns (forward and backward): a check that a
    sub-quadratic variant never builds an N x N intermediate."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.op = t.numel(), func
        return out
