"""The study's axes and protocol: `grid.<key>` and `tune.<key>` cells (names, cell configs, csv columns),
the selection of tuned runs on validation (never test), runs cut short (budget.stopped_by), the
eval_lengths columns and extrapolation.png, mean_over, state.png, the task's default tune and the
zoology preset (composed only).

Most tests write results.json files by hand (attnlab.run.results.write_results), so they pin exactly what
the study reads; one slow test runs a tiny grid × tune on MQAR end to end, then resumes it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from attnlab.errors import ConfigError
from attnlab.run.results import RESULTS_KEYS, write_results
from attnlab.study import main
from attnlab.study.cli import write_outputs
from attnlab.study.collect import DAGGER, Metric, basis_caption, collect, tables_text
from attnlab.study.plan import Study, cell_config, plan, preflight_cells
from attnlab.study.select import Monitor

ACC = Metric("test/acc", True)
VAL = Monitor("val/acc", True)
LR = "task.module.lr"


def fake_run(
    study: Study,
    cell,
    *,
    val,
    test,
    budget=None,
    evals=None,
    state=1024,
    params=1000,
    best_val=None,
    states=None,
    lr=None,
) -> None:
    """A finished run's results.json as the run writes it (only what the study reads is filled in);
    `best_val`: the best checkpoint's validation score when it is not the last one's."""
    metrics = {"val/acc": val, "test/acc": test} | {f"test/acc@{n}": v for n, v in (evals or {}).items()}
    if best_val is not None:
        metrics["best/val/acc"] = best_val
    results = {key: None for key in RESULTS_KEYS} | {
        "status": "ok",
        "task": study.task,
        "primary_metric": "test/acc",
        "primary_mode": "max",
        "metrics": metrics,
        "cost": {
            "train_tokens_per_s": 1000.0,
            "peak_memory_mb": 100.0,
            "attention_flops_per_token": 10.0,
            "decode_state_bytes": state,
        }
        | {f"decode_state_bytes@{n}": v for n, v in (states or {}).items()},
        "parameters": params,
    }
    if budget is not None:
        results["budget"] = budget
    if lr is not None:
        results["config"] = {"task": {"module": {"lr": lr}}}
    write_results(study.run_dir(cell), results)


def by_name(study: Study) -> dict:
    return {cell.name: cell for cell in study.cells}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---- cells and their names --------------------------------------------------------------------------
def test_grid_and_tune_cross_the_variants_lengths_and_seeds_with_stable_names(tmp_path):
    study = plan(
        "mqar",
        variants=["linear", "local"],
        lengths=[32],
        seeds=[0, 1],
        grid={"model.d_model": [16, 32]},
        tune={LR: [1e-3, 1e-2]},
        cleared=["grid"],
        out=tmp_path,
    )
    names = [cell.name for cell in study.cells]
    assert len(names) == len(set(names)) == 2 * 1 * 2 * 2 * 2
    assert names[:4] == [
        "linear-L32-d_model16-s0-lr0p001",
        "linear-L32-d_model16-s0-lr0p01",
        "linear-L32-d_model16-s1-lr0p001",
        "linear-L32-d_model16-s1-lr0p01",
    ]
    # a name depends only on its own values: adding a width keeps the finished runs' directories
    wider = plan(
        "mqar",
        variants=["linear"],
        lengths=[32],
        seeds=[0],
        grid={"model.d_model": [8, 16, 32]},
        tune={LR: [1e-3, 1e-2]},
        cleared=["grid"],
        out=tmp_path,
    )
    assert set(names) & {c.name for c in wider.cells} == {
        f"linear-L32-d_model{d}-s0-lr{lr}" for d in (16, 32) for lr in ("0p001", "0p01")
    }
    # the cell config sets the grid point and the tuned value
    text = cell_config(study, study.cells[1])
    assert "d_model: 16" in text and "lr: 0.01" in text and "override /attention: linear" in text
    # without axes, the names the study always used
    plain = plan(
        "mqar", variants=["linear"], lengths=[32], seeds=[0], tune={}, cleared=["tune", "grid"], out=tmp_path
    )
    assert [c.name for c in plain.cells] == ["linear-L32-s0"]


def test_names_of_words_lists_and_clashing_values(tmp_path):
    from attnlab.study.axes import token

    assert token("in_context_recall") == "in_context_recall"
    assert token(0.003) == "0p003" and token(1e-4) == "0p0001" and token(None) == "null"
    odd = token("a b/c")
    assert odd.startswith("a_b_c-") and len(odd) == len("a_b_c-") + 6
    assert token([1, 2]) != token([1, 3])
    with pytest.raises(ConfigError, match="two cells would share the name"):
        plan(
            "mqar",
            variants=["linear"],
            lengths=[32],
            grid={"task.data.builtin.num_kv_pairs": [4, "4"]},
            out=tmp_path,
        )


def test_skip_leaves_cells_out_for_a_capacity_point(tmp_path):
    pairs = "task.data.builtin.num_kv_pairs"
    study = plan(
        "mqar",
        variants=["linear"],
        lengths=[64, 128, 256],
        seeds=[0],
        grid={pairs: [None, 64]},
        tune={},
        cleared=["tune", "grid"],
        skip=[{"length": [64, 128], pairs: 64}],
        out=tmp_path,
    )
    assert [c.name for c in study.cells] == [
        "linear-L64-num_kv_pairs_null-s0",
        "linear-L128-num_kv_pairs_null-s0",
        "linear-L256-num_kv_pairs_null-s0",
        "linear-L256-num_kv_pairs64-s0",
    ]
    bounded = plan(
        "mqar",
        variants=["linear"],
        lengths=[64, 128, 256],
        seeds=[0],
        grid={pairs: [None, 64]},
        tune={},
        cleared=["tune", "grid"],
        skip=[{"length": "<=128", pairs: 64}],
        out=tmp_path,
    )
    assert [c.name for c in bounded.cells] == [c.name for c in study.cells]  # a bound: the same four cells
    with pytest.raises(ConfigError, match="'lenght' is not an axis of this study"):
        plan("mqar", variants=["linear"], lengths=[64], skip=[{"lenght": 64}], out=tmp_path)


def test_the_default_mqar_study_is_tuned_over_three_learning_rates_and_two_seeds(tmp_path):
    study = plan("mqar", out=tmp_path)
    ((key, lrs),) = study.tune
    assert key == LR and len(lrs) >= 3 and 3e-3 in lrs  # around experiment=mqar's own lr
    assert study.seeds == (0, 1)
    assert not plan("mqar", tune={}, cleared=["tune", "grid"], out=tmp_path).tune  # tune={} drops it


def test_the_default_mqar_study_covers_a_capacity_point_at_the_longest_length(tmp_path):
    """N = 64, 128, 256 at zoology's N/16 pairs, and 48 pairs (more than a head's 32 state dimensions of
    experiment=mqar's d_model 64 over 2 heads) at N >= 256 only; grid={} drops the point and its skip."""
    pairs = "task.data.builtin.num_kv_pairs"
    study = plan("mqar", variants=["linear"], seeds=[0], tune={}, cleared=["tune"], out=tmp_path)
    assert study.lengths == (64, 128, 256)
    assert [(c.length, dict(c.grid)[pairs]) for c in study.cells] == [
        (64, None),
        (128, None),
        (256, None),
        (256, 48),
    ]
    longer = plan(
        "mqar", variants=["linear"], lengths=[32, 512], seeds=[0], tune={}, cleared=["tune"], out=tmp_path
    )
    assert [(c.length, dict(c.grid)[pairs]) for c in longer.cells] == [(32, None), (512, None), (512, 48)]
    # at N = 128 alone the capacity point has no cell: no table block for it
    short = plan(
        "mqar", variants=["linear"], lengths=[128], seeds=[0], tune={}, cleared=["tune"], out=tmp_path / "s"
    )
    fake_run(short, short.cells[0], val=0.5, test=0.5)
    text = tables_text(short, collect(short, VAL), ACC)
    assert f"{pairs}=null" in text and f"{pairs}=48" not in text
    bare = plan(
        "mqar", variants=["linear"], seeds=[0], grid={}, tune={}, cleared=["grid", "tune"], out=tmp_path
    )
    assert not bare.grid and not bare.skip and [c.length for c in bare.cells] == [64, 128, 256]


