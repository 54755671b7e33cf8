"""The bench's config (conf/bench.yaml) checked and turned into plain Python values, once, up front.

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
from attnlab.attention.registry import find_attention, validate_hyperparameters
from attnlab.errors import ConfigError, did_you_mean

MODES = ("forward", "forward+backward", "decode")
TARGETS = ("attention", "block")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


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


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes, Mapping)):
        return list(value)
    return [value]


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(
            f"{key}={value!r} is not allowed; choose one of {list(allowed)}{did_you_mean(value, allowed)}"
        )
    return value


def _positive_int(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")
    return value


def _threads(value: Any) -> int:
    from attnlab.host.threads import check_threads

    check_threads(_positive_int("threads", value))
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    return value


def _variant_names(value: Any, key: str = "variants") -> list[str]:
    known = available_attentions()
    if value == "all" or value == ["all"]:
        return list(known)
    names = [str(v) for v in _as_list(value)]
    if not names:
        raise ConfigError(f"{key}=[] is empty; list registered variants or use {key}=all")
    for name in names:
        try:
            find_attention(name)  # the one check of an attention name (attnlab.attention.registry)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None
    return list(dict.fromkeys(names))


def _device(value: str) -> torch.device:
    _choice("device", value, DEVICES)
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


def _causal_flags(value: Any) -> list[bool]:
    flags = _as_list(value)
    for flag in flags:
        if not isinstance(flag, bool):
            raise ConfigError(
                f"causal={value!r} must be true, false or a list of them, e.g. causal=[false,true]"
            )
    return list(dict.fromkeys(flags))


def _logger(node: Any) -> tuple[str, dict[str, Any]]:
    """The choice made in the `logger` group: {} is none, {wandb: {...}} is wandb."""
    node = dict(node or {})
    if not node:
        return "none", {}
    if set(node) == {"wandb"}:
        wandb = node["wandb"]
        return "wandb", {
            "project": str(wandb.get("project") or "attnlab"),
            "tags": [str(t) for t in _as_list(wandb.get("tags") or [])],
        }
    raise ConfigError(
        f"logger={'+'.join(node)} is not supported by the bench; choose logger=none or logger=wandb"
    )


def parse(cfg: Mapping[str, Any]) -> BenchConfig:
    """Check a composed bench config (a DictConfig or plain mapping) and resolve every choice."""
    variants = _variant_names(cfg["variants"])
    baselines = [str(b) for b in _as_list(cfg.get("baselines", []) or [])]
    for name in baselines:
        _variant_names([name], "baselines")
    ordered = list(dict.fromkeys([*baselines, *variants]))  # baselines first: ratios need them

    lengths = sorted({_positive_int("lengths[]", n) for n in _as_list(cfg["lengths"])})
    if not lengths:
        raise ConfigError("lengths=[] is empty; give at least one sequence length")
    modes = [_choice("mode", m, MODES) for m in _as_list(cfg["mode"])]
    flags = _causal_flags(cfg["causal"])
    if not modes or not flags:
        raise ConfigError("mode=[] or causal=[] leaves nothing to measure; e.g. mode=forward causal=false")
    # Generation is causal by nature: decode is measured once, as causal, whatever `causal` says.
    settings = tuple(dict.fromkeys(Setting(m, m == "decode" or c) for m in modes for c in flags))

    params_cfg = cfg.get("params") or {}
    if not isinstance(params_cfg, Mapping):
        raise ConfigError(
            f"params={params_cfg!r} must map variants to their hyperparameters, e.g. 'params={{local: {{window: 256}}}}'"
        )
    params_cfg = dict(params_cfg)
    for name, value in params_cfg.items():
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(
                f"params.{name}={value!r} must map hyperparameters to values, e.g. 'params={{{name}: {{<key>: <value>}}}}'"
            )
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

    crossover = str(cfg.get("crossover_baseline", "multihead"))
    _variant_names([crossover], "crossover_baseline")
    if crossover not in ordered:
        ordered.insert(0, crossover)
        params[crossover] = validate_hyperparameters(crossover, {})
    dtype_name = _choice("dtype", cfg["dtype"], tuple(DTYPES))
    device = _device(str(cfg["device"]))
    if dtype_name == "float16" and device.type == "cpu":
        raise ConfigError(
            "dtype=float16 on CPU: half precision is emulated there, so its timings say nothing about the "
            "variants; use dtype=bfloat16 or dtype=float32 on CPU, or device=cuda"
        )
    repeats = _positive_int("repeats", cfg["repeats"])
    budget = cfg["time_budget_s"]
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget < float("inf"):
        raise ConfigError(f"time_budget_s={budget!r} must be a number of seconds > 0, e.g. time_budget_s=30")
    budget = float(budget)
    logger, wandb_cfg = _logger(cfg.get("logger"))
    batch, heads, head_dim = (_positive_int(k, cfg[k]) for k in ("batch", "heads", "head_dim"))
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
        threads=None if cfg.get("threads") is None else _threads(cfg["threads"]),
        keep_freed_memory=_flag("keep_freed_memory", cfg.get("keep_freed_memory", True)),
        target=_choice("target", cfg["target"], TARGETS),
        repeats=repeats,
        warmup=_positive_int("warmup", cfg["warmup"], minimum=0),
        time_budget_s=budget,
        params=params,
        baselines=tuple(baselines),
        crossover_baseline=crossover,
        fit_min_length=_positive_int("fit_min_length", cfg.get("fit_min_length", 1024)),
        seed=_positive_int("seed", cfg.get("seed", 0), minimum=0),
        logger=logger,
        wandb=wandb_cfg,
    )
