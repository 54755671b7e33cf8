"""The bench's config (conf/bench.yaml) checked and turned into plain Python values, once, up front.

Each key's own check is declared beside it in BenchSchema (attnlab.config.bench_schema); `parse` runs those
and adds what relates two keys: params against the measured variants, the baselines and the crossover
baseline added to them, float16 on a CPU, the device's availability and its memory.
Every mistake is a ConfigError naming the key, what is allowed and the closest valid choice, before
anything is measured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from attnlab.attention import available_attentions
from attnlab.attention.registry import validate_hyperparameters
from attnlab.config.bench_schema import (
    DTYPE_NAMES,
    BenchSchema,
    store_bench_schema,
    variant_names,
)
from attnlab.config.fields import as_list, checked_values
from attnlab.errors import ConfigError, did_you_mean

# Stored on import as well as by store_configs: tests and scripts compose conf/bench.yaml after importing
# the bench, without the app's store_configs.
store_bench_schema()

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16), strict=True))


@dataclass(frozen=True)
class Setting:
    """What one curve is measured under; the rows of one setting are compared with each other."""

    mode: str
    causal: bool


@dataclass(frozen=True)
class BenchConfig:
    variants: tuple[str, ...]  # in measurement order; baselines included
    lengths: tuple[int, ...]  # ascending
    settings: tuple[Setting, ...]
    batch: int
    heads: int
    head_dim: int
    dtype: torch.dtype
    dtype_name: str
    device: torch.device
    threads: int | None
    keep_freed_memory: bool  # CPU: glibc keeps freed memory for reuse during the sweep (host/allocator.py)
    target: str
    repeats: int
    warmup: int
    time_budget_s: float
    params: dict[str, dict[str, Any]]  # validated, defaults filled, for every variant
    baselines: tuple[str, ...]
    crossover_baseline: str
    fit_min_length: int
    seed: int
    logger: str  # "none" | "wandb"
    wandb: dict[str, Any] = field(default_factory=dict)  # project, tags


def _threads(value: int) -> int:
    from attnlab.host.threads import check_threads

    check_threads(value)  # against the cores this process may use
    return value


def _device(value: str) -> torch.device:
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(value)


def device_memory_bytes(device: torch.device) -> int | None:
    """Memory `device` can give a new allocation now (MemAvailable for the CPU, free memory on a GPU),
    or None when unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(n: int, bytes_per_position: int, device: torch.device, *, backward: bool) -> None:
    """A length whose inputs and output alone exceed the memory available can only fail, swap for hours
    or be killed by the kernel, taking the whole sweep with it."""
    available = device_memory_bytes(device)
    tensors = 8 if backward else 4  # q, k, v, output (B, H, N, D); their gradients too with backward
    needed = tensors * n * bytes_per_position
    if available is not None and needed > available:
        fits = available // (tensors * bytes_per_position)
        raise ConfigError(
            f"lengths: N={n} needs {needed / 2**30:.1f} GiB for q, k, v and the output alone but this {device.type} "
            f"has {available / 2**30:.1f} GiB available; keep lengths below {fits} (or lower batch/heads/head_dim)"
        )


def _check_working_memory(
    name: str, params: dict[str, Any], n: int, device: torch.device, *, batch: int, heads: int, head_dim: int
) -> None:
    """A variant whose own intermediates (Attention.working_memory: based's Taylor features, performer's
    random features) exceed the memory at the sweep's shortest length cannot run any point."""
    from attnlab.attention import get_attention_class

    floats = get_attention_class(name).working_memory(
        params, batch=batch, heads=heads, length=n, head_dim=head_dim
    )
    available = device_memory_bytes(device)
    needed = 4 * floats  # kernels accumulate in fp32
    if available is not None and needed > available:
        sizes = " ".join(f"params.{name}.{k}={v}" for k, v in params.items() if isinstance(v, int) and v > 1)
        raise ConfigError(
            f"variants: '{name}' ({sizes or 'its defaults'}) needs {needed / 2**30:.1f} GiB of working memory "
            f"already at N={n} but this {device.type} has {available / 2**30:.1f} GiB available; lower its sizes"
        )