# ---- selection ----------------------------------------------------------------------------------------
def test_the_tuned_value_is_chosen_on_validation_never_on_test(tmp_path):
    study = plan(
        "mqar",
        variants=["linear"],
        lengths=[32],
        seeds=[0, 1],
        tune={LR: [1e-3, 1e-2]},
        cleared=["grid"],
        out=tmp_path,
    )
    cells = by_name(study)
    # seed 0: validation prefers lr 1e-3, test would prefer 1e-2; seed 1 the other way round
    fake_run(study, cells["linear-L32-s0-lr0p001"], val=0.9, test=0.2)
    fake_run(study, cells["linear-L32-s0-lr0p01"], val=0.5, test=0.95)
    fake_run(study, cells["linear-L32-s1-lr0p001"], val=0.1, test=0.9)
    fake_run(study, cells["linear-L32-s1-lr0p01"], val=0.8, test=0.3)
    runs = collect(study, VAL)
    assert [r.selected for r in runs] == [True, False, False, True]
    outputs = write_outputs(study, runs, ACC, VAL)
    rows = read_csv(outputs["csv"])
    assert list(rows[0])[:10] == [
        "variant",
        "length",
        "seed",
        LR,
        "status",
        "partial",
        "stopped_by",
        "selected",
        "val/acc",
        "test/acc",
    ]
    assert [(r[LR], r["selected"]) for r in rows] == [
        ("0.001", "True"),
        ("0.01", "False"),
        ("0.001", "False"),
        ("0.01", "True"),
    ]
    md = outputs["md"].read_text()
    # the mean of the selected runs' TEST metric (0.2, 0.3), and the value each seed chose
    assert "| linear | 0.250 ± 0.071 [lr 0.001/0.01] |" in md
    assert "Tuned: task.module.lr in {0.001, 0.01}" in md and "validation, never test" in md


