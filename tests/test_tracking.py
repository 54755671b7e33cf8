"""wandb without network: an online run whose server does not answer logs offline after a timeout,
with one warning line, and the run goes on (attnlab.run.tracking.start_wandb). The server is a closed
local port, never a real host; the key is fake."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
from helpers import run_cli

from attnlab.run.tracking import WANDB_INIT_TIMEOUT_S, start_wandb

NO_SERVER = {
    "WANDB_MODE": "online",
    "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",  # fake: the port below never answers
    "WANDB_BASE_URL": "http://127.0.0.1:9",  # the discard port: connection refused
}


def test_an_unreachable_wandb_server_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    # wandb keeps one settings singleton and service per process: an earlier in-process run of the
    # suite (offline) would answer for this one, so start from a fresh state, as a new process does
    wandb.teardown()
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    for key, value in NO_SERVER.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")  # the user's own timeout wins over ours
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    logger = WandbLogger(project="attnlab", save_dir=str(tmp_path), id="offline1")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="attnlab.tracking"):
        start_wandb(logger)
    try:
        assert time.monotonic() - started < 60
        warnings = [r.getMessage() for r in caplog.records if r.name == "attnlab.tracking"]
        assert len(warnings) == 1 and "\n" not in warnings[0]
        assert warnings[0].startswith("wandb: no answer from http://127.0.0.1:9 (")
        assert "logging offline instead" in warnings[0]
        assert logger.experiment.settings.mode == "offline" and logger.experiment.id == "offline1"
        import os

        assert os.environ["WANDB_MODE"] == "offline"  # a sweep's next runs do not wait again
    finally:
        logger.experiment.finish()


@pytest.mark.slow
def test_cli_run_without_network_keeps_its_results_and_waits_at_most_30_s(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        ["trainer=debug", "model.d_model=32", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env={**NO_SERVER, "HOME": str(tmp_path)},
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output and output.count("logging offline instead") == 1
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"
    assert list((run_dir / "wandb").glob("offline-run-*/*.wandb"))
    # from wandb.init (its online run directory's timestamp) to the warning: the timeout, not minutes
    log = (run_dir / "run.log").read_text()
    warned = re.search(r"\[(\d+-\d+-\d+ \d+:\d+:\d+),\d+\]\[attnlab.tracking\]\[WARNING\]", log).group(1)
    (online,) = (run_dir / "wandb").glob("run-*")
    begun = re.fullmatch(r"run-(\d{8}_\d{6})-\w+", online.name).group(1)
    fmt = "%Y%m%d_%H%M%S"
    waited = time.mktime(time.strptime(warned, "%Y-%m-%d %H:%M:%S")) - time.mktime(time.strptime(begun, fmt))
    assert WANDB_INIT_TIMEOUT_S - 1 <= waited <= 30, waited


def test_a_study_table_with_an_axis_of_mixed_kinds_logs():
    """A study axis over [null, 48] writes "null" and 48 into one column: wandb.Table types each column
    and refused the second row (the default MQAR study's end), so such a column is written as text."""
    from attnlab.bench.wandb_log import table

    logged = table(
        [{"pairs": "null", "acc": 1.0}, {"pairs": 48, "acc": None}, {"pairs": None, "acc": 0.5}],
        ["pairs", "acc"],
    )
    assert [row[0] for row in logged.data] == ["null", "48", None]
    assert [row[1] for row in logged.data] == [1.0, None, 0.5]  # a column of one kind keeps its numbers
