"""`make gpu-check` (`python -m attnlab.check.gpu`): what a GPU machine must show, in one command.

Without CUDA it prints one line and exits 0 (`skipped: no CUDA GPU visible ...`). With CUDA, in
about 8 minutes on one H100, three parts, each printed as it finishes:

1. conformance: the contract suite (attnlab.check) on CUDA for every installed variant, every point
   (bf16 and fp16 included): `conformance <variant>: N passed, N failed, N skipped` plus each FAIL;
2. training: a 50-step `trainer=gpu` run (bf16-mixed) of every task, through `python -m attnlab`:
   `train <task>: ok, <primary metric> = <value>, <ms>/step` or `FAILED (exit status <n>): <last line>`;
3. bench: every variant against `multihead` (PyTorch SDPA: flash attention on a bf16 H100) at
   N = 16384, forward+backward, causal: `bench <variant> N=16384: <ms> ms, <x>x SDPA time, <y>x SDPA memory`.

It ends with `gpu-check: PASS` or `gpu-check: FAIL (<parts>)`, exit status 0 or 1; the files of each
part are under --out (default outputs/gpu_check/<time>). docs/measurements.md records the results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

TRAIN_STEPS = 50
BENCH_LENGTH = 16384
BENCH_BASELINE = "multihead"  # F.scaled_dot_product_attention: the flash kernel on CUDA in bf16
# Small held-out splits: the point is that every task trains, validates and tests on the GPU.
TRAIN_SETTINGS = [
    "trainer=gpu",
    f"trainer.max_steps={TRAIN_STEPS}",
    f"trainer.val_check_interval={TRAIN_STEPS // 2}",
    "logger=csv",
    "task.data.limit.validation=64",
    "task.data.limit.test=64",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
]
TRAIN_TIMEOUT_S = 150


def skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU visible (torch.cuda.is_available() is False)"
    return None


def conformance(device: str = "cuda", names: list[str] | None = None) -> tuple[bool, list[str]]:
    from attnlab.attention import available_attentions
    from attnlab.check import FAIL, PASS, SKIP, run_checks

    ok, lines = True, []
    for name in names or available_attentions():
        with torch.device(device):  # inputs, modules and states made there (attnlab/check/inputs.py)
            results = run_checks(name)
        counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP)}
        lines.append(
            f"conformance {name}: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped"
        )
        lines += [f"  FAIL {r.point}: {r.detail}" for r in results if r.status == FAIL]
        ok &= counts[FAIL] == 0
    return ok, lines


def train(out: Path) -> tuple[bool, list[str]]:
    from attnlab.config.overrides import group_options

    ok, lines = True, []
    for task in group_options("task"):
        run_dir = out / "train" / task
        command = [
            sys.executable,
            "-m",
            "attnlab",
            f"task={task}",
            f"hydra.run.dir={run_dir}",
            *TRAIN_SETTINGS,
        ]
        start = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)
            status, last = done.returncode, (done.stderr.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            status, last = "timeout", f"still running after {TRAIN_TIMEOUT_S} s"
        took = time.monotonic() - start
        results = run_dir / "results.json"
        if status == 0 and results.exists():
            record = json.loads(results.read_text())
            metric = record.get("primary_metric")
            value = (record.get("metrics") or {}).get(metric)
            step = (record.get("cost") or {}).get("step_time_s")
            rate = f", {1000 * step:.0f} ms/step" if isinstance(step, int | float) else ""
            lines.append(f"train {task}: ok, {metric} = {value:.4g}{rate} ({took:.0f} s with start-up)")
        else:
            ok = False
            lines.append(f"train {task}: FAILED (exit status {status}): {last}")
    return ok, lines


def bench(
    out: Path,
    *,
    device: str = "cuda",
    dtype: str = "bfloat16",
    length: int = BENCH_LENGTH,
    variants: str = "all",
) -> tuple[bool, list[str]]:
    from attnlab.bench.__main__ import preflight
    from attnlab.bench.sweep import run

    cfg = preflight(
        [
            f"variants={variants}",
            f"baselines=[{BENCH_BASELINE}]",
            f"crossover_baseline={BENCH_BASELINE}",
            f"lengths=[{length}]",
            f"device={device}",
            f"dtype={dtype}",
            "mode=forward+backward",
            "causal=true",
            "repeats=3",
            "time_budget_s=60",
            f"out_dir={out / 'bench'}",
        ],
        hydra_config=False,
    )
    rows = run(cfg)["rows"]
    base = next((r for r in rows if r["variant"] == BENCH_BASELINE and r["status"] == "ok"), None)
    if base is None:
        return False, [f"bench: the baseline {BENCH_BASELINE} did not run at N={length}"]
    lines = []
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"bench {row['variant']} N={row['N']}: {row['status']} ({row.get('note') or ''})")
            continue
        time_ratio = row["time_ms_median"] / base["time_ms_median"]
        memory = row.get("peak_mem_mb")
        memory_ratio = (
            f", {memory / base['peak_mem_mb']:.2f}x SDPA memory" if memory and base.get("peak_mem_mb") else ""
        )
        lines.append(
            f"bench {row['variant']} N={row['N']}: {row['time_ms_median']:.2f} ms, {time_ratio:.2f}x SDPA time{memory_ratio}"
        )
    return True, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnlab.check.gpu", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="where each part writes (default outputs/gpu_check/<time>)"
    )
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason is not None:
        print(f"gpu-check skipped: {reason}; run it where a GPU is visible")
        return 0
    out = args.out or Path("outputs") / "gpu_check" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"gpu-check on {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda}) -> {out}"
    )
    failed = []
    for part, fn in (
        ("conformance", conformance),
        ("training", lambda: train(out)),
        ("bench", lambda: bench(out)),
    ):
        start = time.monotonic()
        try:
            ok, lines = fn()
        except Exception as error:  # a part that crashes is reported, and the others still run
            ok, lines = (
                False,
                [f"{part}: raised {type(error).__name__}: {' '.join(str(error).split())[:300]}"],
            )
        print("\n".join(lines), flush=True)
        print(f"{part}: {'ok' if ok else 'FAILED'} in {time.monotonic() - start:.0f} s\n", flush=True)
        if not ok:
            failed.append(part)
    print(f"gpu-check: {'PASS' if not failed else 'FAIL (' + ', '.join(failed) + ')'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