def test_selection_reads_the_validation_score_of_the_checkpoint_that_was_tested(tmp_path):
    """The test metric comes from the best checkpoint: the selection compares the same checkpoints'
    validation scores (best/val/acc), not the last validation, which can be a later, worse step's."""
    study = plan(
        "mqar",
        variants=["linear"],
        lengths=[32],
        seeds=[0],
        tune={LR: [1e-3, 1e-2]},
        cleared=["grid"],
        out=tmp_path,
    )
    cells = by_name(study)
    fake_run(study, cells["linear-L32-s0-lr0p001"], val=0.5, best_val=0.95, test=0.9)  # peaked, then fell
    fake_run(study, cells["linear-L32-s0-lr0p01"], val=0.8, best_val=0.8, test=0.7)
    assert [r.selected for r in collect(study, VAL)] == [True, False]


def test_runs_cut_short_are_marked_and_left_out_unless_allowed(tmp_path):
    study = plan(
        "mqar",
        variants=["linear"],
        lengths=[32, 64],
        seeds=[0],
        tune={LR: [1e-3, 1e-2]},
        cleared=["grid"],
        out=tmp_path,
    )
    cells = by_name(study)
    cut = {"steps_done": 90, "steps_planned": 400, "stopped_by": "max_time"}
    full = {"steps_done": 400, "steps_planned": 400, "stopped_by": "max_steps"}
    # L=32: the best validation is a run cut short; the complete one is chosen
    fake_run(study, cells["linear-L32-s0-lr0p001"], val=0.99, test=0.99, budget=cut)
    fake_run(study, cells["linear-L32-s0-lr0p01"], val=0.5, test=0.4, budget=full)
    # L=64: only runs cut short (one without a budget key would count as complete: see below)
    fake_run(study, cells["linear-L64-s0-lr0p001"], val=0.3, test=0.35, budget=cut)
    fake_run(
        study, cells["linear-L64-s0-lr0p01"], val=0.2, test=0.25, budget=cut | {"stopped_by": "interrupted"}
    )
    runs = collect(study, VAL)
    assert [(r.partial, r.selected) for r in runs] == [
        (True, False),
        (False, True),
        (True, False),
        (True, False),
    ]
    text = tables_text(study, runs, ACC)
    assert f"| linear | 0.400 [lr 0.01] | (0.350{DAGGER}) |" in text and "allow_partial=true" in text
    md = write_outputs(study, runs, ACC, VAL)["md"].read_text()
    assert "## Runs cut short" in md and "| linear-L32-s0-lr0p001 | max_time | no |" in md
    # the budget behind the figures, beside them
    assert "Budget: 400 training steps per run; 3 run(s) got fewer" in md

    allowed = plan(
        "mqar",
        variants=["linear"],
        lengths=[32, 64],
        seeds=[0],
        tune={LR: [1e-3, 1e-2]},
        allow_partial=True,
        cleared=["grid"],
        out=tmp_path,
    )
    runs = collect(allowed, VAL)
    assert [r.selected for r in runs] == [True, False, True, False]
    assert f"| linear | 0.990{DAGGER} [lr 0.001] | 0.350{DAGGER} [lr 0.001] |" in tables_text(
        allowed, runs, ACC
    )

    # results.json written before budgets were recorded: complete
    fake_run(study, cells["linear-L64-s0-lr0p01"], val=0.2, test=0.25)
    assert [r.selected for r in collect(study, VAL)][2:] == [False, True]


