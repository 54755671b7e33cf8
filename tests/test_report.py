"""`python -m attnlab.report`: joining runs, the Pareto front, report.md/report.png, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnlab.report import COSTS, Run, dominates, main, mark_pareto_front, report


def write_run(
    directory: Path,
    name: str,
    acc: float,
    flops: float,
    tokens_per_s: float,
    *,
    task="classify",
    status="ok",
    **extra,
):
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "status": status, "task": task, "primary_metric": "test/acc", "primary_mode": "max",
        "metrics": {"test/acc": acc, "val/acc": acc},
        "cost": {"train_tokens_per_s": tokens_per_s, "step_time_s": 0.05, "peak_memory_mb": flops / 1000,
                 "peak_memory_kind": "cpu_rss", "attention_flops_per_token": flops},
        "attention": {"name": name, "complexity": "?", "params": {}, "capabilities": {}, "exact": name == "multihead"},
        "max_len": 512, "seed": 0, "run_dir": str(directory), "config": {},
        "budget": {"steps_done": 100, "steps_planned": 100, "stopped_by": "max_steps"},
        **extra,
    }  # fmt: skip
    (directory / "results.json").write_text(json.dumps(data))
    return directory


def fronts(result) -> dict[str, bool]:
    return {run.variant: run.on_front for run in result["runs"] if run.ok}


def test_report_joins_runs_and_marks_the_pareto_front(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "sweep"
    write_run(sweep / "0", "multihead", acc=0.80, flops=400_000, tokens_per_s=1000)  # best quality
    write_run(sweep / "1", "linear", acc=0.70, flops=100_000, tokens_per_s=4000)  # cheapest
    write_run(sweep / "2", "performer", acc=0.65, flops=150_000, tokens_per_s=3000)  # dominated by linear
    write_run(sweep / "3", "local", acc=0.75, flops=200_000, tokens_per_s=900)  # in between: on the front
    write_run(
        sweep / "4",
        "nystrom",
        acc=0.0,
        flops=1.0,
        tokens_per_s=1.0,
        status="failed",
        error="NaN loss at step 3",
    )
    other = write_run(
        tmp_path / "outputs" / "run", "full", acc=0.80, flops=800_000, tokens_per_s=500
    )  # tied acc, dearer

    out = tmp_path / "report"
    result = report([str(sweep), str(other / "results.json")], out=str(out))
    assert len(result["runs"]) == 6
    assert fronts(result) == {
        "multihead": True, "linear": True, "performer": False, "local": True, "full": False,
    }  # fmt: skip

    markdown = (out / "report.md").read_text()
    assert "## classify: test/acc (higher is better)" in markdown
    assert "| ★ | linear | 0.7 |" in markdown and "|  | performer | 0.65 |" in markdown
    assert "## Failures" in markdown and "nystrom" in markdown and "NaN loss at step 3" in markdown
    assert (out / "report.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "failed runs" in printed

    # cost = train tokens/s, where higher is better: local (900 tok/s, 0.75) is now dominated by
    # multihead (1000 tok/s, 0.80), and the front is multihead and linear
    result = report([str(sweep), str(other)], cost="tokens_per_s", out=str(out))
    assert fronts(result) == {
        "multihead": True,
        "linear": True,
        "performer": False,
        "local": False,
        "full": False,
    }


def test_front_is_per_task_and_respects_min_metrics(tmp_path):
    write_run(tmp_path / "a", "multihead", acc=0.9, flops=10, tokens_per_s=1)
    write_run(
        tmp_path / "b", "linear", acc=0.1, flops=20, tokens_per_s=1, task="translate"
    )  # alone in its task
    runs = [Run(p, json.loads(p.read_text())) for p in sorted(tmp_path.rglob("results.json"))]
    mark_pareto_front(runs, COSTS["flops"])
    assert [r.on_front for r in runs] == [True, True]

    loss = {
        "status": "ok",
        "task": "lm",
        "primary_metric": "loss",
        "primary_mode": "min",
        "attention": {"name": "x"},
    }
    low = Run(Path("low"), {**loss, "metrics": {"loss": 1.0}, "cost": {"attention_flops_per_token": 5.0}})
    high = Run(Path("high"), {**loss, "metrics": {"loss": 2.0}, "cost": {"attention_flops_per_token": 5.0}})
    mark_pareto_front([low, high], COSTS["flops"])
    assert (low.on_front, high.on_front) == (True, False)
    assert dominates((1.0, 1.0), (1.0, 2.0)) and not dominates((1.0, 1.0), (1.0, 1.0))


def test_default_out_dir_is_the_first_path(tmp_path):
    write_run(tmp_path / "sweep" / "0", "multihead", acc=0.8, flops=10, tokens_per_s=1)
    assert main([str(tmp_path / "sweep")]) == 0
    assert (tmp_path / "sweep" / "report.md").exists() and (tmp_path / "sweep" / "report.png").exists()


def test_a_path_without_results_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no results.json under") and err.count("\n") == 1 and "Traceback" not in err
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: unknown cost axis
        main([str(tmp_path), "--cost", "speed"])


def test_the_length_column_shows_the_data_s_real_tokens_per_example(tmp_path):
    measured = write_run(tmp_path / "a", "linear", acc=0.7, flops=1e5, tokens_per_s=1000)
    data = json.loads((measured / "results.json").read_text())
    data["cost"] |= {"seq_len_mean": 97.4, "seq_len_max": 128}
    (measured / "results.json").write_text(json.dumps(data))
    write_run(tmp_path / "b", "full", acc=0.8, flops=4e5, tokens_per_s=500)  # recorded before: max_len only
    report([str(tmp_path)], out=str(tmp_path / "out"))
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "tokens/example (mean/max)" in markdown
    assert "| 97/128 |" in markdown and "| ≤512 |" in markdown


def test_plot_labels_of_nearby_runs_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attnlab.report import _text_box, label_points

    fig, ax = plt.subplots(figsize=(6, 4.5))
    points = [(f"variant{i}(k={i})", 1e5 + 500 * i, 0.7 + 0.001 * (i % 3)) for i in range(8)] + [
        ("multihead", 4e5, 0.8)
    ]
    ax.scatter([p[1] for p in points], [p[2] for p in points])
    fig.tight_layout()
    label_points(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = [_text_box(t, renderer) for t in ax.texts]  # the text, not its leader line
    assert len(boxes) == len(points)
    panel = ax.get_window_extent(renderer)
    for i, box in enumerate(boxes):
        assert panel.x0 <= box.x0 and box.x1 <= panel.x1, ax.texts[i].get_text()
        assert not any(box.overlaps(other) for other in boxes[i + 1 :]), ax.texts[i].get_text()
    plt.close(fig)


def test_decoding_speed_is_a_column_where_the_task_decodes_and_a_cost_axis(tmp_path):
    for i, (name, bleu, speed) in enumerate(
        [("multihead", 0.9, 800.0), ("linear", 0.8, 1200.0), ("local", 0.7, 600.0)]
    ):
        run_dir = write_run(
            tmp_path / f"t{i}", name, acc=bleu, flops=1e5, tokens_per_s=1000, task="translate"
        )
        data = json.loads((run_dir / "results.json").read_text())
        data["cost"] |= {"decode_tokens_per_s": speed, "decode_beam": 4}
        (run_dir / "results.json").write_text(json.dumps(data))
    write_run(tmp_path / "c", "multihead", acc=0.5, flops=1e5, tokens_per_s=1000)  # classify: nothing decoded
    result = report([str(tmp_path)], cost="decode_tokens_per_s", out=str(tmp_path / "out"))
    markdown = (tmp_path / "out" / "report.md").read_text()
    sections = {part.split(":")[0]: part for part in markdown.split("## ")[1:]}
    assert "decode tokens/s (beam)" in sections["translate"] and "| 1,200 (4) |" in sections["translate"]
    assert "decode tokens/s" not in sections["classify"]
    # the front on (quality, decode speed): local is slower and worse than multihead
    translate = {run.variant: run.on_front for run in result["runs"] if run.task == "translate"}
    assert translate == {"multihead": True, "linear": True, "local": False}


def test_partial_runs_are_marked_and_left_off_the_front_unless_allowed(tmp_path, capsys):
    cut = {"steps_done": 460, "steps_planned": 2300, "stopped_by": "max_time"}
    early = {"steps_done": 1200, "steps_planned": 2300, "stopped_by": "early_stopping"}
    write_run(tmp_path / "a", "multihead", acc=0.80, flops=400_000, tokens_per_s=1000)
    write_run(tmp_path / "b", "linear", acc=0.70, flops=100_000, tokens_per_s=4000, budget=cut)  # cheapest
    write_run(tmp_path / "c", "local", acc=0.75, flops=200_000, tokens_per_s=900, budget=early)
    write_run(tmp_path / "d", "performer", acc=0.60, flops=150_000, tokens_per_s=3000)  # dominated by b only
    write_run(
        tmp_path / "e",
        "full",
        acc=0.9,
        flops=50_000,
        tokens_per_s=1,
        budget=cut | {"stopped_by": "interrupted"},
    )

    result = report([str(tmp_path)], out=str(tmp_path / "out"))
    runs = {run.variant: run for run in result["runs"]}
    assert {v: r.partial for v, r in runs.items()} == {
        "multihead": False, "linear": True, "local": False, "performer": False, "full": True,
    }  # fmt: skip
    # without the two cut runs, performer (dominated only by linear) is back on the front; early
    # stopping is a planned end, so local keeps its place
    assert fronts(result) == {
        "multihead": True, "linear": False, "local": True, "performer": True, "full": False,
    }  # fmt: skip
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| tokens/example (mean/max) | steps | seed |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "|---" not in line][1:]
    assert [row.split(" | ")[1] for row in rows[-2:]] == ["full", "linear"]  # partial runs last
    linear = next(row for row in rows if "| linear |" in row)
    assert "⚠ 460/2,300 max_time" in linear
    local = next(row for row in rows if "| local |" in row)
    assert "1,200/2,300 early_stopping" in local and "⚠" not in local
    multihead = next(row for row in rows if "| multihead |" in row)
    assert "| 100 |" in multihead
    assert "2 partial run(s)" in markdown and "left off the Pareto front" in markdown
    assert "2 partial run(s)" in capsys.readouterr().out

    # --allow-partial: the cut runs compete again (full dominates everything it is cheaper than)
    assert main([str(tmp_path), "--out", str(tmp_path / "all"), "--allow-partial"]) == 0
    allowed = report([str(tmp_path)], out=str(tmp_path / "all"), allow_partial=True)
    assert fronts(allowed) == {
        "multihead": False, "linear": False, "local": False, "performer": False, "full": True,
    }  # fmt: skip
    assert "ranked with the rest" in (tmp_path / "all" / "report.md").read_text()


def test_results_without_a_budget_count_as_complete(tmp_path):
    run_dir = write_run(tmp_path / "old", "linear", acc=0.7, flops=1e5, tokens_per_s=1000)
    data = json.loads((run_dir / "results.json").read_text())
    del data["budget"]  # written before budgets were recorded
    (run_dir / "results.json").write_text(json.dumps(data))
    result = report([str(tmp_path)], out=str(tmp_path / "out"))
    (run,) = result["runs"]
    assert not run.partial and run.on_front
    assert "| ≤512 | - | 0 |" in (tmp_path / "out" / "report.md").read_text()


def test_runs_that_differ_beyond_variant_and_seed_say_where_and_the_shared_basis_is_printed(tmp_path, capsys):
    """A grid's runs are told apart by the config keys that differ (paths, names and the variant's own
    keys are not such keys); the learning rate and batch every run shares stand beside the table."""

    def config(shift: bool, run: str, lr: float = 0.003) -> dict:
        return {
            "model": {"token_shift": shift, "d_model": 64},
            "task": {"module": {"lr": lr}, "data": {"batch_size": 64}, "datamodule": {"cache_dir": run}},
            "paths": {"run_dir": run}, "run_name": run, "attention": {"name": "linear"},
            "callbacks": {"checkpoint": {"dirpath": run}, "resume": {"seed": 0}},
        }  # fmt: skip

    write_run(tmp_path / "a", "linear", 0.5, 10, 1, config=config(True, "a"))
    write_run(tmp_path / "b", "linear", 0.2, 10, 1, config=config(False, "b"))
    report([str(tmp_path)])
    markdown = (tmp_path / "report.md").read_text()
    assert "| steps | seed | config that differs |" in markdown
    assert "| 0.5 |" in markdown and "| 100 | 0 | model.token_shift=true |" in markdown
    assert "| 100 | 0 | model.token_shift=false |" in markdown
    assert "Every run of classify: `task.module.lr=0.003, task.data.batch_size=64`." in markdown
    assert "every run of classify: task.module.lr=0.003, task.data.batch_size=64" in capsys.readouterr().out

    write_run(tmp_path / "b", "linear", 0.2, 10, 1, config=config(True, "b", lr=0.001))  # lr differs
    report([str(tmp_path)])
    markdown = (tmp_path / "report.md").read_text()
    assert (
        "| 100 | 0 | task.module.lr=0.001 |" in markdown and "| 100 | 0 | task.module.lr=0.003 |" in markdown
    )
    assert "Every run of classify: `task.data.batch_size=64`." in markdown

    write_run(tmp_path / "b", "linear", 0.2, 10, 1, config=config(True, "b"))  # only bookkeeping differs
    report([str(tmp_path)])
    assert "config that differs" not in (tmp_path / "report.md").read_text()


def test_keys_only_some_runs_recorded_are_named_not_listed_as_differences(tmp_path):
    """Results written by another attnlab version lack its newer keys: they are counted apart, not shown
    as `key=-` in every row; results without any config are left out of the comparison."""
    old = {"model": {"d_model": 64}, "task": {"module": {"lr": 0.001}}}
    new = {
        "model": {"d_model": 64, "positional": "rope", "token_shift": False},
        "task": {"module": {"lr": 0.001}},
    }
    write_run(tmp_path / "a", "linear", 0.5, 10, 1, config=old)
    write_run(tmp_path / "b", "multihead", 0.6, 20, 1, config=new)
    write_run(tmp_path / "c", "local", 0.4, 15, 1)  # config {}: recorded before configs were
    report([str(tmp_path)])
    markdown = (tmp_path / "report.md").read_text()
    assert "config that differs" not in markdown and "=-" not in markdown
    assert (
        "2 config key(s) recorded by only some runs (other attnlab versions) are not compared: " in markdown
    )
    assert "model.positional, model.token_shift." in markdown
    assert "Every run of classify: `task.module.lr=0.001`." in markdown
