"""The cost bench: outputs of a tiny sweep, failure rows (OOM, unsupported), exponents, crossovers."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from rich.console import Console

from attnlab.attention import available_attentions, get_attention_class
from attnlab.bench import crossover, fit_exponent, measure, run
from attnlab.bench.analysis import add_ratios
from attnlab.bench.config import parse
from attnlab.bench.memory import LiveTensorPeak
from attnlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# One thread: tiny ops are dominated by thread hand-offs, which a busy machine makes very slow.
TINY = ["lengths=[16,32,64]", "repeats=2", "warmup=1", "logger=none", "time_budget_s=60", "threads=1"]
EXPECTED_COLUMNS = {
    "variant", "N", "mode", "causal", "dtype", "device", "target", "status", "time_ms_median", "time_ms_iqr",
    "peak_mem_mb", "memory_method", "flops", "speedup_vs_full", "mem_ratio_vs_full", "speedup_vs_multihead",
    "mem_ratio_vs_multihead",
}  # fmt: skip


def bench_config(*overrides: str):
    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        return compose(config_name="bench", overrides=[*TINY, "device=cpu", *overrides])


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=200)  # noqa: SIM115


def by_key(rows):
    return {(r["variant"], r["N"], r["mode"], r["causal"]): r for r in rows}


def test_tiny_sweep_writes_csv_json_png(tmp_path):
    cfg = bench_config("variants=[full,multihead,linear]", "mode=[forward,forward+backward]")
    result = run(cfg, out_dir=tmp_path, console=quiet())

    with (tmp_path / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) >= EXPECTED_COLUMNS
    assert len(rows) == 3 * 3 * 2  # variants x lengths x modes
    assert {r["status"] for r in rows} == {"ok"}
    assert all(float(r["time_ms_median"]) > 0 and float(r["peak_mem_mb"]) > 0 for r in rows)
    assert {r["memory_method"] for r in rows} == {"cpu_live_tensor_peak"}
    assert all(int(r["flops"]) > 0 for r in rows)  # the CPU SDPA kernel is counted too
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["rows"]) == len(rows) and data["summary"]
    assert data["environment"]["threads"] == 1  # the sweep's own conditions, not those restored after it
    if platform.libc_ver()[0] == "glibc":
        assert data["environment"]["cpu_allocation"].startswith("glibc, freed memory kept")
    assert (tmp_path / "bench.png").stat().st_size > 10_000

    rows = by_key(result["rows"])
    assert rows[("multihead", 64, "forward", False)]["speedup_vs_multihead"] == pytest.approx(1.0)
    full = rows[("full", 64, "forward+backward", False)]
    assert full["mem_ratio_vs_full"] == pytest.approx(1.0)
    # forward runs without autograd, so it needs less memory than forward+backward
    assert rows[("full", 64, "forward", False)]["peak_mem_mb"] < full["peak_mem_mb"]
    # `full` is one head of width heads*head_dim: its score matrix is (1, 1, N, N)
    assert rows[("full", 64, "forward", False)]["flops"] == 2 * 2 * 64 * 64 * 4 * 64


def test_causal_decode_and_block_targets(tmp_path):
    cfg = bench_config(
        "variants=[full,linear]",
        "lengths=[16,32]",
        "mode=[forward,decode]",
        "causal=[false,true]",
        "target=block",
        "keep_freed_memory=false",
    )
    rows = by_key(run(cfg, out_dir=tmp_path, console=quiet())["rows"])
    environment = json.loads((tmp_path / "bench.json").read_text())["environment"]
    assert environment["cpu_allocation"] == "system default (keep_freed_memory=false)"
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert {r["impl"] for r in rows.values()} == {"attnlab.nn"}
    # decoding is causal by nature: one decode setting, whatever `causal` says
    assert ("linear", 32, "decode", True) in rows and ("linear", 32, "decode", False) not in rows


def test_out_of_memory_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = measure.time_calls

    def flaky(workload, *args, **kwargs):
        if workload.variant == "linear" and workload.n == 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(workload, *args, **kwargs)

    monkeypatch.setattr(measure, "time_calls", flaky)
    rows = by_key(run(bench_config("variants=[multihead,linear]"), out_dir=tmp_path, console=quiet())["rows"])
    assert rows[("linear", 16, "forward", False)]["status"] == "ok"
    assert rows[("linear", 32, "forward", False)]["status"] == "oom"
    assert "OutOfMemoryError" in rows[("linear", 32, "forward", False)]["note"]
    assert rows[("linear", 64, "forward", False)]["status"] == "skipped"  # larger N not attempted
    assert rows[("multihead", 64, "forward", False)]["status"] == "ok"
    assert (tmp_path / "bench.csv").exists() and (tmp_path / "bench.png").exists()


def test_unsupported_causal_variant_is_a_row_not_a_crash(tmp_path, monkeypatch):
    linear = get_attention_class("linear")
    monkeypatch.setattr(linear, "capabilities", dataclasses.replace(linear.capabilities, causal=False))
    result = run(
        bench_config("variants=[multihead,linear]", "causal=[false,true]"), out_dir=tmp_path, console=quiet()
    )
    rows = by_key(result["rows"])
    causal = rows[("linear", 32, "forward", True)]
    assert causal["status"] == "unsupported"
    assert "does not support causal" in causal["note"] and "multihead" in causal["note"]
    assert rows[("linear", 32, "forward", False)]["status"] == "ok"
    summary = {(s.variant, s.causal): s for s in result["summary"]}
    assert summary[("linear", True)].crossover_note == "unsupported"


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="did you mean 'linear'"):
        parse(bench_config("variants=[linaer]"))
    with pytest.raises(ConfigError, match="has no parameter 'nope'"):
        parse(bench_config("variants=[linear]", "params={linear: {nope: 1}}"))
    with pytest.raises(ConfigError, match="mode="):
        parse(bench_config("mode=backward"))
    with pytest.raises(ConfigError, match="keep_freed_memory='yes' must be true or false"):
        parse(bench_config("keep_freed_memory=yes"))
    everything = parse(bench_config("variants=all"))
    assert set(everything.variants) == set(available_attentions())  # plugins included
    full = parse(bench_config("variants=[full]", "params={full: {dropout: 0.1}}"))
    assert full.params["full"] == {"dropout": 0.1}
    assert full.variants[:2] == ("full", "multihead")  # baselines are always measured


def test_fit_exponent_recovers_the_power():
    ns = [256, 512, 1024, 2048, 4096, 8192, 16384]
    slope, used = fit_exponent(ns, [3.0 * n**2 for n in ns])
    assert slope == pytest.approx(2.0) and used == 5  # only N >= 1024
    noisy_small = [1.0, 1.0] + [0.5 * n for n in ns[2:]]  # overhead-dominated small N are ignored
    assert fit_exponent(ns, noisy_small)[0] == pytest.approx(1.0)
    assert fit_exponent([16, 32, 64], [1.0, 4.0, 16.0])[0] == pytest.approx(2.0)  # none >= 1024: all used
    assert fit_exponent([1024], [1.0]) == (None, 1)
    assert fit_exponent([1024, 2048, 4096], [1.0, None, 4.0])[0] == pytest.approx(1.0)


def test_crossover_is_the_first_length_from_which_it_stays_cheaper():
    lengths = [1024, 2048, 4096, 8192]
    base = {1024: 1.0, 2048: 4.0, 4096: 16.0, 8192: 64.0}
    assert crossover(lengths, {1024: 5.0, 2048: 5.0, 4096: 10.0, 8192: 20.0}, base) == 4096
    assert crossover(lengths, {1024: 0.5, 2048: 5.0, 4096: 10.0, 8192: 20.0}, base) == 4096  # not "stays"
    assert crossover(lengths, {1024: 0.5, 2048: 1.0, 4096: 2.0, 8192: 4.0}, base) == 1024
    assert crossover(lengths, {1024: 5.0, 2048: 5.0, 4096: 10.0, 8192: 100.0}, base) is None
    # the baseline ran out of memory at 8192: a variant that was measured there is cheaper
    assert crossover(lengths, {1024: 5.0, 2048: 5.0, 4096: 20.0, 8192: 30.0}, {**base, 8192: None}) == 8192
    assert crossover(lengths, {1024: 0.5, 2048: 1.0, 4096: 2.0, 8192: None}, base) is None


def test_ratios_on_hand_made_rows():
    def row(variant, n, t, m):
        return {"variant": variant, "N": n, "mode": "forward", "causal": False, "status": "ok",
                "time_ms_median": t, "peak_mem_mb": m}  # fmt: skip

    rows = [row("multihead", 1024, 10.0, 8.0), row("linear", 1024, 2.0, 2.0), row("linear", 2048, 4.0, 4.0)]
    add_ratios(rows, ["multihead"])
    assert rows[1]["speedup_vs_multihead"] == pytest.approx(5.0)
    assert rows[1]["mem_ratio_vs_multihead"] == pytest.approx(0.25)
    assert rows[2]["speedup_vs_multihead"] is None  # no baseline measured at 2048


def test_paired_times_alternate_which_goes_first_and_pair_the_ratios(monkeypatch):
    clock, calls = [0.0], []

    def takes(name: str, seconds: float):
        def call() -> None:
            calls.append(name)
            clock[0] += seconds

        return call

    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    first_ms, second_ms, ratios = measure.paired_times(takes("a", 0.002), takes("b", 0.008), pairs=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert (first_ms, second_ms) == pytest.approx((2.0, 8.0))
    assert ratios == pytest.approx([0.25] * 3)


def test_live_tensor_peak_counts_new_storages_once():
    x = torch.randn(256, 256)  # 256 KiB, existed before: not counted
    with LiveTensorPeak() as tracker:
        y = x @ x  # +256 KiB
        y.view(-1).add_(1.0)  # a view and an in-place op: nothing new
        z = y * 2  # +256 KiB
        del z  # freed
        w = y + 1  # +256 KiB again (peak stays at 512 KiB)
    assert tracker.peak_bytes == 2 * 256 * 256 * 4
    assert tracker.live_bytes == 2 * 256 * 256 * 4  # y and w still alive
    del w


def test_hydra_entry_point_reports_a_bad_config_in_one_line(tmp_path):
    """`python -m attnlab.bench` composes conf/bench.yaml from the installed `attnlab.conf` package."""
    cmd = [
        sys.executable,
        "-m",
        "attnlab.bench",
        "variants=[multihead,linaer]",
        *TINY,
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert message.startswith(
        "error: variants: unknown attention 'linaer' (did you mean 'linear'?); available: full,"
    )
    assert "\n" not in message  # one line, no traceback


def test_block_step_equals_the_causal_forward():
    """The one pre-norm block (attnlab.nn.TransformerBlock) the bench measures: decoding token by
    token with `step` reproduces its causal forward pass."""
    from attnlab.nn import AttentionSpec, TransformerBlock

    torch.manual_seed(0)
    block = TransformerBlock(32, 4, AttentionSpec("full"), max_len=8).eval()  # full: one head of width 32
    x = torch.randn(2, 8, 32)
    causal = block(x, causal=True)
    assert causal.shape == (2, 8, 32)
    state = block.self_attention.init_state(2, device=x.device, dtype=x.dtype)
    steps = []
    with torch.no_grad():
        for t in range(8):  # decoding token by token reproduces the causal forward pass
            out, state = block.step(x[:, t : t + 1], state)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), causal.detach(), atol=1e-5, rtol=1e-4)


def test_the_plot_marks_points_without_a_measurement(tmp_path):
    import matplotlib.pyplot as plt

    from attnlab.bench import plot as bench_plot

    rows = [
        {"variant": v, "N": n, "mode": "forward", "causal": False, "status": status,
         "time_ms_median": 1.0 * n if status == "ok" else None, "peak_mem_mb": 2.0 * n if status == "ok" else None}
        for v, n, status in [("full", 256, "ok"), ("full", 512, "oom"), ("full", 1024, "skipped"),
                             ("linear", 256, "ok"), ("linear", 512, "ok"), ("linear", 1024, "ok"),
                             ("performer", 256, "unsupported"), ("performer", 512, "unsupported")]
    ]  # fmt: skip
    figures = []
    original_close = plt.close
    bench_plot.plt.close = figures.append  # keep the figure to look at it
    try:
        bench_plot.plot(rows, tmp_path / "bench.png")
    finally:
        bench_plot.plt.close = original_close
    (fig,) = figures
    for ax in fig.axes:
        labels = set(ax.get_legend_handles_labels()[1])
        assert {"full: oom", "full: skipped", "performer: unsupported"} <= labels, labels
        assert "linear: ok" not in labels
    original_close(fig)


def test_an_interrupted_sweep_writes_the_points_it_measured(tmp_path, monkeypatch):
    real = measure.time_calls

    def ctrl_c_at_64(workload, *args, **kwargs):
        if workload.n == 64:
            raise KeyboardInterrupt
        return real(workload, *args, **kwargs)

    monkeypatch.setattr(measure, "time_calls", ctrl_c_at_64)
    with pytest.raises(KeyboardInterrupt):
        run(bench_config("variants=[multihead,linear]"), out_dir=tmp_path, console=quiet())
    with (tmp_path / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    variants = {r["variant"] for r in rows}  # with the baseline the bench adds (full)
    assert {"multihead", "linear"} <= variants
    assert sorted((r["variant"], int(r["N"])) for r in rows) == sorted(
        (v, n) for v in variants for n in (16, 32)
    )
    assert {r["status"] for r in rows} == {"ok"}
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["environment"]["interrupted"] == f"Ctrl-C after {len(rows)} point(s)"


def test_the_paired_comparison_against_linear_runs_with_the_hyperparameters_given():
    """benchmarks/vs_linear.py (the linear-time family's 2x-of-linear figures): a tiny run."""
    script = ROOT / "benchmarks" / "vs_linear.py"
    args = ["--length", "64", "--pairs", "2", "--threads", "1", "--variants", "deltanet", "gla"]
    out = subprocess.run(
        [sys.executable, str(script), *args, "--param", "deltanet.chunk_size=16"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    assert "'chunk_size': 16" in out.split("deltanet:", 1)[1].splitlines()[0]
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("deltanet ", "gla "))
    }
    assert set(rows) == {"deltanet", "gla"}
    assert all(float(row[3]) > 0 for row in rows.values())  # the median ratio variant / linear


def test_vs_linear_can_pair_the_window_kernel_with_its_sdpa_path():
    """benchmarks/vs_linear.py --against sdpa-window: the baseline is the same workload with `local`'s
    C kernel capped off (its SDPA path), the cap restored after each call; and a tiny run prints it."""
    import importlib.util

    from attnlab.attention.cpu import functions as local

    spec = importlib.util.spec_from_file_location("vs_linear", ROOT / "benchmarks" / "vs_linear.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = []
    module.through_sdpa(lambda: seen.append(local.WINDOW_SCRATCH_FLOATS))()
    assert seen == [0] and local.WINDOW_SCRATCH_FLOATS > 0
    args = [
        "--length",
        "64",
        "--pairs",
        "2",
        "--threads",
        "1",
        "--variants",
        "local",
        "--against",
        "sdpa-window",
    ]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "vs_linear.py"), *args],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    header, row = (line.split() for line in out.splitlines()[-2:])
    assert header[1] == "sdpa" and row[0] == "local" and float(row[3]) > 0