# ---- eval lengths, mean over an axis, the state view ------------------------------------------------
def test_eval_lengths_reach_every_run_and_get_a_column_each(tmp_path):
    study = plan(
        "mqar",
        variants=["multihead", "linear"],
        lengths=[64],
        seeds=[0],
        tune={},
        cleared=["tune", "grid"],
        eval_lengths=[256, 4096],
        out=tmp_path,
    )
    assert study.overrides[-1] == "task.eval_lengths=[256,4096]"  # to every run, recorded in launched.json
    cells = by_name(study)
    fake_run(study, cells["multihead-L64-s0"], val=0.9, test=0.95, evals={256: 0.4, 4096: 0.01})
    fake_run(study, cells["linear-L64-s0"], val=0.7, test=0.8, evals={256: 0.6, 4096: 0.5})
    runs = collect(study, VAL)
    outputs = write_outputs(study, runs, ACC, VAL)
    rows = read_csv(outputs["csv"])
    assert [(r["test/acc@256"], r["test/acc@4096"]) for r in rows] == [("0.4", "0.01"), ("0.6", "0.5")]
    md = outputs["md"].read_text()
    assert "| variant | trained at | @256 | @4096 |" in md
    assert "| multihead | 64 | 0.400 | 0.010 |" in md and "| linear | 64 | 0.600 | 0.500 |" in md
    png = outputs["extrapolation_png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "(extrapolation.png)" in md
    with pytest.raises(ConfigError, match="eval_lengths=\\[\\] is empty"):
        plan("mqar", variants=["linear"], eval_lengths=[], out=tmp_path)


def test_every_figure_carries_its_basis_seeds_budget_and_tuning(tmp_path, monkeypatch):
    """Under every plot of the study (and in study.md): the seeds behind each point, the budget the runs
    got, and how the learning rate was chosen, as set or tuned on validation."""
    import matplotlib.figure

    written: dict[str, list[str]] = {}
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *args, **kwargs):  # the figure-level texts (captions), by file
        written[Path(path).name] = [t.get_text() for t in fig.texts]
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    study = plan(
        "mqar", variants=["multihead"], lengths=[64], seeds=[0, 1], tune={}, cleared=["tune", "grid"],
        eval_lengths=[256], out=tmp_path,
    )  # fmt: skip
    full = {"steps_done": 400, "steps_planned": 400, "stopped_by": "max_steps"}
    for cell, test in zip(study.cells, (0.9, 0.7), strict=True):
        fake_run(study, cell, val=test, test=test, evals={256: test / 2}, budget=full, lr=3e-3)
    outputs = write_outputs(study, collect(study, VAL), ACC, VAL)
    caption = (
        "mean ± sd over seeds 0, 1 · 400 training steps per run; every run got them · "
        "not tuned: task.module.lr 0.003 as set"
    )
    for png in ("study.png", "state.png", "extrapolation.png"):
        assert caption in written[png], (png, written[png])
    assert "Not tuned: task.module.lr 0.003 as set." in outputs["md"].read_text()

    tuned = plan(
        "mqar", variants=["linear"], lengths=[32], seeds=[0], tune={LR: [1e-3, 1e-2]}, cleared=["grid"],
        out=tmp_path / "tuned",
    )  # fmt: skip
    for cell, lr in zip(tuned.cells, (1e-3, 1e-2), strict=True):
        fake_run(tuned, cell, val=lr, test=0.5, budget=full, lr=lr)
    runs = collect(tuned, VAL)
    assert basis_caption(tuned, runs, VAL) == (
        "one seed (0) · 400 training steps per run; every run got them · tuned on validation "
        "(val/acc, never test): task.module.lr in {0.001, 0.01}"
    )


