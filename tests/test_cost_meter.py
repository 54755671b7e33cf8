"""The cost meter's peak memory belongs to one run, not to the process that ran several."""

import sys

import pytest
import torch

from attnlab.run.callbacks import peak_memory_mb, reset_peak_memory

CPU = torch.device("cpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the per-run CPU peak reads /proc (Linux)")
def test_a_reset_forgets_the_peak_of_an_earlier_run_in_the_same_process():
    assert reset_peak_memory(CPU)
    baseline, kind = peak_memory_mb(CPU)
    assert kind == "cpu_peak_rss_run"
    earlier_run = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched: resident
    inflated, _ = peak_memory_mb(CPU)
    del earlier_run
    assert inflated >= baseline + 200
    assert reset_peak_memory(CPU)
    after_reset, _ = peak_memory_mb(CPU)
    assert after_reset < inflated - 200  # the next run starts from what is in use now


def test_without_proc_the_peak_is_the_process_lifetime_peak(monkeypatch, tmp_path):
    import attnlab.host.resident as resident

    monkeypatch.setattr(resident, "PROC_STATUS", tmp_path / "absent-status")
    monkeypatch.setattr(resident, "PROC_CLEAR_REFS", tmp_path / "no-such-dir" / "clear_refs")
    assert reset_peak_memory(CPU) is False
    peak, kind = peak_memory_mb(CPU)
    assert kind == "cpu_peak_rss" and peak > 0