def _logger(node: Any) -> tuple[str, dict[str, Any]]:
    """The choice made in the `logger` group (checked by BenchSchema): {} is none, {wandb: {...}} is wandb."""
    node = dict(node or {})
    if not node:
        return "none", {}
    wandb = node["wandb"]
    return "wandb", {
        "project": str(wandb.get("project") or "attnlab"),
        "tags": [str(t) for t in as_list(wandb.get("tags") or [])],
    }


def parse(cfg: Mapping[str, Any]) -> BenchConfig:
    """Check a composed bench config (a DictConfig or plain mapping) and resolve every choice: each key
    by its declared check (BenchSchema), then what relates two keys."""
    values = checked_values(BenchSchema, cfg)
    variants = variant_names(values["variants"], "variants")
    baselines = variant_names(values["baselines"] or [], "baselines")
    ordered = list(dict.fromkeys([*baselines, *variants]))  # baselines first: ratios need them

    lengths = sorted(set(as_list(values["lengths"])))
    modes = as_list(values["mode"])
    flags = list(dict.fromkeys(as_list(values["causal"])))
    if not modes or not flags:
        raise ConfigError("mode=[] or causal=[] leaves nothing to measure; e.g. mode=forward causal=false")
    # Generation is causal by nature: decode is measured once, as causal, whatever `causal` says.
    settings = tuple(dict.fromkeys(Setting(m, m == "decode" or c) for m in modes for c in flags))

    params_cfg = dict(values["params"] or {})
    for name in params_cfg:
        if name not in ordered:
            known = available_attentions()
            where = (
                "is not among variants"
                if name in known
                else f"is not a registered attention{did_you_mean(name, known)}"
            )
            raise ConfigError(f"params.{name}: '{name}' {where}; measured variants: {', '.join(ordered)}")
    params = {
        name: validate_hyperparameters(name, dict(params_cfg.get(name) or {}), prefix=f"params.{name}.")
        for name in ordered
    }

    crossover = str(values["crossover_baseline"])
    if crossover not in ordered:
        ordered.insert(0, crossover)
        params[crossover] = validate_hyperparameters(crossover, {})
    dtype_name = values["dtype"]
    device = _device(str(values["device"]))
    if dtype_name == "float16" and device.type == "cpu":
        raise ConfigError(
            "dtype=float16 on CPU: half precision is emulated there, so its timings say nothing about the "
            "variants; use dtype=bfloat16 or dtype=float32 on CPU, or device=cuda"
        )
    logger, wandb_cfg = _logger(values["logger"])
    batch, heads, head_dim = values["batch"], values["heads"], values["head_dim"]
    per_position = batch * heads * head_dim * DTYPES[dtype_name].itemsize
    _check_memory(lengths[-1], per_position, device, backward="forward+backward" in modes)
    for name in ordered:
        _check_working_memory(
            name, params[name], min(lengths), device, batch=batch, heads=heads, head_dim=head_dim
        )
    return BenchConfig(
        variants=tuple(ordered),
        lengths=tuple(lengths),
        settings=settings,
        batch=batch,
        heads=heads,
        head_dim=head_dim,
        dtype=DTYPES[dtype_name],
        dtype_name=dtype_name,
        device=device,
        threads=None if values["threads"] is None else _threads(values["threads"]),
        keep_freed_memory=values["keep_freed_memory"],
        target=values["target"],
        repeats=values["repeats"],
        warmup=values["warmup"],
        time_budget_s=float(values["time_budget_s"]),
        params=params,
        baselines=tuple(baselines),
        crossover_baseline=crossover,
        fit_min_length=values["fit_min_length"],
        seed=values["seed"],
        logger=logger,
        wandb=wandb_cfg,
    )
