"""`python -m attnlab.bench`'s config schema (conf/bench.yaml lists `bench_schema` first): every key,
its default, its type and its per-field check, declared side by side as TrainerConfig's are
(attnlab.config.schemas, attnlab.config.fields).

OmegaConf checks a typed field when the config is composed, and the preflight words a refused value
with the field's declared check (attnlab.config.preflight `_invalid_value`), so `batch=abc` and `batch=0`
get the same one line. Keys whose value is a union (a list or `all`, a bool or a list, a mapping or null)
are Any-typed with a declared check. What relates two keys (params against variants, the baselines,
float16 on a CPU, memory, the device's availability) is checked by attnlab.bench.config `parse`.

The checks keep the bench's own wording (`batch='abc' must be an integer >= 1`), which predates
attnlab.config.fields' `check_number`; the bad-input catalogue holds users to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from attnlab.config.fields import ABSENT, as_list, checked
from attnlab.errors import ConfigError, did_you_mean

MODES = ("forward", "forward+backward", "decode")
TARGETS = ("attention", "block")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")


# ---- the bench's wording of a field's check (its messages predate attnlab.config.fields) ------------
def choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(
            f"{key}={value!r} is not allowed; choose one of {list(allowed)}{did_you_mean(str(value), allowed)}"
        )
    return value


def integer(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")
    return value


def variant_names(value: Any, key: str) -> list[str]:
    """Registered attention names (built-ins and plugins), `all` for every one."""
    from attnlab.attention import available_attentions
    from attnlab.attention.registry import find_attention

    if value == "all" or value == ["all"]:
        return available_attentions()
    names = [str(v) for v in as_list(value)]
    for name in names:
        try:
            find_attention(name)  # the one check of an attention name (attnlab.attention.registry)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None
    return list(dict.fromkeys(names))


def _present(check: Any) -> Any:
    """`check(key, value)` as a field check (value, key) that passes a key the config does not have."""
    return lambda value, key: None if value is ABSENT else check(key, value)


def _at_least(minimum: int, *, null: bool = False) -> Any:
    return _present(lambda key, value: None if null and value is None else integer(key, value, minimum))


def _one_of(allowed: tuple[str, ...]) -> Any:
    return _present(lambda key, value: choice(key, value, allowed))


def _flag(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")


def _seconds(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        # A float field holds time_budget_s=0 as 0.0: shown as the user wrote it.
        shown = int(value) if isinstance(value, float) and value.is_integer() else repr(value)
        raise ConfigError(f"{key}={shown} must be a number of seconds > 0, e.g. {key}=30")


def _variants(key: str, value: Any) -> None:
    if not variant_names(value, key):
        raise ConfigError(f"{key}=[] is empty; list registered variants or use {key}=all")


def _lengths(key: str, value: Any) -> None:
    lengths = as_list(value)
    for n in lengths:
        integer(f"{key}[]", n)
    if not lengths:
        raise ConfigError(f"{key}=[] is empty; give at least one sequence length")


def _modes(key: str, value: Any) -> None:
    for mode in as_list(value):
        choice(key, mode, MODES)


def _causal(key: str, value: Any) -> None:
    if not all(isinstance(flag, bool) for flag in as_list(value)):
        raise ConfigError(f"{key}={value!r} must be true, false or a list of them, e.g. {key}=[false,true]")


def _params(key: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{key}={value!r} must map variants to their hyperparameters, e.g. '{key}={{local: {{window: 256}}}}'"
        )
    for name, hyper in value.items():
        if hyper is not None and not isinstance(hyper, Mapping):
            raise ConfigError(
                f"{key}.{name}={hyper!r} must map hyperparameters to values, e.g. '{key}={{{name}: {{<key>: <value>}}}}'"
            )


def _logger(key: str, value: Any) -> None:
    """The `logger` group's choice: {} is none, {wandb: {...}} is wandb."""
    chosen = dict(value or {})
    if chosen and set(chosen) != {"wandb"}:
        raise ConfigError(
            f"{key}={'+'.join(chosen)} is not supported by the bench; choose {key}=none or {key}=wandb"
        )


@dataclass
class BenchSchema:
    """`python -m attnlab.bench`'s keys. Any-typed keys take a union; their check says which."""

    # The project's logger group (conf/logger): none | wandb. The bench logs results itself (no
    # Lightning); from logger/wandb.yaml it reads `project` and `tags` (offline when no API key).
    logger: Any = checked({}, _present(_logger))
    # list of registered names, or `all` (built-ins and plugins)
    variants: Any = checked(["full", "multihead", "linear"], _present(_variants))
    lengths: Any = checked([256, 512, 1024, 2048, 4096, 8192, 16384], _present(_lengths))  # N, or a list
    batch: int = checked(1, _at_least(1))
    # a variant with fixed_heads (full: 1) gets one head of width heads*head_dim
    heads: int = checked(4, _at_least(1))
    head_dim: int = checked(64, _at_least(1))
    dtype: str = checked("float32", _one_of(DTYPE_NAMES))
    # torch.set_num_threads for the sweep (restored after); null = PyTorch's default
    threads: int | None = checked(None, _at_least(1, null=True))
    # CPU + glibc: freed memory is reused, not re-faulted from the kernel (host/allocator.py). Any, not
    # bool: OmegaConf would read yes/on/1 as true, and the bench asks for true or false.
    keep_freed_memory: Any = checked(True, _present(_flag))
    device: str = checked("auto", _one_of(DEVICES))  # auto: cuda when available
    causal: Any = checked(False, _present(_causal))  # bool, or a list [false, true] to measure both
    mode: Any = checked("forward", _present(_modes))  # one of MODES, or a list of them
    # attention (the kernel alone) | block (pre-norm block: projections + attention + 4x MLP)
    target: str = checked("attention", _one_of(TARGETS))
    repeats: int = checked(5, _at_least(1))  # timed calls per point (the median and IQR are reported)
    warmup: int = checked(1, _at_least(0))  # untimed calls first; the first also counts FLOPs and peak memory
    # per point; once exceeded, larger N are skipped for that variant
    time_budget_s: float = checked(30.0, _present(_seconds))
    # per-variant hyperparameters: params={lowrank: {k: 128}} or +params.local.window=256
    params: Any = checked(None, _present(_params))
    # ratio columns speedup_vs_<b> / mem_ratio_vs_<b>; measured too if not listed
    baselines: Any = checked(
        ["full", "multihead"], _present(lambda key, value: variant_names(value or [], key))
    )
    # crossover = first N from which a variant stays cheaper than this
    crossover_baseline: str = checked("multihead", _present(lambda key, value: variant_names([value], key)))
    # scaling exponents are fitted on N >= this (all N when fewer than 2 remain)
    fit_min_length: int = checked(1024, _at_least(1))
    seed: int = checked(0, _at_least(0))
    out_dir: str | None = None  # null = the Hydra run directory
    # Read by conf/logger/wandb.yaml's interpolations.
    run_name: str = "bench"
    tags: Any = field(default_factory=lambda: ["bench"])
    paths: Any = field(default_factory=lambda: {"run_dir": "${out_dir}"})


def store_bench_schema() -> None:
    ConfigStore.instance().store(name="bench_schema", node=BenchSchema, provider="attnlab")
