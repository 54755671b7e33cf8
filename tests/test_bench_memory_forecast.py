"""The bench's memory forecast: a point whose memory, grown from its variant's smaller N, exceeds what is
available is not started (status `skipped`, the forecast in its note), nor are its larger N; and the
per-point resident memory it is forecast from."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from rich.console import Console

from attnlab.bench import config, memory, run, sweep
from attnlab.bench.sweep import EXPONENT_MIN_MB, MEMORY_HEADROOM, beyond_memory, forecast_memory_mb
from attnlab.host import resident

GiB = 2**30
TINY = ["lengths=[16,32,64,128]", "repeats=1", "warmup=1", "logger=none", "time_budget_s=60", "threads=1"]


def test_two_points_give_the_exponent():
    # (N, MiB needed, MiB of live tensors); the last two points only
    needed, basis = forecast_memory_mb(
        [(1024, 100.0, 50.0), (2048, 300.0, 90.0), (4096, 1000.0, 200.0)], 8192
    )
    exponent = 1.7369655941662063  # log2(1000 / 300), steeper than the live tensors' log2(200 / 90)
    assert needed == pytest.approx(1000.0 * 2**exponent)
    assert basis == "0.977 GiB at N=4096, x (N/4096)^1.74"


def test_the_exponent_is_at_least_linear():
    flat, basis = forecast_memory_mb([(1024, 100.0, 1.0), (2048, 101.0, 1.5)], 8192)  # a fixed overhead
    assert flat == pytest.approx(101.0 * 4) and basis.endswith("^1.00")


def test_live_tensors_steepen_a_slope_that_fixed_costs_flatten():
    # resident 300 -> 600 MiB (slope 1) over a fixed cost, live tensors 100 -> 400 MiB (slope 2)
    needed, basis = forecast_memory_mb([(2048, 300.0, 100.0), (4096, 600.0, 400.0)], 8192)
    assert needed == pytest.approx(600.0 * 4) and basis.endswith("^2.00")
    capped, _ = forecast_memory_mb([(2048, 300.0, 10.0), (4096, 600.0, 400.0)], 8192)  # live slope 5.3
    assert capped == pytest.approx(600.0 * 4)  # tensors grow at most quadratically


def test_resident_memory_may_grow_faster_than_quadratic():
    steep, basis = forecast_memory_mb([(4096, 1024.0, 600.0), (8192, 5120.0, 2400.0)], 16384)  # fragmenting
    assert steep == pytest.approx(5120.0 * 5) and basis.endswith("^2.32")


def test_small_points_give_no_exponent():
    noisy, basis = forecast_memory_mb([(16, 0.01, 0.01), (32, 5.0, 5.0)], 128)  # under EXPONENT_MIN_MB
    assert noisy == pytest.approx(5.0 * 16) and basis.endswith("^2.00")
    assert EXPONENT_MIN_MB == 64.0


def test_one_point_is_grown_quadratically():
    needed, basis = forecast_memory_mb([(2048, 512.0, 100.0)], 8192)
    assert needed == pytest.approx(512.0 * 16) and basis == "0.5 GiB at N=2048, x (N/2048)^2.00"


def test_beyond_memory_skips_only_what_cannot_fit():
    points = [(4096, 1024.0, 1024.0), (8192, 4096.0, 4096.0)]  # quadratic: 16 GiB at N=16384
    assert beyond_memory(points, 16384, 20 * GiB) is None
    reason = beyond_memory(points, 16384, 16 * GiB)  # more than 90% of it
    assert reason == (
        "skipped: needs ~16 GiB by forecast (4 GiB at N=8192, x (N/8192)^2.00), 16 GiB available "
        "(at most 90% of it used)"
    )
    assert MEMORY_HEADROOM == 0.9
    assert beyond_memory([], 16384, 1) is None  # nothing measured yet: the point runs
    assert beyond_memory(points, 16384, None) is None  # the platform cannot say: as before


def test_point_memory_is_the_larger_of_resident_growth_and_live_tensors():
    assert sweep.point_memory_mb({"peak_rss_mb": 30.0, "peak_mem_mb": 10.0}) == 30.0
    assert sweep.point_memory_mb({"peak_rss_mb": None, "peak_mem_mb": 10.0}) == 10.0  # GPU, macOS
    assert sweep.point_memory_mb({"peak_rss_mb": None, "peak_mem_mb": None}) == 0.0


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
def test_resident_growth_sees_a_new_allocation():
    start = memory.start_resident_peak()
    assert start is not None and start > 0
    block = torch.ones(8 * 2**20)  # 32 MiB, touched
    grown = memory.resident_growth_mb(start)
    del block
    assert 30 <= grown < 1024


def test_resident_growth_is_none_where_proc_cannot_say(tmp_path, monkeypatch):
    monkeypatch.setattr(resident, "PROC_CLEAR_REFS", tmp_path / "no-such-dir" / "clear_refs")
    assert memory.start_resident_peak() is None
    assert memory.resident_growth_mb(None) is None


def _fake_needs(name: str, n: int) -> float:
    """MiB a point 'needs': `full` quadratic from 100 MiB at N=16, every other variant linear from 1 MiB."""
    return 100.0 * (n / 16) ** 2 if name == "full" else 1.0 * n / 16


def test_a_sweep_skips_larger_n_by_forecast_and_goes_on(tmp_path, monkeypatch):
    real = sweep.measure_one
    seen_rss = []
    saved_before: dict[tuple[str, int], int] = {}

    def fake_needs(cfg, name, n, setting):
        if (tmp_path / "bench.csv").exists():  # rewritten after every point: a killed sweep keeps them
            with (tmp_path / "bench.csv").open() as f:
                saved_before[(name, n)] = len(list(csv.DictReader(f)))
        row = real(cfg, name, n, setting)
        seen_rss.append(row["peak_rss_mb"])
        row["peak_rss_mb"] = _fake_needs(name, n)
        return row

    monkeypatch.setattr(sweep, "measure_one", fake_needs)
    monkeypatch.setattr(config, "device_memory_bytes", lambda device: 1000 * 2**20)
    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        cfg = compose(config_name="bench", overrides=[*TINY, "device=cpu", "variants=[multihead,linear]"])
    result = run(cfg, out_dir=tmp_path, console=Console(file=open(os.devnull, "w"), width=200))  # noqa: SIM115

    rows = {(r["variant"], r["N"]): r for r in result["rows"]}
    assert rows[("full", 32)]["status"] == "ok"  # 400 MiB by the quadratic forecast from one point
    skipped = rows[("full", 64)]  # 1600 MiB: the two points say quadratic
    assert skipped["status"] == "skipped" and skipped["time_ms_median"] is None
    assert skipped["note"] == (
        "skipped: needs ~1.56 GiB by forecast (0.391 GiB at N=32, x (N/32)^2.00), 0.977 GiB available "
        "(at most 90% of it used)"
    )
    assert rows[("full", 128)]["note"] == "skipped after memory forecast at N=64"
    assert {rows[(v, n)]["status"] for v in ("multihead", "linear") for n in (16, 32, 64, 128)} == {"ok"}
    assert saved_before[("linear", 128)] == len(result["rows"]) - 1  # every point before it, on disk
    if Path("/proc/self/clear_refs").exists():
        assert all(isinstance(mb, float) and mb >= 0 for mb in seen_rss)

    with (tmp_path / "bench.csv").open() as f:
        written = {(r["variant"], int(r["N"])): r for r in csv.DictReader(f)}
    assert written[("full", 64)]["status"] == "skipped"
    assert written[("full", 64)]["note"].startswith("skipped: needs ~1.56 GiB by forecast")
    assert written[("full", 128)]["note"] == "skipped after memory forecast at N=64"
    assert float(written[("linear", 64)]["peak_rss_mb"]) == 4.0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["note"] for r in data["rows"] if r["variant"] == "full" and r["N"] == 64] == [skipped["note"]]
    assert _fake_needs("full", 64) > MEMORY_HEADROOM * 1000
