"""Runs the bad-input catalogue (tests/bad_inputs.py): every row is one `error:` line with the fix,
exit status 2, no traceback, and nothing trained, measured or reported.

Rows run in-process (the CLI's own preflight and run functions: `attnlab.run.app.run_args`,
`attnlab.bench.__main__.run_args`, `attnlab.report.main`); a handful also run as real subprocesses
to prove the exit status and the clean screen.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import lightning.pytorch  # noqa: F401  (now: its log handler binds to the session's stderr, not a test's)
import pytest
import torch
from bad_inputs import ROWS, Bad
from helpers import FAST as TINY_MODEL
from helpers import run_cli

from attnlab.run.app import EXIT_USER_ERROR

FAST = [
    *TINY_MODEL,
    "logger=none",
    "trainer=debug",
    "task.data.limit.train=64",
    "task.data.limit.validation=32",
    "task.data.limit.test=32",
]
BENCH_TINY = [
    "variants=[multihead,linear]",
    "baselines=[multihead]",
    "lengths=[64,128]",
    "repeats=1",
    "warmup=0",
    "heads=2",
    "head_dim=8",
    "device=cpu",
]

# prepended to study rows (a row's own keys come later and win): an accepted row runs one tiny step
STUDY_TINY = [
    "variants=[linear]",
    "lengths=[32]",
    "seeds=[0]",
    "hydra/launcher=basic",
    "logger=none",
    "trainer.max_steps=1",
    "trainer.val_check_interval=1",
    "task.data.builtin.n_train=8",
    "task.data.builtin.n_validation=8",
    "task.data.builtin.n_test=8",
]


# ---- setups: the files a row refers to as @kind:name -------------------------------------------------
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def data_files(tmp: Path, name: str) -> list[str]:
    """`task.data.*` overrides pointing at small jsonl splits with one kind of mistake."""
    rows = [{"text": f"{'good' if i % 2 else 'bad'} film {i}", "label": i % 2} for i in range(40)]
    train, validation = rows, rows[:10]
    label = "label"
    if name == "sentiment_column":
        label = "sentiment"
        train = validation = [{"text": r["text"], "sentiment": r["label"]} for r in rows]
    elif name == "empty_train":
        train = []
    elif name == "float_labels":
        train = [{**r, "label": r["label"] + 0.5} for r in rows]
    elif name == "unique_labels":
        train = [{**r, "label": i} for i, r in enumerate(rows)]
    elif name == "unseen_label":
        validation = [{**r, "label": 7} for r in rows[:10]]
    elif name == "object_texts":
        train = [{**r, "text": {"body": r["text"]}} for r in rows]
    elif name == "empty_texts":
        train = [{**r, "text": ""} for r in rows]
    elif name == "mqar_string_ids":  # task=mqar rows, ids written as one string
        mqar = [
            {"ids": " ".join(str(t % 8) for t in range(i, i + 9)), "loss_mask": [True] * 9} for i in range(20)
        ]
        folder = tmp / "data" / name
        paths = {
            split: write_jsonl(folder / f"{split}.jsonl", mqar) for split in ("train", "validation", "test")
        }
        return ["task.data.source=files", *(f"task.data.{split}={path}" for split, path in paths.items())]
    elif name != "two_classes" and name != "header_only_csv":
        raise KeyError(name)
    folder = tmp / "data" / name
    if name == "header_only_csv":
        (folder).mkdir(parents=True, exist_ok=True)
        (folder / "train.csv").write_text("text,label\n")
        return [
            "task.data.source=files",
            f"task.data.train={folder / 'train.csv'}",
            f"task.data.validation={write_jsonl(folder / 'val.jsonl', validation)}",
        ]
    paths = {
        "train": write_jsonl(folder / "train.jsonl", train),
        "validation": write_jsonl(folder / "val.jsonl", validation),
        "test": write_jsonl(folder / "test.jsonl", rows[10:20] if label == "label" else validation),
    }
    return ["task.data.source=files", *(f"task.data.{split}={path}" for split, path in paths.items())]


def app_argv(tmp: Path, args: list[str]) -> list[str]:
    return [f"paths.run_dir={tmp / 'run'}", f"paths.data_cache={tmp / 'cache'}", *FAST, *args]


@pytest.fixture(scope="module")
def multihead_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the catalogue's own default config (multihead, FAST sizes, built-in data), as
    Lightning writes one: the built module's state_dict and hyper_parameters. Nothing is trained."""
    from hydra.utils import instantiate

    from attnlab.run.app import preflight

    tmp = tmp_path_factory.mktemp("checkpoint")
    cfg = preflight(app_argv(tmp, []), hydra_config=False)
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.setup("fit")
    module = instantiate(cfg.task.module, _recursive_=False)(
        datamodule=datamodule, model=cfg.model, attention=cfg.attention
    )
    path = tmp / "multihead.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def checkpoint_file(tmp: Path, name: str, multihead: Path) -> Path:
    folder = tmp / "ckpt"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.ckpt"
    if name == "multihead":
        return multihead
    if name == "text":
        path.write_text("not a checkpoint\n")
    elif name == "truncated":
        path.write_bytes(multihead.read_bytes()[:2000])
    elif name == "corrupt":
        path.write_bytes(bytes(range(256)) * 8)
    elif name == "empty":
        path.write_bytes(b"")
    elif name == "directory":
        path = folder / "a_run"
        (path / "checkpoints").mkdir(parents=True)
    elif name == "not_lightning":
        torch.save({"weights": torch.zeros(2)}, path)
    elif name in ("finished", "with_data"):  # the catalogue's default config, its data settings recorded
        from attnlab.run.app import preflight
        from attnlab.run.checkpoints import DATA_RECORD_KEY, data_settings

        checkpoint = torch.load(multihead, weights_only=False)
        cfg = preflight(app_argv(tmp, []), hydra_config=False)
        checkpoint[DATA_RECORD_KEY] = data_settings(cfg.task.data)
        checkpoint["global_step"] = 10**6 if name == "finished" else 0  # past any max_steps, or at the start
        torch.save(checkpoint, path)
    else:
        raise KeyError(name)
    return path