def test_the_state_plot_has_a_panel_per_test_length(tmp_path):
    """Recall at each test length against the decoding state measured there (a KV cache grows with the
    test length, a recurrent state does not): one panel for the training length, one per test length."""
    study = plan(
        "mqar",
        variants=["multihead", "linear"],
        lengths=[64],
        seeds=[0],
        tune={},
        cleared=["tune", "grid"],
        eval_lengths=[256, 4096],
        out=tmp_path,
    )
    cells = by_name(study)
    fake_run(
        study,
        cells["multihead-L64-s0"],
        val=0.9,
        test=0.95,
        evals={256: 0.4, 4096: 0.01},
        state=8192,
        states={256: 32768, 4096: 524288},
    )
    fake_run(
        study,
        cells["linear-L64-s0"],
        val=0.7,
        test=0.8,
        evals={256: 0.6, 4096: 0.5},
        state=1024,
        states={256: 1024, 4096: 1024},
    )
    png = write_outputs(study, collect(study, VAL), ACC, VAL)["state_png"].read_bytes()
    width = int.from_bytes(png[16:20], "big")  # the PNG header's width: 5.5 inches a panel at 110 dpi
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width == round(3 * 5.5 * 110)


def test_grid_blocks_mean_over_an_axis_and_the_state_plot(tmp_path):
    study = plan(
        "mqar",
        variants=["multihead", "linear"],
        lengths=[32],
        seeds=[0],
        grid={"model.d_model": [16, 32]},
        tune={},
        cleared=["tune", "grid"],
        mean_over="model.d_model",
        out=tmp_path,
    )
    cells = by_name(study)
    for name, test, state in (
        ("multihead-L32-d_model16-s0", 0.5, 4096),
        ("multihead-L32-d_model32-s0", 0.7, 8192),
        ("linear-L32-d_model16-s0", 0.2, 1024),
        ("linear-L32-d_model32-s0", 0.6, 4096),
    ):
        fake_run(study, cells[name], val=test, test=test, state=state)
    outputs = write_outputs(study, collect(study, VAL), ACC, VAL)
    md = outputs["md"].read_text()
    assert "### model.d_model=16" in md and "### model.d_model=32" in md
    assert "| variant | L=32 | train tokens/s @32 | peak memory MB @32 | attention FLOPs/token @32 |" in md
    assert "decode state bytes @32 | parameters @32 |" in md
    assert "## Mean over model.d_model" in md
    assert (
        "| multihead | 32 | 0.5 | 0.7 | **0.600** |" in md and "| linear | 32 | 0.2 | 0.6 | **0.400** |" in md
    )
    assert [r["model.d_model"] for r in read_csv(outputs["csv"])] == ["16", "32", "16", "32"]
    for key in ("state_png", "study_png"):
        assert outputs[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="mean_over=model.heads: not a grid axis"):
        plan("mqar", variants=["linear"], grid={"model.d_model": [16]}, mean_over="model.heads", out=tmp_path)


# ---- the zoology preset: composed, never run here -----------------------------------------------------
def test_the_zoology_preset_composes_figure_2s_grid(tmp_path):
    from hydra import compose, initialize_config_module

    from attnlab.config.sequence_lengths import resolve_max_len
    from attnlab.study.plan import CELL_GROUP, shared_overrides, write_cell_configs

    study = plan("mqar", variants=["multihead", "based"], overrides=["experiment=zoology_mqar"], out=tmp_path)
    assert study.lengths == (64, 128, 256, 512) and study.seeds == (0,)
    assert study.grid == (("model.d_model", (64, 128, 256, 512)),)
    ((key, lrs),) = study.tune
    assert key == LR and len(lrs) == 4
    for lr, expected in zip(lrs, [10 ** (-4 + 2 * i / 3) for i in range(4)], strict=True):
        assert math.isclose(lr, expected, rel_tol=0.01)  # numpy.logspace(-4, -2, 4)
    assert study.overrides == ("experiment=zoology_mqar",)  # the mqar block's CPU preset is replaced
    assert len(study.cells) == 2 * 4 * 4 * 4
    cell = next(c for c in study.cells if c.length == 512 and dict(c.grid)["model.d_model"] == 256)
    cells_dir = write_cell_configs(study, [cell], tmp_path / ".cells")
    argv = [*shared_overrides(study, cells_dir, wandb_group=False), f"+{CELL_GROUP}={cell.name}"]
    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=argv)  # trainer=gpu: the run's checks need a GPU
    resolve_max_len(cfg)  # model.max_len=null -> the rows' length, as check_config does first
    builtin = cfg.task.data.builtin
    assert (builtin.seq_len, builtin.num_kv_pairs, builtin.vocab_size) == (512, 64, 8192)
    assert cfg.task.data.batch_size == 128 and cfg.model.max_len == 512
    assert (cfg.model.d_model, cfg.model.decoder_layers, cfg.model.heads) == (256, 2, 1)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_epochs == 64
    assert cfg.attention.name == "multihead" and cfg.task.module.lr == lrs[0]


