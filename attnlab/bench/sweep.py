"""The sweep: every variant at every N under every setting, in one process, then the outputs.

For each setting, lengths grow in the outer loop and variants in the inner one, so the numbers a
ratio compares are measured next to each other. A point that runs out of memory, exceeds the time
budget or fails is recorded with its status, and that variant's larger N are skipped; the sweep
itself goes on. Variants that cannot run a setting are recorded as `unsupported` with the reason.
Before a point is started, two forecasts from the variant's smaller N can skip it and its larger N:
one call past the time budget (`_beyond_budget`), or more memory than is available
(`beyond_memory`): an out-of-memory point on a CPU is not an exception but the kernel killing the
process, the whole sweep with it. bench.csv is rewritten after every point for the same reason.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from attnlab.bench import measure, memory, output, plot, wandb_log
from attnlab.bench.analysis import MEASURED, add_ratios, summarise
from attnlab.bench.config import BenchConfig, Setting, parse
from attnlab.bench.workload import BudgetExceeded, build_workload, unsupported_reason
from attnlab.errors import CapabilityError
from attnlab.host.allocator import keep_freed_memory


def _row(
    cfg: BenchConfig, name: str, n: int, setting: Setting, status: str, note: str = ""
) -> dict[str, Any]:
    return {
        "variant": name, "N": n, "mode": setting.mode, "causal": setting.causal, "dtype": cfg.dtype_name,
        "device": str(cfg.device), "target": cfg.target, "status": status,
        "time_ms_median": None, "time_ms_iqr": None, "time_ms_min": None, "time_ms_max": None, "repeats": 0,
        "peak_mem_mb": None, "memory_method": "", "peak_rss_mb": None, "flops": None,
        "batch": cfg.batch, "heads": cfg.heads, "head_dim": cfg.head_dim, "params": cfg.params[name],
        "impl": "", "note": note,
    }  # fmt: skip


def _free_memory(device: torch.device, *, failed: bool) -> None:
    if failed:  # a traceback's frames can keep large tensors alive in a reference cycle
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_one(cfg: BenchConfig, name: str, n: int, setting: Setting) -> dict[str, Any]:
    """One row: the measurement, or the reason there is none (oom / time_budget / unsupported / error)."""
    row = _row(cfg, name, n, setting, "ok")
    workload = None
    resident = memory.start_resident_peak() if cfg.device.type == "cpu" else None
    try:
        workload = build_workload(cfg, name, n, setting)
        row["impl"] = workload.impl
        m = measure.measure_point(
            workload, repeats=cfg.repeats, warmup=cfg.warmup, device=cfg.device, budget_s=cfg.time_budget_s
        )
    except BudgetExceeded as exc:
        row.update(status="time_budget", note=str(exc))
    except CapabilityError as exc:
        row.update(status="unsupported", note=str(exc))
    except Exception as exc:  # one failing point (OOM, a broken plugin) must not end the sweep
        oom = measure.is_out_of_memory(exc)
        row.update(
            status="oom" if oom else "error", note=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        )
    else:
        row.update(
            status=m.status,
            time_ms_median=m.median_ms,
            time_ms_iqr=m.iqr_ms,
            time_ms_min=min(m.times_ms) if m.times_ms else None,
            time_ms_max=max(m.times_ms) if m.times_ms else None,
            repeats=len(m.times_ms),
            peak_mem_mb=m.peak_mem_mb,
            memory_method=m.memory_method,
            peak_rss_mb=memory.resident_growth_mb(resident),  # inputs, warm-up and timed calls included
            flops=m.flops,
        )
        if m.status == "time_budget":
            row["note"] = f"time budget of {cfg.time_budget_s:g} s used up ({len(m.times_ms)} timed calls)"
    finally:
        del workload
        _free_memory(cfg.device, failed=row["status"] not in ("ok", "time_budget", "unsupported"))
    return row


def sweep(
    cfg: BenchConfig,
    console: Console,
    rows: list[dict[str, Any]] | None = None,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every point; rows are appended to `rows` as they finish (an interrupted sweep keeps them),
    and `on_row(rows)` is called after each."""
    rows = [] if rows is None else rows
    for setting in cfg.settings:
        stopped: dict[str, str] = {}  # variant -> why its larger N are skipped
        measured: dict[str, tuple[int, float]] = {}  # variant -> (N, ms per call) of its last measured point
        needed: dict[str, list[tuple[int, float, float]]] = {}  # variant -> (N, MiB needed, MiB live)
        for n in cfg.lengths:
            for name in cfg.variants:
                reason = unsupported_reason(name, setting)
                beyond = _beyond_budget(cfg, measured.get(name), n)
                if reason is not None:
                    row = _row(cfg, name, n, setting, "unsupported", reason)
                elif name in stopped:
                    row = _row(cfg, name, n, setting, "skipped", stopped[name])
                elif beyond is not None:  # one call cannot finish in the budget: not started, no hang
                    row = _row(cfg, name, n, setting, "time_budget", beyond)
                    stopped[name] = f"skipped after time_budget at N={n}"
                    _progress(console, row)
                elif (too_big := _beyond_memory(cfg, needed.get(name, []), n)) is not None:  # not started
                    row = _row(cfg, name, n, setting, "skipped", too_big)
                    stopped[name] = f"skipped after memory forecast at N={n}"
                    _progress(console, row)
                else:
                    row = measure_one(cfg, name, n, setting)
                    if row["time_ms_median"] is not None:
                        measured[name] = (n, row["time_ms_median"])
                    if row["status"] in MEASURED and (mb := point_memory_mb(row)):
                        needed.setdefault(name, []).append((n, mb, row["peak_mem_mb"] or 0.0))
                    if row["status"] not in ("ok", "unsupported"):
                        stopped[name] = f"skipped after {row['status']} at N={n}"
                    _progress(console, row)
                rows.append(row)
                if on_row is not None:
                    on_row(rows)
    return rows