def results_dir(tmp: Path, name: str) -> Path:
    content = {
        "corrupt": "{not json",
        "not_an_object": "[1, 2]",
        "metrics_not_an_object": json.dumps({"status": "ok", "task": "classify", "metrics": "high"}),
        "budget_not_an_object": json.dumps({"status": "ok", "task": "classify", "budget": "all of it"}),
    }[name]
    folder = tmp / "runs" / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(content)
    return folder


def expand(row: Bad, tmp: Path, request) -> list[str]:
    """The row's words with {tmp} and @kind:name setups filled in."""

    def single(kind: str, name: str) -> str:
        if kind == "ckpt":
            return str(checkpoint_file(tmp, name, request.getfixturevalue("multihead_checkpoint")))
        if kind == "results":
            return str(results_dir(tmp, name))
        raise KeyError(kind)

    words: list[str] = []
    for word in shlex.split(row.args.replace("{tmp}", str(tmp))):
        if word.startswith("@files:"):
            words += data_files(tmp, word.split(":", 1)[1])
        else:
            words.append(re.sub(r"@(\w+):(\w+)", lambda m: single(m.group(1), m.group(2)), word))
    return words


# ---- the catalogue ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def four_gigabytes(monkeypatch):
    """Rows see a machine with 4 GB free (attnlab.nn.estimate), so a size refused here is refused everywhere."""
    monkeypatch.setenv("ATTNLAB_MEMORY_GB", "4")


def run_row(row: Bad, words: list[str], tmp: Path) -> tuple[int, str]:
    if row.what in ("app", "flags"):
        from attnlab.run.app import run_args

        return run_args(app_argv(tmp, words))
    if row.what == "bench":
        from attnlab.bench.__main__ import run_args as bench_args

        return bench_args([*BENCH_TINY, f"out_dir={tmp / 'bench'}", *words])
    if row.what in ("report", "variants"):
        from attnlab.report import main as report_main
        from attnlab.variants import main as variants_main

        try:
            return (report_main if row.what == "report" else variants_main)(words), ""
        except SystemExit as stop:  # argparse
            return int(stop.code), ""
    if row.what == "study":
        from attnlab.study import main as study_main

        return study_main([f"out={tmp / 'study'}", *STUDY_TINY, *words]), ""
    raise ValueError(f"unknown catalogue kind {row.what!r}")


