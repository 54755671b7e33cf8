"""Error handling beyond the bad-input catalogue (tests/bad_inputs.py, run by test_bad_inputs.py):
broken plugins, undecodable and over-long data, the traceback kept in run.log, failing sweep members.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import BROKEN_SITE, plugin_pythonpath
from helpers import FAST as TINY_MODEL
from helpers import run_cli

from attnlab.errors import ConfigError
from attnlab.run.app import EXIT_USER_ERROR, run_args

FAST = [
    *TINY_MODEL,
    "logger=none",
    "trainer=debug",
    "task.data.limit.train=64",
    "task.data.limit.validation=32",
    "task.data.limit.test=32",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def files_source(tmp_path: Path, *, train_rows=None, label="label") -> list[str]:
    rows = [{"text": f"{'good' if i % 2 else 'bad'} film {i}", label: i % 2} for i in range(40)]
    paths = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows if train_rows is None else train_rows),
        "validation": write_jsonl(tmp_path / "val.jsonl", rows[:10]),
        "test": write_jsonl(tmp_path / "test.jsonl", rows[10:20]),
    }
    return ["task.data.source=files", *(f"task.data.{s}={p}" for s, p in paths.items())]


def test_broken_plugin_named_as_attention_says_it_failed_to_load(tmp_path, broken_plugin):
    code, message = run_args([f"paths.run_dir={tmp_path / 'run'}", *FAST, "attention=broken"])
    assert code == EXIT_USER_ERROR and "\n" not in message
    assert "attention 'broken' is a plugin that failed to load" in message and "ImportError" in message
    assert "python -m attnlab.variants" in message


def test_undecodable_bytes_are_replaced_counted_and_the_run_goes_on(tmp_path, caplog):
    rows = files_source(tmp_path)
    train = tmp_path / "train.jsonl"
    train.write_bytes(train.read_bytes().replace(b"film 3", b"film \xff\xfe 3"))
    code, message = run_args(
        [f"paths.run_dir={tmp_path / 'run'}", f"paths.data_cache={tmp_path / 'cache'}", *FAST, *rows]
    )
    assert (code, message) == (0, "")
    assert re.search(r"not valid UTF-8: replaced [1-9]\d* undecodable byte sequence", caplog.text)
    assert (tmp_path / "run" / "results.json").exists()


def test_too_long_sequence_is_a_positional_error_when_not_truncated():
    """Data is truncated to model.max_len (with a logged count); a direct model call that exceeds the
    positional table is a ConfigError naming model.max_len."""
    from attnlab.nn import AttentionSpec, Encoder, ModelConfig

    encoder = Encoder(
        50,
        ModelConfig(d_model=16, heads=2, encoder_layers=1, max_len=8),
        AttentionSpec.from_config("multihead"),
    )
    ids = torch.zeros(1, 12, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"length 12 exceeds model.max_len=8"):
        encoder(ids, torch.zeros(1, 12, dtype=torch.bool))


def test_long_data_is_truncated_with_a_logged_count(tmp_path, caplog):
    rows = [{"text": "x" * 300, "label": i % 2} for i in range(40)]
    files = files_source(tmp_path, train_rows=rows)
    code, _ = run_args(
        [f"paths.run_dir={tmp_path / 'run'}", f"paths.data_cache={tmp_path / 'cache'}", *FAST, *files]
    )
    assert code == 0 and "truncated 40 of 40 train text sequences to max_len=128" in caplog.text


# ---- through real subprocesses -------------------------------------------------------------------
def assert_clean_failure(result, expected: str, cwd: Path) -> None:
    screen = result.stdout + result.stderr
    assert result.returncode == EXIT_USER_ERROR, screen[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], screen[-2000:]
    assert "Traceback" not in screen
    assert not list(cwd.rglob("results.json")) and not list(cwd.rglob("*.ckpt"))


def test_cli_error_during_the_run_logs_the_traceback_in_run_log(tmp_path):
    result = run_cli([*FAST, "model.heads=3"], cwd=tmp_path)
    assert_clean_failure(result, "model.heads=3 does not divide", tmp_path)
    (run_log,) = tmp_path.glob("outputs/classify/multihead/*/run.log")
    assert "Traceback" in run_log.read_text() and "ConfigError" in run_log.read_text()
    failed = json.loads((run_log.parent / "failed.json").read_text())
    assert failed["status"] == "failed" and "does not divide" in failed["message"]


def test_cli_broken_plugin_warns_and_the_run_proceeds(tmp_path):
    env = {"PYTHONPATH": plugin_pythonpath(BROKEN_SITE)}
    ok = run_cli([*FAST, "attention=linear"], cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "plugin 'broken'" in ok.stderr and "failed to load" in ok.stderr
    assert list(tmp_path.rglob("results.json"))
    bad = run_cli(
        [*FAST, "attention=broken"], cwd=tmp_path / "b" if (tmp_path / "b").mkdir() is None else None, env=env
    )
    assert bad.returncode == EXIT_USER_ERROR and "is a plugin that failed to load" in bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


def test_failing_sweep_member_does_not_stop_the_others(tmp_path):
    result = run_cli(["-m", *FAST, "model.heads=2,3"], cwd=tmp_path)
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
    (sweep,) = tmp_path.glob("multirun/classify/*")
    assert (sweep / "0-multihead" / "results.json").exists() and not (
        sweep / "0-multihead" / "failed.json"
    ).exists()
    assert (sweep / "1-multihead" / "failed.json").exists() and not (
        sweep / "1-multihead" / "results.json"
    ).exists()
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["ok"] == ["0-multihead"]
    assert (
        summary["failed"][0]["job"] == "1-multihead" and "does not divide" in summary["failed"][0]["message"]
    )
    assert "1 ok, 1 failed" in result.stderr and "Traceback" not in result.stderr
