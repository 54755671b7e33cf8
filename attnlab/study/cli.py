"""`python -m attnlab.study key=value ...`: plan, check, run the missing cells, collect, draw."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from attnlab.config.fields import checked_values
from attnlab.config.study_schema import StudyArgs
from attnlab.errors import AttnlabError, ConfigError
from attnlab.study import collect, launch, plan
from attnlab.study.select import Monitor

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 130
STUDY_ARGS = tuple(f.name for f in fields(StudyArgs))  # the study's own keys, typed and checked there
AXIS_ARGS = ("grid", "tune")  # grid.<key>=[...], tune.<key>=[...]; grid={} / tune={} drop the task's

USAGE = """usage: python -m attnlab.study task=NAME [variants=[a,b]] [lengths=[64,128]] [seeds=[0,1]]
                                [grid.KEY=[..]] [tune.KEY=[..]] [eval_lengths=[..]] [out=DIR] [OVERRIDE ...]

The accuracy-vs-length study in one command: every variant × length × grid point × seed × tuned
value is one run of `python -m attnlab`, all in one Hydra multirun, then DIR/study.csv (one row per
run), DIR/study.md (per grid point: variant × length, mean ± std over seeds, cost, decoding state and
parameter columns), DIR/study.png, DIR/state.png (metric against decoding-state bytes) and, with
eval_lengths, DIR/extrapolation.png.

  task=NAME          a task with a study: block in conf/task/NAME.yaml (it says how a length becomes overrides)
  variants=[..]      attention variants (default: the task's study.variants)
  lengths=[..]       sequence lengths (default: the task's study.lengths)
  seeds=[..]         seeds per cell (default: the task's study.seeds)
  grid.KEY=[..]      any config key as an axis, crossed with the rest (default: the task's study.grid)
  tune.KEY=[..]      every value runs; each cell reports the run with the best VALIDATION metric
                     (the task's monitor), never chosen on test (default: the task's study.tune)
  grid={} tune={}    drop the task's default axes
  eval_lengths=[..]  every run also tests its weights at these lengths (task.eval_lengths): one column each
  allow_partial=true runs cut short (time guard, Ctrl-C, NaN; marked †) count in means and selections
  mean_over=KEY      a grid key averaged per variant in study.md (default: the task's study.mean_over)
  skip=[{..}]        cells left out, e.g. skip=[{length:64,task.data.builtin.num_kv_pairs:64}]
  out=DIR            the study's directory (default: studies/<task>/); runs go to
                     DIR/runs/<variant>-L<length>[-<grid>]-s<seed>[-<tuned>]
  OVERRIDE           any other override goes to every run, after the task's study.overrides:
                     trainer.max_steps=500  logger=csv  hydra/launcher=parallel  hydra/launcher=slurm

Rerunning the same command runs only the runs without a finished result (failed ones are retried).
Exit status: 0 when every run finished, 2 when one failed or the input is wrong.

  python -m attnlab.study task=mqar variants=[multihead,linear,performer,local] lengths=[64,128,256] seeds=[0,1] out=studies/mqar
  python -m attnlab.study task=mqar grid.model.d_model=[64,128,256] tune.task.module.lr=[1e-3,3e-3,1e-2]
  python -m attnlab.study task=mqar lengths=[256] grid.task.data.builtin.num_kv_pairs=[8] grid.model.positional=[rope,none] eval_lengths=[256,1024,4096]
"""


# ---- the command line ----------------------------------------------------------------------------
def parse(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """(the study's own keys, the overrides passed to every run); one-line errors for what cannot work."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    own: dict[str, Any] = {}
    passed: list[str] = []
    for arg in argv:
        if arg.startswith("-"):
            raise ConfigError(
                f"{arg}: the study takes key=value arguments only (it always runs a multirun; no -m); "
                "see python -m attnlab.study --help"
            )
        try:
            (override,) = OverridesParser.create().parse_overrides([arg])
        except HydraException as err:
            raise ConfigError(
                f"cannot parse '{arg}': {' '.join(str(err).split())}; write key=value"
            ) from None
        key = override.key_or_group
        if key in STUDY_ARGS:
            own[key] = override.value()
            continue
        kind, dot, rest = key.partition(".")
        if kind in AXIS_ARGS:
            parse_axis(own, kind, rest if dot else None, override.value(), arg)
            continue
        check_passed_override(key, arg, override.is_sweep_override())
        passed.append(arg)
    if "task" not in own:
        raise ConfigError(
            f"no task given; choose task= one of {', '.join(plan.tasks_with_study()) or '(none)'}, e.g. "
            "python -m attnlab.study task=classify"
        )
    for key in ("variants", "lengths", "seeds", "eval_lengths"):
        value = own.get(key)
        if value is not None and not isinstance(value, list):
            own[key] = list(value.list) if hasattr(value, "list") else [value]  # x=a or x=a,b
    checked_values(StudyArgs, own)  # each key by its declared check, before anything is composed
    return own, passed


def parse_axis(own: dict[str, Any], kind: str, key: str | None, value: Any, arg: str) -> None:
    """`grid.<key>=[...]` into own["grid"][key]; `grid={}` (or a mapping) replaces the task's axes."""
    from attnlab.study.axes import plain

    value = plain(value)
    if key is None:
        if not isinstance(value, dict):
            raise ConfigError(
                f"{arg}: give one axis per argument, {kind}.<key>=[values] (e.g. {kind}.model.d_model=[64,128]), "
                f"or {kind}={{}} to drop the task's default {kind} axes"
            )
        own.setdefault("cleared", []).append(kind)
        own.setdefault(kind, {}).update(value)
        return
    own.setdefault(kind, {})[key] = value


def check_passed_override(key: str, arg: str, is_sweep: bool) -> None:
    bare = key.lstrip("+~")
    if bare == "attention" or bare == "seed":
        plural = {"attention": "variants", "seed": "seeds"}[bare]
        raise ConfigError(f"{arg}: the study sets {bare} per cell; list them with {plural}=[...] instead")
    if bare == "task.eval_lengths":
        raise ConfigError(
            f"{arg}: give the study eval_lengths=[...] instead; it passes them to every run and adds a column "
            "per test length"
        )
    if bare.startswith(("hydra.sweep.", "hydra.searchpath", "paths.run_dir", "hydra.run.")):
        raise ConfigError(f"{arg}: the study places every run under out=DIR; drop {bare}")
    if is_sweep:
        raise ConfigError(
            f"{arg}: an override passed through applies to every run, so it cannot sweep; make it an axis, "
            f"grid.{bare}=[...] (reported per value) or tune.{bare}=[...] (the best on validation per cell)"
        )


# ---- the study -----------------------------------------------------------------------------------
def study(argv: Sequence[str]) -> int:
    """Run the study `argv` describes; the exit status (0 all cells finished, 2 some failed)."""
    own, passed = parse(argv)
    spec = plan.plan(
        str(own["task"]),
        variants=own.get("variants"),
        lengths=own.get("lengths"),
        seeds=own.get("seeds"),
        overrides=passed,
        out=own.get("out"),
        grid=own.get("grid"),
        tune=own.get("tune"),
        cleared=own.get("cleared", ()),
        mean_over=None if own.get("mean_over") is None else str(own["mean_over"]),
        eval_lengths=own.get("eval_lengths"),
        allow_partial=own.get("allow_partial", False),
        skip=own.get("skip"),
    )
    first = plan.preflight_cells(spec)
    use_wandb = "wandb" in (first.get("logger") or {})
    state = launch.todo(spec)
    for line in launch.describe(spec, state):
        print(line, file=sys.stderr)
    spec.out.mkdir(parents=True, exist_ok=True)
    interrupted = False
    try:
        launch.launch(spec, state.to_run, wandb_group=use_wandb, resume=state.resume)
    except KeyboardInterrupt:
        interrupted = True
    monitor = Monitor(str(first.task.monitor), str(first.task.monitor_mode) != "min")
    cells = collect.collect(spec, monitor)
    default = collect.Metric(str(first.task.primary_metric), str(first.task.monitor_mode) != "min")
    metric = collect.metric_of(cells, default)
    outputs = write_outputs(spec, cells, metric, monitor)
    if use_wandb and not interrupted:
        project = str(first.logger.wandb.get("project") or "attnlab")
        try:
            wandb_dir = track_study(spec, cells, metric, monitor, project, outputs)
            print(f"wandb: the study's table and plot in {wandb_dir} (group {spec.group})", file=sys.stderr)
        except Exception as error:  # the study's files are written: a tracking failure must not lose them
            print(
                f"warning: wandb could not log the study ({type(error).__name__}: {str(error).splitlines()[0]}); "
                f"its files are in {spec.out} (logger=csv skips wandb)",
                file=sys.stderr,
            )
    print(collect.tables_text(spec, cells, metric))
    failed = collect.failures(cells)
    for cell in failed:
        print(f"  {cell.status} {cell.cell.name}: {cell.message}  ({cell.run_dir})", file=sys.stderr)
    for cell in collect.partial_runs(cells):
        counted = "counted (allow_partial=true)" if spec.allow_partial else "left out of means and selections"
        print(f"  cut short {cell.cell.name}: stopped by {cell.stopped_by}; {counted}", file=sys.stderr)
    done = len(cells) - len(failed)
    print(
        f"study: {done}/{len(cells)} cells finished, {len(failed)} failed or missing; wrote "
        + ", ".join(str(p) for p in outputs.values() if p is not None),
        file=sys.stderr,
    )
    if interrupted:
        print("interrupted: rerun the same command to run the remaining cells", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK


def write_outputs(
    spec: plan.Study, cells: list, metric: collect.Metric, monitor: Monitor
) -> dict[str, Path | None]:
    from attnlab.study.haystack import plot_haystack, study_rows
    from attnlab.study.plot import plot, plot_extrapolation, plot_state

    csv_path = collect.write_csv(spec.out / "study.csv", spec, cells, metric, monitor)
    caption = collect.basis_caption(spec, cells, monitor)  # seeds, budget, tuning: under every figure
    plots = {
        "study": plot(spec.out / "study.png", spec, cells, metric, caption),
        "state": plot_state(spec.out / "state.png", spec, cells, metric, caption),
        "extrapolation": plot_extrapolation(spec.out / "extrapolation.png", spec, cells, metric, caption),
        "haystack": plot_haystack(  # a depth axis (task=passkey): accuracy over test length x depth
            spec.out / "haystack.png",
            study_rows(spec, cells),
            metric=metric.name,
            train_length=spec.lengths[0] if len(spec.lengths) == 1 else None,
            caption=caption,
        ),
    }
    md = spec.out / "study.md"
    md.write_text(collect.markdown(spec, cells, metric, monitor, plots))
    return {"csv": csv_path, "md": md, **{f"{k}_png": p for k, p in plots.items()}}


def track_study(
    spec: plan.Study, cells: list, metric: collect.Metric, monitor: Monitor, project: str, outputs: dict
) -> str:
    from attnlab.study.track import log_study

    return log_study(
        spec, cells, metric, monitor, project=project, plot=outputs["study_png"], markdown=outputs["md"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE)
        return EXIT_OK
    try:
        return study(argv)
    except AttnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
