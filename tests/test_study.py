"""`python -m attnlab.study`: the grid's outputs (csv rows = cells, md, png), resume (only the missing
and failed cells run again), failing cells listed and not fatal, bad inputs as one-line errors before
anything runs.

The study runs in-process (`attnlab.study.main`); it hands its cells to `python -m attnlab -m` in a
child process, as on the command line.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from attnlab.errors import ConfigError
from attnlab.study import main
from attnlab.study.plan import check_variants, study_block

# a tiny model, four steps, a few dozen ListOps examples: each cell runs in a second or two
TINY = [
    "logger=csv",
    "model.d_model=16",
    "model.heads=2",
    "model.encoder_layers=1",
    "model.mlp_ratio=2",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "callbacks.cost.warmup_steps=1",
    "task.data.batch_size=8",
    "task.data.builtin.n_train=32",
    "task.data.builtin.n_validation=8",
    "task.data.builtin.n_test=8",
]


def study_args(out: Path, *args: str) -> list[str]:
    return ["task=classify", f"out={out}", *args, *TINY, f"paths.data_cache={out.parent / 'cache'}"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_grid_outputs_then_a_rerun_runs_only_the_missing_and_failed_cells(tmp_path, capfd):
    out = tmp_path / "study"
    # ListOps cannot make expressions shorter than 9 characters, so L=16 (lengths 8..16) fails in both
    # variants; L=24 and L=48 run.
    args = study_args(out, "variants=[multihead,linear]", "lengths=[16,24,48]", "seeds=[0]")
    assert main(args) == 2  # a cell failed: exit 2, the others finished
    first = capfd.readouterr()
    assert "skipped 0 finished cell(s); running 6 (6 new, 0 failed before and retried)" in first.err
    assert "failed multihead-L16-s0: listops needs 9 <= min_length" in first.err
    assert "study: 4/6 cells finished, 2 failed or missing" in first.err
    assert "| multihead | failed | " in first.out  # the md table is printed at the end

    rows = read_csv(out / "study.csv")
    assert [(r["variant"], r["length"], r["seed"]) for r in rows] == [
        (v, n, "0") for v in ("multihead", "linear") for n in ("16", "24", "48")
    ]
    assert [r["status"] for r in rows] == ["failed", "ok", "ok"] * 2
    for row in rows:
        assert Path(row["run_dir"]) == out / "runs" / f"{row['variant']}-L{row['length']}-s0"
        if row["status"] == "ok":
            assert 0.0 <= float(row["test/acc"]) <= 1.0
            assert float(row["train_tokens_per_s"]) > 0 and float(row["peak_memory_mb"]) > 0
            assert float(row["attention_flops_per_token"]) > 0
        else:
            assert row["test/acc"] == "" and "listops needs" in row["error"]
    multihead_48 = next(r for r in rows if r["variant"] == "multihead" and r["length"] == "48")
    linear_48 = next(r for r in rows if r["variant"] == "linear" and r["length"] == "48")
    # multihead's attention FLOPs per token grow with N, linear's do not
    assert float(multihead_48["attention_flops_per_token"]) > float(linear_48["attention_flops_per_token"])

    md = (out / "study.md").read_text()
    assert "| variant | L=16 | L=24 | L=48 | train tokens/s @48 |" in md
    assert re.search(r"\| linear \| failed \| \d\.\d{3} \| \d\.\d{3} \|", md)
    assert "## Failed cells" in md and "linear-L16-s0" in md and "![" in md
    png = (out / "study.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # an interrupted study: one finished cell loses its results; the rerun runs it and the failed ones
    finished = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.json")}
    lost = out / "runs" / "linear-L24-s0" / "results.json"
    lost.unlink()
    assert main(args) == 2
    second = capfd.readouterr()
    assert "skipped 3 finished cell(s); running 3 (1 new, 2 failed before and retried)" in second.err
    assert "retrying multihead-L16-s0 (failed before: listops needs" in second.err
    (running,) = [line for line in second.err.splitlines() if line.startswith("running: python -m attnlab")]
    assert running.endswith("+study_cell=multihead-L16-s0,linear-L16-s0,linear-L24-s0")
    assert lost.exists()
    for path, mtime in finished.items():  # the finished cells were not run again
        if path != lost:
            assert path.stat().st_mtime_ns == mtime
    assert len(read_csv(out / "study.csv")) == 6


def test_help_names_the_keys(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for key in (
        "task=",
        "variants=",
        "lengths=",
        "seeds=",
        "out=",
        "studies/<task>/",
        "hydra/launcher=slurm",
    ):
        assert key in text


# argv (besides task=classify/out=) -> words of the one-line error
BAD_INPUTS = {
    "unknown variant": (
        ["variants=[multihead,lineer]"],
        ["unknown attention 'lineer'", "did you mean 'linear'"],
    ),
    "empty lengths": (["lengths=[]"], ["lengths= is empty", "lengths=[64,128]"]),
    "empty variants": (["variants=[]"], ["variants= is empty"]),
    "empty seeds": (["seeds=[]"], ["seeds= is empty"]),
    "length above model.max_len": (
        ["lengths=[32,64]", "model.max_len=48"],
        ["length 64 is above model.max_len=48", "lengths="],
    ),
    "length not a number": (["lengths=[32,long]"], ["'long' is not a positive integer"]),
    "a bad override for every run": (
        ["trainer.max_stepz=3"],
        ["study cell", "trainer.max_stepz", "max_steps"],
    ),
    "attention passed through": (["attention=linear"], ["variants=[...] instead"]),
    "seed passed through": (["seed=3"], ["seeds=[...] instead"]),
    "a sweep passed through": (["trainer.max_steps=2,3"], ["cannot sweep"]),
    "a multirun flag": (["-m"], ["no -m"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_one_line_errors_before_anything_runs(tmp_path, capfd, case):
    argv, words = BAD_INPUTS[case]
    out = tmp_path / "study"
    assert main(["task=classify", f"out={out}", *argv]) == 2
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for word in words:
        assert word in lines[0]
    assert not out.exists()  # nothing ran, nothing was written


def test_a_task_without_a_study_block_is_a_one_line_error(tmp_path, capfd):
    assert main(["task=translate", f"out={tmp_path / 'study'}"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: task=translate has no study: block") and "classify" in err
    assert main([f"out={tmp_path / 'study'}"]) == 2
    assert "no task given" in capfd.readouterr().err


def test_unknown_study_keys_and_templates_are_refused():
    def block(**study):
        return OmegaConf.create(
            {"task": {"study": {"length_overrides": ["model.max_len={length}"], **study}}}
        )

    with pytest.raises(ConfigError, match=r"unknown study key 'lenghts' \(did you mean 'lengths'\?\)"):
        study_block("x", block(lenghts=[64]))
    with pytest.raises(ConfigError, match=r"only \{length\} and \{half\}"):
        study_block("x", block(length_overrides=["model.max_len={n}"]))
    assert study_block("x", block(lengths=[64])).lengths == [64]


# a study block's field -> words of its one-line error (attnlab.config.study_schema StudyBlock)
BAD_BLOCKS = {
    "length_overrides not a list": (
        {"length_overrides": "model.max_len={length}"},
        "must be a list of templates",
    ),
    "a template without =": ({"length_overrides": ["{length}"]}, "'{length}' is not key=value"),
    "overrides not a list": (
        {"overrides": "experiment=mqar"},
        "study.overrides=experiment=mqar must be a list",
    ),
    "grid not a mapping": ({"grid": [16, 32]}, "study.grid=[16, 32] must map config keys to their values"),
    "tune not a mapping": ({"tune": 3}, "study.tune=3 must map config keys"),
    "per_length not by length": (
        {"per_length": {"model.d_model": [64]}},
        "study.per_length.model.d_model must map lengths",
    ),
    "per_length not a mapping": (
        {"per_length": [1]},
        "study.per_length=[1] must map config keys to {length: value}",
    ),
    "skip not mappings": ({"skip": [5]}, "study.skip: 5 is not a mapping of axes to values"),
}


@pytest.mark.parametrize("case", list(BAD_BLOCKS))
def test_a_study_blocks_fields_are_checked_as_declared(case):
    study, words = BAD_BLOCKS[case]
    cfg = OmegaConf.create({"task": {"study": {"length_overrides": ["model.max_len={length}"], **study}}})
    with pytest.raises(ConfigError) as err:
        study_block("x", cfg)
    (line,) = str(err.value).splitlines()
    assert line.startswith("conf/task/x.yaml: study.") and words in line, line


def test_the_command_lines_own_keys_are_checked_before_anything_is_composed(monkeypatch, capfd):
    from attnlab.study import plan as plan_module

    def no_compose(*args, **kwargs):
        raise AssertionError("composed")

    monkeypatch.setattr(plan_module, "compose_task", no_compose)
    for arg, words in (
        ("lengths=[abc]", "lengths: 'abc' is not a positive integer"),
        ("seeds=[x]", "seeds: 'x' is not an integer"),
        ("eval_lengths=[-1]", "eval_lengths: -1 is not a positive integer"),
        ("variants=[nosuch]", "variants: unknown attention 'nosuch'"),
        ("allow_partial=maybe", "allow_partial=maybe: expected true or false"),
    ):
        assert main(["task=mqar", arg]) == 2
        (line,) = capfd.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {words}"), line


@pytest.mark.parametrize("task", ["lm", "mqar"])
def test_a_non_causal_variant_for_lm_or_mqar_is_a_one_line_error(tmp_path, capfd, task):
    out = tmp_path / "study"
    assert main([f"task={task}", f"out={out}", "variants=[multihead,nystrom]"]) == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("error: variants: attention 'nystrom' does not support causal")
    assert f"task={task}" in line and "drop 'nystrom'" in line and not out.exists()


@pytest.mark.parametrize("task", ["classify", "lm", "mqar"])
def test_every_cell_is_composed_with_its_task_and_length(tmp_path, task):
    from attnlab.study.launch import multirun_argv
    from attnlab.study.plan import plan, preflight_cells

    study = plan(task, variants=["linear"], lengths=[32], seeds=[0], out=tmp_path)
    cfg = preflight_cells(study)
    assert cfg.task.name == task and cfg.attention.name == "linear" and cfg.model.max_len == 32
    assert f"task={task}" in multirun_argv(study, study.cells, wandb_group=False)


def test_a_non_causal_variant_is_refused_for_a_causal_model():
    check_variants("lm", ["multihead", "linear", "nystrom"], ())  # no roles declared: the run checks
    with pytest.raises(ConfigError, match="attention 'nystrom' does not support causal .* task=lm") as err:
        check_variants("lm", ["multihead", "nystrom"], ("decoder_self",))
    assert "drop 'nystrom' from variants=" in str(err.value) and "multihead" in str(err.value)


@pytest.mark.slow
def test_a_study_on_the_parallel_launcher_shares_one_wandb_group(tmp_path, capfd, monkeypatch):
    from helpers import read_wandb_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "study"
    tiny = [a for a in TINY if a != "logger=csv"]  # the app's default logger: wandb (offline)
    argv = ["task=classify", f"out={out}", "variants=[multihead,local]", "lengths=[24,48]", "seeds=[0,1]"]
    argv += [*tiny, "hydra/launcher=parallel", f"paths.data_cache={tmp_path / 'cache'}"]
    assert main(argv) == 0
    captured = capfd.readouterr()
    assert "study: 8/8 cells finished, 0 failed or missing" in captured.err
    rows = read_csv(out / "study.csv")
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    assert re.search(r"\| local \| \d\.\d{3} ± \d\.\d{3} \|", (out / "study.md").read_text())

    runs = sorted((out / "runs").glob("*/wandb/offline-run-*/*.wandb"))
    assert len(runs) == 8
    assert {read_wandb_offline_run(r)["run"]["group"] for r in runs} == {"study-classify-study"}
    (own,) = (out / "wandb").glob("offline-run-*/*.wandb")
    logged = read_wandb_offline_run(own)
    assert logged["run"] == {"group": "study-classify-study", "job_type": "study"}
    for key in ("study/runs", "study/plot"):  # a Table and an Image: nested keys (study/runs/_type, ...)
        assert any(k.startswith(key + "/") for k in logged["history"]), sorted(logged["history"])

    assert main(argv) == 0  # nothing left to run
    assert "skipped 8 finished cell(s); running 0" in capfd.readouterr().err


def test_a_rerun_with_other_overrides_warns_that_finished_cells_are_kept(tmp_path):
    from attnlab.run.results import RESULTS_KEYS, write_results
    from attnlab.study import launch
    from attnlab.study.plan import plan

    def study(*overrides):
        return plan(
            "classify", variants=["linear"], lengths=[32], seeds=[0], overrides=overrides, out=tmp_path
        )

    first = study("trainer.max_steps=4")
    (cell,) = first.cells
    launch.record_launch(first, [cell])
    write_results(first.run_dir(cell), {key: "ok" if key == "status" else None for key in RESULTS_KEYS})
    assert not any("warning" in line for line in launch.describe(first, launch.todo(first)))
    again = study("trainer.max_steps=8")
    lines = launch.describe(again, launch.todo(again))
    assert "skipped 1 finished cell(s); running 0" in lines[1]
    assert (
        "warning: 1 finished cell(s) ran with other overrides than this command's (linear-L32-s0)" in lines[2]
    )
    # the same overrides in another order are the same runs (no key set twice): no warning
    two = study("trainer.max_steps=4", "model.d_model=32")
    launch.record_launch(two, [cell])
    swapped = study("model.d_model=32", "trainer.max_steps=4")
    assert not any("warning" in line for line in launch.describe(swapped, launch.todo(swapped)))
    assert not launch.same_overrides(["a=1", "a=2"], ["a=2", "a=1"])  # a key set twice: the last one wins


def test_a_stopped_cell_with_a_checkpoint_resumes_and_a_failed_one_starts_again(tmp_path):
    from attnlab.run.results import write_failure_record
    from attnlab.study import launch
    from attnlab.study.plan import cell_config, plan

    study = plan("classify", variants=["linear"], lengths=[32, 64], seeds=[0], out=tmp_path)
    stopped, failed = study.cells
    for cell, error in ((stopped, launch.INTERRUPTED), (failed, "NumericalError")):
        write_failure_record(study.run_dir(cell), {"error": error, "message": f"{error} at step 3"})
        launch.last_checkpoint(study.run_dir(cell)).parent.mkdir()
        launch.last_checkpoint(study.run_dir(cell)).write_bytes(b"")
    state = launch.todo(study)
    assert state.to_run == [stopped, failed] and state.resume == [stopped]
    lines = launch.describe(study, state)
    assert "  resuming linear-L32-s0 from its checkpoint (it was stopped before finishing)" in lines
    assert "  retrying linear-L64-s0 (failed before: NumericalError at step 3)" in lines
    assert "ckpt_path: last" in cell_config(study, stopped, resume=True)
    assert "ckpt_path" not in cell_config(study, failed)


@pytest.mark.slow
def test_an_mqar_study_records_accuracy_and_decode_state_per_length(tmp_path, capfd):
    out = tmp_path / "study"
    tiny = ["model.d_model=16", "model.heads=2", "model.decoder_layers=1", "task.data.builtin.vocab_size=64"]
    tiny += [
        "task.data.builtin.n_train=64",
        "task.data.builtin.n_validation=16",
        "task.data.builtin.n_test=16",
    ]
    tiny += [a for a in TINY if not a.startswith(("task.data.", "model."))]
    argv = [
        "task=mqar",
        f"out={out}",
        "variants=[multihead,linear]",
        "lengths=[32,64]",
        "seeds=[0]",
        "tune={}",
    ]
    argv += tiny  # one run per cell: the task's default tune and seeds dropped
    assert main(argv) == 0
    assert "study: 4/4 cells finished" in capfd.readouterr().err
    rows = {(r["variant"], int(r["length"])): r for r in read_csv(out / "study.csv")}
    assert all(0.0 <= float(r["test/acc"]) <= 1.0 for r in rows.values())
    state = {key: float(r["decode_state_bytes"]) for key, r in rows.items()}
    assert state[("multihead", 64)] == 2 * state[("multihead", 32)]  # the KV cache grows with N
    assert state[("linear", 64)] == state[("linear", 32)]  # the running sums do not
    md = (out / "study.md").read_text()
    assert "decode state bytes @64" in md and "mqar, test/acc against sequence length" in md