def _beyond_budget(cfg: BenchConfig, last: tuple[int, float] | None, n: int) -> str | None:
    """Why a point at N = n cannot finish in the time budget, predicted before running it: no
    variant's call costs less than linear in N (it reads every position), so one call at n takes at
    least the last measured call x n / N_last. None when it may fit (or nothing was measured yet)."""
    if last is None:
        return None
    n_last, ms_last = last
    at_least_s = ms_last / 1e3 * n / n_last
    if at_least_s <= cfg.time_budget_s:
        return None
    return (
        f"not run: one call would take >= {at_least_s:.3g} s ({ms_last:.3g} ms at N={n_last}, at least linear "
        f"in N), past time_budget_s={cfg.time_budget_s:g}"
    )


# Of the memory available when a point starts, the share a forecast may fill: other processes move while
# it runs, and the kernel reclaims and kills before MemAvailable reaches zero.
MEMORY_HEADROOM = 0.9


def point_memory_mb(row: dict[str, Any]) -> float:
    """What a measured point needed (MiB): its resident growth where measured (CPU on Linux: it holds what
    the allocator keeps besides the live tensors, and is what the kernel kills for), never less than its
    peak of live tensors (or the CUDA allocator's peak)."""
    return max(row.get("peak_rss_mb") or 0.0, row.get("peak_mem_mb") or 0.0)


# Points smaller than this give no exponent: fixed costs (thread pools, first-use buffers) and page
# granularity dominate them, in either direction.
EXPONENT_MIN_MB = 64.0


def _slope(a: tuple[int, float], b: tuple[int, float]) -> float:
    return math.log(b[1] / a[1]) / math.log(b[0] / a[0])


def forecast_memory_mb(points: Sequence[tuple[int, float, float]], n: int) -> tuple[float, str]:
    """What a point at N = n will need (MiB), from its variant's measured points at smaller N, ascending,
    each (N, MiB needed: point_memory_mb, MiB of live tensors: peak_mem_mb), and how it was forecast.

    The last point is grown by an exponent from the last two, the largest of: 1 (every variant holds
    its O(N) inputs, outputs and gradients); the slope of what they needed (resident memory can grow
    faster than quadratic, when a heap the allocator keeps fragments more with larger blocks); and
    the slope of their live tensors, at most 2 (no variant's tensors outgrow its (N, N) scores): it
    is free of the fixed costs that flatten resident growth between small points. Without two points
    of EXPONENT_MIN_MB the last is grown quadratically, the most any variant's tensors grow. A
    forecast too high skips a point that might have fitted; one too low lets the kernel kill the sweep."""
    n_last, mb_last, live_last = points[-1]
    exponent = 2.0
    if len(points) >= 2 and min(points[-2][1], mb_last) >= EXPONENT_MIN_MB and points[-2][0] < n_last:
        n_prev, mb_prev, live_prev = points[-2]
        exponent = max(1.0, _slope((n_prev, mb_prev), (n_last, mb_last)))
        if live_prev > 0 and live_last > 0:
            exponent = max(exponent, min(_slope((n_prev, live_prev), (n_last, live_last)), 2.0))
    basis = f"{mb_last / 1024:.3g} GiB at N={n_last}, x (N/{n_last})^{exponent:.2f}"
    return mb_last * (n / n_last) ** exponent, basis


def beyond_memory(points: Sequence[tuple[int, float, float]], n: int, available: int | None) -> str | None:
    """Why a point at N = n cannot fit in `available` bytes, forecast from its variant's measured points
    at smaller N (as forecast_memory_mb); None when it may fit, nothing was measured yet or nothing is
    known."""
    if not points or available is None:
        return None
    needed_mb, basis = forecast_memory_mb(points, n)
    if needed_mb * 2**20 <= MEMORY_HEADROOM * available:
        return None
    return (
        f"skipped: needs ~{needed_mb / 1024:.3g} GiB by forecast ({basis}), {available / 2**30:.3g} GiB "
        f"available (at most {MEMORY_HEADROOM:.0%} of it used)"
    )


