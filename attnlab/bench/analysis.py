"""From measured rows to answers: ratios to baselines, scaling exponents, crossover lengths."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MEASURED = ("ok", "time_budget")  # statuses whose row carries a timing


def fit_exponent(
    ns: Sequence[float], ys: Sequence[float | None], min_n: int = 1024
) -> tuple[float | None, int]:
    """Least-squares slope of log y on log N over N >= min_n (all N when fewer than 2 remain).

    Returns (exponent, number of points used); (None, k) when fewer than 2 usable points.
    """
    points = [(n, y) for n, y in zip(ns, ys) if y is not None and y > 0 and n > 0]
    large = [(n, y) for n, y in points if n >= min_n]
    points = large if len(large) >= 2 else points
    if len(points) < 2 or len({n for n, _ in points}) < 2:
        return None, len(points)
    xs = [math.log(n) for n, _ in points]
    ls = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ls) / len(ls)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ls)) / sum((x - mx) ** 2 for x in xs)
    return slope, len(points)


def crossover(
    lengths: Sequence[int], cost: Mapping[int, float | None], baseline: Mapping[int, float | None]
) -> int | None:
    """The first N from which `cost` stays below `baseline` up to the largest N; None if never.

    None in `cost` means the variant could not be measured there (never cheaper); None in
    `baseline` means the baseline could not afford that N, so a measured variant is cheaper.
    """
    first = None
    for n in sorted(lengths):
        mine, theirs = cost.get(n), baseline.get(n)
        cheaper = mine is not None and (theirs is None or mine < theirs)
        if cheaper and first is None:
            first = n
        elif not cheaper:
            first = None
    return first


def _key(row: Mapping[str, Any]) -> tuple:
    return (row["mode"], row["causal"], row["N"])


def add_ratios(rows: list[dict[str, Any]], baselines: Sequence[str]) -> None:
    """Fill speedup_vs_<b> (baseline time / time) and mem_ratio_vs_<b> (memory / baseline memory)."""
    for base in baselines:
        reference = {_key(r): r for r in rows if r["variant"] == base and r["status"] in MEASURED}
        for row in rows:
            ref = reference.get(_key(row))
            speed = mem = None
            if ref is not None and row["status"] in MEASURED:
                if row["time_ms_median"] and ref["time_ms_median"]:
                    speed = ref["time_ms_median"] / row["time_ms_median"]
                if row["peak_mem_mb"] and ref["peak_mem_mb"]:
                    mem = row["peak_mem_mb"] / ref["peak_mem_mb"]
            row[f"speedup_vs_{base}"] = speed
            row[f"mem_ratio_vs_{base}"] = mem


@dataclass
class VariantSummary:
    variant: str
    mode: str
    causal: bool
    time_exponent: float | None
    memory_exponent: float | None
    fit_points: int
    crossover_time: int | None  # first N from which it stays faster than the crossover baseline
    crossover_memory: int | None
    crossover_baseline: str
    crossover_note: str  # "" or why no crossover is defined

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _series(rows: list[dict[str, Any]], column: str) -> dict[int, float | None]:
    return {r["N"]: (r[column] if r["status"] in MEASURED else None) for r in rows}


def summarise(
    rows: list[dict[str, Any]], *, crossover_baseline: str, fit_min_length: int
) -> list[VariantSummary]:
    """One summary per (variant, mode, causal) group of rows."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["mode"], row["causal"]), []).append(row)
    summaries = []
    for (variant, mode, causal), group in groups.items():
        group = sorted(group, key=lambda r: r["N"])
        ns = [r["N"] for r in group]
        time_exp, used = fit_exponent(ns, [_series(group, "time_ms_median")[n] for n in ns], fit_min_length)
        mem_exp, _ = fit_exponent(ns, [_series(group, "peak_mem_mb")[n] for n in ns], fit_min_length)
        base_rows = groups.get((crossover_baseline, mode, causal), [])
        cross_t = cross_m = None
        note = ""
        if variant == crossover_baseline:
            note = "is the baseline"
        elif not base_rows or all(r["status"] == "unsupported" for r in base_rows):
            note = f"{crossover_baseline} not measured in this setting"
        elif all(r["status"] == "unsupported" for r in group):
            note = "unsupported"
        else:
            cross_t = crossover(ns, _series(group, "time_ms_median"), _series(base_rows, "time_ms_median"))
            cross_m = crossover(ns, _series(group, "peak_mem_mb"), _series(base_rows, "peak_mem_mb"))
        summaries.append(
            VariantSummary(
                variant, mode, causal, time_exp, mem_exp, used, cross_t, cross_m, crossover_baseline, note
            )
        )
    return summaries
