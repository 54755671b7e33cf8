"""The bad-input catalogue: every entry fails before any training step with one line that names the
problem and the fix, exit status 2, no traceback on screen, and no results.json.

Most entries run in-process through `attnlab.app.run_args` (the CLI's checks, composition and
`attnlab.train.run`, with its error formatting); a representative handful run as real
`python -m attnlab` subprocesses to prove the exit status, the clean screen, the traceback in
run.log and that nothing a later run could mistake for a result is written.
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

from attnlab.app import EXIT_USER_ERROR, run_args
from attnlab.errors import ConfigError

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


# name -> (overrides (a function of tmp_path for data cases), words the one-line message must contain)
CATALOGUE = {
    "unknown attention": (["attention=lineer"], ["unknown attention 'lineer'", "did you mean 'linear'"]),
    "unknown task": (["task=clasify"], ["unknown task 'clasify'", "did you mean 'classify'", "task="]),
    "unknown model": (
        ["model=tny"],
        ["unknown model 'tny'", "did you mean 'tiny'", "base, hf, hf_bert, hf_gpt2, small, tiny"],
    ),
    "unknown trainer": (["trainer=gpuu"], ["unknown trainer 'gpuu'", "did you mean 'gpu'"]),
    "unknown logger": (["logger=wandbb"], ["unknown logger 'wandbb'", "did you mean 'wandb'"]),
    "unknown attention in a role": (
        ["model.decoder.self_attention=multihed"],
        ["unknown attention 'multihed'", "'multihead'"],
    ),
    "mistyped attention parameter": (
        ["attention=linear", "attention.feture_map=relu"],
        ["no parameter 'feture_map'", "did you mean 'feature_map'"],
    ),
    "parameter of another variant": (
        ["attention=linear", "attention.k=8"],
        ["no parameter 'k'", "its parameters: feature_map"],
    ),
    "wrong parameter type": (
        ["attention=linear", "attention.eps=abc"],
        ["attention.eps='abc'", "expected float"],
    ),
    "bad parameter choice": (
        ["attention=linear", "attention.feature_map=rellu"],
        ["choose one of", "did you mean 'relu'"],
    ),
    "wrong model type": (["model.d_model=abc"], ["model.d_model=abc", "expected an integer"]),
    "unknown config key": (
        ["trainer.max_step=5"],
        ["unknown config key 'trainer.max_step'", "did you mean 'max_steps'"],
    ),
    "heads do not divide width": (
        ["model.heads=3"],
        ["model.heads=3 does not divide model.d_model=32", "choose heads among"],
    ),
    "lowrank rank above max_len": (
        ["attention=lowrank", "attention.k=1000", "model.max_len=128"],
        ["attention.k=1000 must be <= model.max_len=128", "attention.k=128"],
    ),
    "causal role for non-causal variant": (
        ["task=translate", "attention=lowrank"],
        ["'lowrank' does not support causal", "model.decoder.self_attention="],
    ),
    "zero max_len": (["model.max_len=0"], ["model.max_len=0 must be a positive number", "n > 0"]),
    "negative max_len": (["model.max_len=-4"], ["model.max_len=-4 must be a positive number"]),
    "zero batch size": (["task.data.batch_size=0"], ["task.data.batch_size=0 must be a positive number"]),
    "zero steps": (
        ["trainer=cpu", "trainer.max_steps=0"],
        ["trainer.max_steps=0 must be a positive number", "-1 for no limit"],
    ),
    "negative steps": (
        ["trainer=cpu", "trainer.max_steps=-5"],
        ["trainer.max_steps=-5 must be a positive number"],
    ),
    "dropout out of range": (["model.dropout=1.5"], ["model.dropout=1.5 must be in [0, 1)"]),
    "fp16 on CPU": (
        ["trainer.precision=16-mixed"],
        ["fp16", "needs a CUDA GPU", "trainer.precision=bf16-mixed"],
    ),
    "gpu trainer without GPU": (["trainer=gpu"], ["no CUDA GPU is visible", "trainer=cpu"]),
    "unknown pooling": (["task.pooling=max"], ["task.pooling='max' is unknown", "choose one of"]),
    "unknown data source": (["task.data.source=web"], ["unknown data source 'web'", "task.data.source="]),
    "hub without network": (
        ["task.data.source=hf", "task.data.name=imdb"],
        ["hub dataset 'imdb'", "task.data.source=builtin"],
    ),
    "missing checkpoint": (
        ["trainer=cpu", "trainer.max_steps=2", "ckpt_path=/nonexistent/last.ckpt"],
        ["ckpt_path=/nonexistent/last.ckpt does not exist", ".ckpt"],
    ),
    "missing data file": (
        lambda tmp: ["task.data.source=files", f"task.data.train={tmp / 'nope.jsonl'}"],
        ["nope.jsonl", "task.data.train"],
    ),
    "missing column": (
        lambda tmp: files_source(tmp, label="sentiment"),
        ["label", "task.data.columns.label"],
    ),
    "empty split": (lambda tmp: files_source(tmp, train_rows=[]), ["empty"]),
}
GPU_ENTRIES = {"fp16 on CPU", "gpu trainer without GPU"}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_input_is_one_clear_line(tmp_path, name):
    if name in GPU_ENTRIES and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    overrides, expected = CATALOGUE[name]
    overrides = overrides(tmp_path) if callable(overrides) else overrides
    argv = [f"paths.run_dir={tmp_path / 'run'}", f"paths.data_cache={tmp_path / 'cache'}", *FAST, *overrides]
    code, message = run_args(argv)
    assert code == EXIT_USER_ERROR, f"{name}: ran without error"
    assert message.startswith("error: ") and "\n" not in message, message
    for words in expected:
        assert words in message, f"{name}: {words!r} not in {message!r}"
    assert not list(tmp_path.rglob("results.json"))
    assert not list(tmp_path.rglob("*.ckpt"))


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


# ---- the same through real subprocesses -------------------------------------------------------------
SUBPROCESS = {
    "unknown model": (["model=tny"], "did you mean 'tiny'"),
    "wrong parameter type": (["attention=linear", "attention.eps=abc"], "expected float"),
    "lowrank rank above max_len": (
        ["attention=lowrank", "attention.k=1000", "model.max_len=128"],
        "attention.k=1000",
    ),
    "zero batch size": (["task.data.batch_size=0"], "task.data.batch_size=0"),
    "fp16 on CPU": (["trainer.precision=16-mixed"], "needs a CUDA GPU"),
}


def assert_clean_failure(result, expected: str, cwd: Path) -> None:
    screen = result.stdout + result.stderr
    assert result.returncode == EXIT_USER_ERROR, screen[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], screen[-2000:]
    assert "Traceback" not in screen
    assert not list(cwd.rglob("results.json")) and not list(cwd.rglob("*.ckpt"))


@pytest.mark.parametrize("name", sorted(SUBPROCESS))
def test_cli_bad_input_exits_2_without_traceback_or_files(tmp_path, name):
    if name == "fp16 on CPU" and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    overrides, expected = SUBPROCESS[name]
    result = run_cli([*FAST, *overrides], cwd=tmp_path)
    assert_clean_failure(result, expected, tmp_path)
    if name != "lowrank rank above max_len":  # checked before Hydra made a run directory
        assert not (tmp_path / "outputs").exists()


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
