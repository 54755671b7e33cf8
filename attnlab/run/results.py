"""The one home of a run's result files: their names, their schema, reading and writing them.

A run directory holds exactly one of

    results.json   a finished run: quality metrics, cost figures, the variant, the resolved config
    failed.json    a run that stopped with an error: {status: "failed", error, message, user_error}, and
                   `budget` where the fit was cut short (an interruption, a NaN: attnlab.run.budget)

(a failed run's traceback is appended to its run.log), and a sweep directory holds
`sweep_summary.json`, the members that failed. The run (`attnlab.run.train`; `attnlab.run.app` for
failures and sweeps), the report (`attnlab.report`) and the study (`attnlab.study`) all go through
this module; none spells a file name itself.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from attnlab.errors import AttnlabError

RESULTS_FILE = "results.json"
FAILED_FILE = "failed.json"
SWEEP_SUMMARY_FILE = "sweep_summary.json"

# The top-level keys of results.json, in the order they are written. A reader may rely on these.
RESULTS_KEYS = (
    "status",  # "ok"
    "task",  # the task's name (classify, translate, summarise, lm, mqar, ...)
    "primary_metric",  # e.g. "test/acc"
    "primary_mode",  # "max" or "min"
    "metrics",  # {"train/...", "val/...", "test/...": float}
    "cost",  # {"train_tokens_per_s", "step_time_s", "peak_memory_mb", "attention_flops_per_token", ...}
    "attention",  # attnlab.attention.describe(cls) + {"params": {...}}
    "parameters",  # trainable parameter count
    "max_len",  # model.max_len
    "seed",
    "budget",  # {"steps_done", "steps_planned", "stopped_by"}: what the run got of its step budget (attnlab.run.budget)
    "basis",  # the seed, budget, lr and weights behind the figure, as the run's last line prints them
    "best_checkpoint",
    "run_dir",
    "config",  # the full resolved config
)


# What `budget.stopped_by` may say. The first three end a run as planned; the rest cut it short.
STOP_REASONS = ("max_steps", "max_epochs", "early_stopping", "max_time", "interrupted", "non_finite")
PARTIAL_STOPS = ("max_time", "interrupted", "non_finite")


def best_key(monitor: str) -> str:
    """metrics["best/val/acc"]: the monitored score of the checkpoint the test metrics come from (the
    best one; the last validation, metrics["val/acc"], can be another step's)."""
    return f"best/{monitor}"


def is_partial(results: dict[str, Any]) -> bool:
    """True when a run did not get the budget it was promised (a time guard, a Ctrl-C, a NaN).

    Early stopping is a planned end (the run asked to stop when validation stalled), so it is complete.
    Results written before budgets were recorded (no `budget` key) count as complete: nothing says otherwise.
    """
    budget = results.get("budget")
    if not isinstance(budget, dict):
        return False
    return budget.get("stopped_by") in PARTIAL_STOPS


def results_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESULTS_FILE


def failed_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / FAILED_FILE


def is_finished(run_dir: str | Path) -> bool:
    """True when the run directory holds a readable results.json with status "ok"."""
    return read_finished(run_dir) is not None


def read_finished(run_dir: str | Path) -> dict[str, Any] | None:
    """The results of a finished run (results.json with status "ok"), else None."""
    data = read_results(run_dir)
    return data if data is not None and data.get("status") == "ok" else None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a crash never leaves a half-written file (write a sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write results.json (atomically) and remove a failed.json left by an earlier attempt."""
    missing = [key for key in RESULTS_KEYS if key not in results]
    if missing:
        raise ValueError(f"results are missing {missing}; see attnlab.run.results.RESULTS_KEYS")
    ordered = {key: results[key] for key in RESULTS_KEYS} | {
        k: v for k, v in results.items() if k not in RESULTS_KEYS
    }
    path = results_path(run_dir)
    write_json_atomic(path, ordered)
    failed_path(run_dir).unlink(missing_ok=True)
    return path


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's results.json as a dict, or None when there is none (or it cannot be read)."""
    return read_json(results_path(run_dir))


def write_failure_record(run_dir: str | Path, record: dict[str, Any]) -> Path:
    path = failed_path(run_dir)
    write_json_atomic(path, {"status": "failed", **record})
    return path


def read_failure(run_dir: str | Path) -> dict[str, Any] | None:
    return read_json(failed_path(run_dir))


def find_results_files(root: str | Path) -> list[Path]:
    """Every results.json at or below `root` (a run dir, a sweep dir, or a results.json itself)."""
    root = Path(root)
    if root.is_file():
        return [root] if root.name == RESULTS_FILE else []
    return sorted(root.rglob(RESULTS_FILE)) if root.is_dir() else []


def write_failure(run_dir: Path | None, error: BaseException, message: str) -> None:
    """Record a failed run: failed.json (never results.json) and the traceback appended to run.log."""
    if run_dir is None:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "run.log", "a") as handle:
        handle.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    record = {
        "error": type(error).__name__,
        "message": message,
        "user_error": isinstance(error, AttnlabError),
    }
    if isinstance(getattr(error, "budget", None), dict):  # set by attnlab.run.train: the fit stopped early
        record["budget"] = error.budget
    write_failure_record(run_dir, record)


def summarise_sweep(sweep_dir: Path) -> dict[str, Any]:
    """{ok, failed: [{job, message}]} over a sweep's job directories; written to sweep_summary.json."""
    ok, failed = [], []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if results_path(job).exists():
            ok.append(job.name)
        elif (record := read_failure(job)) is not None:
            failed.append({"job": job.name, "message": record.get("message", "")})
    summary = {"ok": ok, "failed": failed}
    write_json_atomic(sweep_dir / SWEEP_SUMMARY_FILE, summary)
    return summary