# ---- end to end ---------------------------------------------------------------------------------------
TINY_MQAR = [
    "logger=csv",
    "hydra/launcher=basic",
    "model.heads=2",
    "model.decoder_layers=1",
    "task.data.builtin.vocab_size=64",
    "task.data.builtin.n_train=64",
    "task.data.builtin.n_validation=16",
    "task.data.builtin.n_test=16",
    "task.data.batch_size=8",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "callbacks.cost.warmup_steps=1",
]


@pytest.mark.slow
def test_a_tiny_grid_and_tune_on_mqar_runs_selects_and_resumes(tmp_path, capfd):
    out = tmp_path / "study"
    argv = ["task=mqar", f"out={out}", "variants=[linear]", "lengths=[32]", "seeds=[0]"]
    argv += ["grid={}", "grid.model.d_model=[16,32]", "tune.task.module.lr=[1e-3,1e-2]", *TINY_MQAR]
    argv += [f"paths.data_cache={tmp_path / 'cache'}"]
    assert main(argv) == 0
    err = capfd.readouterr().err
    assert "4 cells (1 variants × 1 lengths × 2 grid points × 1 seeds × 2 tuned values)" in err
    assert "study: 4/4 cells finished" in err
    rows = read_csv(out / "study.csv")
    assert [(r["model.d_model"], r[LR]) for r in rows] == [
        ("16", "0.001"),
        ("16", "0.01"),
        ("32", "0.001"),
        ("32", "0.01"),
    ]
    for width in ("16", "32"):
        pair = [r for r in rows if r["model.d_model"] == width]
        assert sum(r["selected"] == "True" for r in pair) == 1
        best = max(pair, key=lambda r: float(r["val/acc"]))  # first on ties, as the study
        assert best["selected"] == "True"
    assert float(rows[2]["parameters"]) > float(rows[0]["parameters"])  # wider model, more parameters
    assert float(rows[2]["decode_state_bytes"]) > float(rows[0]["decode_state_bytes"])
    assert (out / "state.png").exists() and "### model.d_model=32" in (out / "study.md").read_text()

    assert main(argv) == 0  # nothing left to run
    assert "skipped 4 finished cell(s); running 0" in capfd.readouterr().err


def test_preflight_composes_one_cell_per_point_and_per_tuned_value(tmp_path):
    from attnlab.study.plan import representative_cells

    study = plan(
        "mqar", variants=["linear", "local"], lengths=[32, 64], seeds=[0, 1], cleared=["grid"], out=tmp_path
    )
    picked = representative_cells(study)
    assert len(study.cells) == 2 * 2 * 2 * 3 and len(picked) == 2 * 2 + 2
    assert {c.tune for c in picked} == {((LR, lr),) for _, lrs in study.tune for lr in lrs}
    small = plan(
        "mqar",
        variants=["linear"],
        lengths=[32],
        seeds=[0],
        tune={LR: [1e-3]},
        cleared=["grid"],
        out=tmp_path,
    )
    assert preflight_cells(small).task.module.lr == 1e-3