def _beyond_memory(cfg: BenchConfig, points: Sequence[tuple[int, float, float]], n: int) -> str | None:
    return beyond_memory(points, n, memory.available_bytes(cfg.device)) if points else None


def _progress(console: Console, row: dict[str, Any]) -> None:
    time_ms, mem = row["time_ms_median"], row["peak_mem_mb"]
    numbers = f"{time_ms:10.3f} ms {mem:10.2f} MB" if time_ms is not None and mem is not None else ""
    causal = " causal" if row["causal"] else ""
    forecast = row["note"] if row["status"] == "skipped" else ""  # a forecast's reason; later N say "after"
    console.print(
        f"  {row['variant']:>12} N={row['N']:<6} {row['mode']}{causal}: {row['status']:<11} {numbers}{forecast}"
    )


def _default_out_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return Path("outputs") / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _plain(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {k: v for k, v in data.items() if k != "hydra"}


def run(
    cfg: Mapping[str, Any] | DictConfig,
    out_dir: str | os.PathLike | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the whole bench from a composed config; returns {rows, summary, paths}."""
    console = console or Console(width=None if Console().is_terminal else 160)
    settings = parse(cfg)
    target = out_dir or cfg.get("out_dir") or _default_out_dir()
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    modes = ", ".join(s.mode + (" causal" if s.causal else "") for s in settings.settings)
    console.print(
        f"[bold]attnlab.bench[/]: {', '.join(settings.variants)} | N={list(settings.lengths)} | {modes} | "
        f"{settings.dtype_name} on {settings.device} | target={settings.target} | -> {out}"
    )
    busy = output.busy_warning()
    if busy:
        console.print(f"[yellow]{busy}[/]")
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    rows: list[dict[str, Any]] = []
    environment: dict[str, Any] = {}
    cols = output.columns(settings.baselines)

    def save(rows: list[dict[str, Any]]) -> None:  # a sweep the kernel kills keeps the points before
        output.write_csv(out / "bench.csv", rows, cols)

    try:
        with keep_freed_memory(settings.keep_freed_memory) as allocation:
            environment = output.environment(allocation)  # as measured: the sweep's threads, allocator
            console.print(f"host memory: {allocation}")
            sweep(settings, console, rows, on_row=save)
    except KeyboardInterrupt:  # Ctrl-C: what was measured is written, then the interrupt goes on
        if rows:
            environment["interrupted"] = f"Ctrl-C after {len(rows)} point(s)"
            _write(settings, cfg, rows, environment, out, console)
            console.print("[yellow]interrupted: the points measured so far are in the files above[/]")
        raise
    finally:
        torch.set_num_threads(previous_threads)
    summaries, paths, cols = _write(settings, cfg, rows, environment, out, console)
    if settings.logger == "wandb":
        _log_wandb(settings, rows, summaries, cols, paths, _plain(cfg), out)
    return {"rows": rows, "summary": summaries, "paths": paths, "out_dir": out}


def _write(
    settings: BenchConfig,
    cfg,
    rows: list[dict[str, Any]],
    environment: dict[str, Any],
    out: Path,
    console: Console,
):
    """Ratios, summaries, bench.csv/json/png and the printed report of the measured rows."""
    add_ratios(rows, settings.baselines)
    summaries = summarise(
        rows, crossover_baseline=settings.crossover_baseline, fit_min_length=settings.fit_min_length
    )
    cols = output.columns(settings.baselines)
    paths = {"csv": out / "bench.csv", "json": out / "bench.json", "png": out / "bench.png"}
    output.write_csv(paths["csv"], rows, cols)
    output.write_json(paths["json"], rows, summaries, _plain(cfg), environment)
    plot.plot(
        rows,
        paths["png"],
        title=f"{settings.target}, {settings.dtype_name}, {settings.device}, B={settings.batch}",
    )
    output.print_report(console, rows, summaries, settings.baselines)
    console.print(f"wrote {paths['csv']}, {paths['json'].name}, {paths['png'].name}")
    return summaries, paths, cols


def _log_wandb(settings: BenchConfig, rows, summaries, cols, paths, config, out: Path) -> None:
    run = wandb_log.init(
        project=settings.wandb["project"],
        job_type="bench",
        directory=out,
        config=config,
        tags=settings.wandb["tags"],
    )
    summary_cols = list(summaries[0].as_dict()) if summaries else []
    run.log(
        {
            "bench/results": wandb_log.table(rows, cols),
            "bench/summary": wandb_log.table([s.as_dict() for s in summaries], summary_cols),
            "bench/plot": wandb_log.image(paths["png"]),
        }
    )
    for s in summaries:
        prefix = f"{s.variant}/{s.mode}{'/causal' if s.causal else ''}"
        run.summary[f"{prefix}/time_exponent"] = s.time_exponent
        run.summary[f"{prefix}/memory_exponent"] = s.memory_exponent
        run.summary[f"{prefix}/crossover_time"] = s.crossover_time
    run.finish()
