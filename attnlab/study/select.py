"""Which run stands for each (variant, length, grid point, seed): the tuned value chosen on validation.

Every run of a selection group trains the same cell with one combination of the `tune.*` values.
The run with the best validation metric (the task's `monitor`, `monitor_mode`) among the finished,
complete runs is selected; its TEST metric is what the tables report. The test metric never takes
part in the choice. The validation score read is that of the checkpoint the test metric comes from
(results' `best/<monitor>`, attnlab.run.results.best_key), else the last validation (older runs). A
run cut short (attnlab.run.results.is_partial: a time guard, Ctrl-C, a NaN) is no candidate unless
the study says `allow_partial=true`. Without tune axes every group holds one run, selected when it
finished (and is complete or allowed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnlab.study.collect import CellResult


@dataclass(frozen=True)
class Monitor:
    name: str  # e.g. val/acc
    higher_is_better: bool


def eligible(run: CellResult, allow_partial: bool) -> bool:
    return run.status == "ok" and (allow_partial or not run.partial)


def select(runs: Sequence[CellResult], monitor: Monitor, *, allow_partial: bool, tuned: bool) -> None:
    """Set `selected` on every run: per group, the eligible run with the best validation value
    (without tune axes: the group's one eligible run, whatever its validation value)."""
    groups: dict[tuple, list[CellResult]] = defaultdict(list)
    for run in runs:
        run.selected = False
        groups[run.cell.group].append(run)
    for members in groups.values():
        candidates = [r for r in members if eligible(r, allow_partial)]
        if tuned:
            candidates = [r for r in candidates if r.val is not None and math.isfinite(r.val)]
        if not candidates:
            continue
        sign = 1.0 if monitor.higher_is_better else -1.0
        # ties: the first in the study's order (the tune values as listed)
        best = max(candidates, key=lambda r: sign * r.val if r.val is not None else -math.inf)
        best.selected = True