def row_id(row: Bad) -> str:
    return f"{row.what}: {row.args}"[:90]


def test_the_catalogue_covers_every_class():
    assert len(ROWS) >= 120
    assert len({(r.what, r.args) for r in ROWS}) == len(ROWS), "duplicate rows"
    assert {r.what for r in ROWS} == {"app", "flags", "bench", "report", "variants", "study"}


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_bad_input_is_one_clear_line(row: Bad, tmp_path, request, capsys):
    if row.cpu_only and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    words = expand(row, tmp_path, request)
    code, message = run_row(row, words, tmp_path)
    err = capsys.readouterr().err
    if row.what in ("report", "variants", "study"):  # main() prints its own line
        message = "\n".join(line for line in err.splitlines() if line.startswith("error: "))
    assert code == EXIT_USER_ERROR, f"accepted (exit {code}): {row.args}"
    assert message.startswith("error: ") and "\n" not in message, message
    assert row.fragment in message, f"{row.fragment!r} not in {message!r}"
    assert "Traceback" not in err
    assert not list((tmp_path / "run").rglob("results.json")) if (tmp_path / "run").exists() else True
    assert not list(tmp_path.rglob("*.ckpt")) or "ckpt" in row.args
    assert not list(tmp_path.rglob("bench.csv")) and not list(tmp_path.rglob("report.md"))
    assert not (tmp_path / "study").exists()  # a study refused before anything runs writes nothing


# ---- a handful through real subprocesses: exit status, one line on a clean screen ---------------------
SLOW = pytest.mark.slow  # ~5 s each: a fresh interpreter importing torch, Lightning and Hydra
SUBPROCESS = [
    Bad("attention=local attention.window=0", "attention.window=0 must be >= 1"),
    Bad("task.module.lr=fast", "task.module.lr=fast must be a number > 0"),
    Bad("--cfg jobb", "invalid choice: 'jobb'", "flags"),
    pytest.param(Bad("attention=performer attention.features=1000000", "<= 4 x model.max_len"), marks=SLOW),
    pytest.param(Bad("dtype=float16", "dtype=float16 on CPU", "bench"), marks=SLOW),
    pytest.param(Bad("--cost nope .", "invalid choice: 'nope'", "report"), marks=SLOW),
]
MODULES = {"app": "attnlab", "flags": "attnlab", "bench": "attnlab.bench", "report": "attnlab.report"}


@pytest.mark.parametrize("row", SUBPROCESS, ids=lambda row: row_id(row) if isinstance(row, Bad) else None)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(row: Bad, tmp_path):
    words = shlex.split(row.args)
    prefix = {"app": FAST, "flags": FAST, "bench": BENCH_TINY, "report": []}[row.what]
    result = run_cli([*prefix, *words], cwd=tmp_path, module=MODULES[row.what])
    screen = result.stdout + result.stderr
    assert result.returncode == EXIT_USER_ERROR, screen[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and row.fragment in errors[0], screen[-2000:]
    assert "Traceback" not in screen and "usage:" not in screen
    assert not any(tmp_path.iterdir()), f"wrote {list(tmp_path.iterdir())}"  # checked before any directory


# ---- resource-absurd settings that are cut off rather than refused -------------------------------------
def test_a_bench_point_that_cannot_finish_in_its_budget_is_not_started(tmp_path):
    """N = 10^7 after N = 64: one call is predicted (at least linear in N) to take far longer than
    time_budget_s, so it is recorded as time_budget without running, and the sweep saves its files."""
    from attnlab.bench.__main__ import preflight
    from attnlab.bench.sweep import run

    cfg = preflight(
        [
            "variants=[linear]",
            "baselines=[]",
            "crossover_baseline=linear",
            "lengths=[64,10000000]",
            "repeats=1",
            "warmup=0",
            "heads=1",
            "head_dim=8",
            "device=cpu",
            "time_budget_s=0.5",
            f"out_dir={tmp_path}",
        ],
        hydra_config=False,
    )
    result = run(cfg)
    (big,) = [r for r in result["rows"] if r["N"] == 10_000_000]
    assert big["status"] == "time_budget" and big["note"].startswith("not run: one call would take >=")
    assert "past time_budget_s=0.5" in big["note"]
    assert (tmp_path / "bench.csv").exists() and (tmp_path / "bench.json").exists()