def test_a_hybrid_is_a_variant_of_the_study(tmp_path):
    """variants=[gated_deltanet*3+multihead]: the cell runs model.layers=[...], its attention the first
    layer's variant, its name and directory a file-safe form of the pattern label."""
    from attnlab.study.plan import cell_config, plan, preflight_cells

    spec = plan(
        "mqar",
        variants=["gated_deltanet*3+multihead", "multihead"],
        lengths=[32],
        seeds=[0],
        cleared=["grid"],
        out=tmp_path,
    )
    hybrid = next(c for c in spec.cells if c.variant == "gated_deltanet*3+multihead")
    assert hybrid.name.startswith("gated_deltanetx3+multihead-L32-s0")
    text = cell_config(spec, hybrid)
    assert "override /attention: gated_deltanet" in text and "- gated_deltanet*3\n  - multihead" in text
    cfg = preflight_cells(spec)
    assert cfg.task.name == "mqar"


def test_a_depth_axis_draws_the_haystack_heat_map(tmp_path):
    """task=passkey's study block: a grid over the test split's depth and test lengths -> haystack.png
    from the selected runs, one cell per (test length, depth); the block's eval_lengths reach every run."""
    from attnlab.study.haystack import study_rows

    study = plan("passkey", variants=["multihead", "linear"], out=tmp_path)
    assert study.eval_lengths == (256, 1024, 4096) and "task.eval_lengths=[256,1024,4096]" in study.overrides
    for cell in study.cells:
        depth = dict(cell.grid)["task.data.builtin.test_depth"]
        good = 1.0 if cell.variant == "multihead" else 0.1
        fake_run(study, cell, val=good, test=good, evals={256: good, 1024: good * depth, 4096: 0.0})
    runs = collect(study, VAL)
    rows = study_rows(study, runs)
    assert len(rows) == 2 * 3 * 3  # variants x depths x test lengths (256 is the training length)
    assert (("multihead", 1024, 0.5, 0.5)) in [tuple(r) for r in rows]
    outputs = write_outputs(study, runs, ACC, VAL)
    assert outputs["haystack_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(haystack.png)" in outputs["md"].read_text()
    no_depth = plan(
        "mqar",
        variants=["linear"],
        lengths=[64],
        seeds=[0],
        tune={},
        cleared=["tune", "grid"],
        out=tmp_path / "m",
    )
    assert study_rows(no_depth, collect(no_depth, VAL)) == []


def test_test_lengths_past_max_len_with_the_positional_scheme_as_an_axis_pass_preflight(tmp_path):
    """grid.model.positional=[rope,none] with eval_lengths past model.max_len: every cell can test there;
    the axes' key check composes without the test lengths (it refused the long-context study before)."""
    study = plan(
        "mqar",
        variants=["linear"],
        lengths=[64],
        seeds=[0],
        grid={"model.positional": ["rope", "none"]},
        tune={},
        cleared=["tune", "grid"],
        eval_lengths=[64, 512],
        out=tmp_path,
    )
    assert preflight_cells(study).model.positional == "rope"
    sinusoidal = plan(
        "mqar", variants=["linear"], lengths=[64], seeds=[0], tune={}, cleared=["tune", "grid"],
        eval_lengths=[64, 512], out=tmp_path / "s",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="past the sinusoidal position table"):
        preflight_cells(sinusoidal)


def test_a_wandb_failure_at_the_end_is_one_warning_and_keeps_the_files_and_status(
    tmp_path, capfd, monkeypatch
):
    """Every run finished: a tracking error (the default study's mixed axis column once) is a one-line
    warning, study.md is written and the exit status stays 0 — no traceback."""
    import attnlab.study.cli as cli

    study = plan(
        "mqar", variants=["linear"], lengths=[32], seeds=[0], tune={}, cleared=["tune", "grid"], out=tmp_path
    )
    fake_run(study, study.cells[0], val=0.5, test=0.5)

    def broken(*args, **kwargs):
        raise TypeError("Data row contained incompatible types:\nKey 'x'")

    monkeypatch.setattr(cli, "track_study", broken)
    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = [
        "task=mqar",
        f"out={tmp_path}",
        "variants=[linear]",
        "lengths=[32]",
        "seeds=[0]",
        "tune={}",
        "grid={}",
    ]
    assert main(argv) == 0
    err = capfd.readouterr().err
    assert "warning: wandb could not log the study (TypeError: Data row contained incompatible types:)" in err
    assert "Traceback" not in err and (tmp_path / "study.md").exists()
