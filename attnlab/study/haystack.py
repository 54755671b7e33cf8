"""haystack.png: a needle-in-a-haystack heat map (task=passkey), one panel per variant: the metric
(test accuracy) at each test length (x) and depth of the fact (y: 0 = the first token, 1 = right
before the question), from rows (variant, length, depth, value). Repeated cells (seeds) are averaged
and their standard deviation printed under the mean; a cell no run reached stays blank."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


class HaystackRow(NamedTuple):
    variant: str
    length: int  # the test length (task.eval_lengths)
    depth: float  # where the fact sits, a fraction of the sequence (task.data.builtin.test_depth)
    value: float | None  # the metric; None or NaN: the run did not reach it


class HaystackGrid(NamedTuple):
    variants: tuple[str, ...]  # in order of first appearance
    lengths: tuple[int, ...]  # ascending
    depths: tuple[float, ...]  # ascending
    values: dict[str, np.ndarray]  # variant -> (len(depths), len(lengths)) means, NaN where missing
    spreads: dict[str, np.ndarray]  # the same shape: standard deviation over seeds, NaN below two


def haystack_grid(rows: Iterable[HaystackRow | Sequence]) -> HaystackGrid:
    """The mean value (and the standard deviation over seeds) per (variant, depth, length) over the
    rows that have one."""
    rows = [HaystackRow(str(v), int(n), float(d), x) for v, n, d, x in rows]
    variants = tuple(dict.fromkeys(r.variant for r in rows))
    lengths = tuple(sorted({r.length for r in rows}))
    depths = tuple(sorted({r.depth for r in rows}))
    found: dict[tuple[str, int, int], list[float]] = {}
    for r in rows:
        if r.value is None or not math.isfinite(r.value):
            continue
        found.setdefault((r.variant, depths.index(r.depth), lengths.index(r.length)), []).append(r.value)
    shape = (len(depths), len(lengths))
    values = {v: np.full(shape, np.nan) for v in variants}
    spreads = {v: np.full(shape, np.nan) for v in variants}
    for (variant, i, j), seen in found.items():
        values[variant][i, j] = statistics.fmean(seen)
        if len(seen) > 1:
            spreads[variant][i, j] = statistics.stdev(seen)
    return HaystackGrid(variants, lengths, depths, values, spreads)


def plot_haystack(
    path: Path,
    rows: Iterable[HaystackRow | Sequence],
    *,
    metric: str = "test/acc",
    train_length: int | None = None,
    limits: tuple[float, float] | None = (0.0, 1.0),
    caption: str = "",
) -> Path | None:
    """Write the heat map to `path` (one panel per variant, shared colour scale: `limits`, or the data's
    range when None); the training length's tick is marked. None when no row has a value."""
    grid = haystack_grid(rows)
    if not any(np.isfinite(m).any() for m in grid.values.values()):
        return None
    low, high = limits or _range(grid)
    cols = len(grid.variants)
    fig, axes = plt.subplots(
        1,
        cols,
        sharey=True,  # one depth axis, labelled on the first panel
        figsize=(1.2 + 0.9 * len(grid.lengths) * cols + 1.0, 1.2 + 0.45 * len(grid.depths) + 1.0),
    )
    axes = np.atleast_1d(axes)
    image = None
    for ax, variant in zip(axes, grid.variants):
        values = grid.values[variant]  # (depths, lengths)
        image = ax.imshow(values, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                shade = "black" if value > low + 0.6 * (high - low) else "white"
                spread = grid.spreads[variant][i, j]
                text = f"{value:.2f}" + (f"\n± {spread:.2f}" if np.isfinite(spread) else "")  # over seeds
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=shade)
        ticks = [f"{n}\n(train)" if n == train_length else str(n) for n in grid.lengths]
        ax.set_xticks(range(len(grid.lengths)), ticks)
        ax.set_yticks(range(len(grid.depths)), [f"{d:g}" for d in grid.depths])
        ax.set_xlabel("test length")
        ax.set_title(variant)
    axes[0].set_ylabel("depth of the fact")
    fig.colorbar(image, ax=list(axes), label=metric, shrink=0.9)
    fig.suptitle(f"passkey: {metric} by test length and depth")
    if caption:  # its basis under everything drawn (the saved area grows to hold it)
        lowest = fig.get_tightbbox(fig.canvas.get_renderer()).y0  # inches, the x labels included
        y = (lowest - 0.08) / fig.get_size_inches()[1]
        fig.text(0.5, y, caption, ha="center", va="top", fontsize=8, color="dimgrey")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _range(grid: HaystackGrid) -> tuple[float, float]:
    finite = np.concatenate([m[np.isfinite(m)] for m in grid.values.values()])
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


DEPTH_KEYS = ("task.data.builtin.test_depth", "task.data.builtin.depth")  # the fact's depth, as a study axis


def study_rows(study, cells) -> list[HaystackRow]:
    """A study's rows for the heat map: every selected, complete run on a grid with a depth axis
    (task.data.builtin.test_depth, else depth), at each test length (eval_lengths, and the length it
    trained at). [] when the study has no depth axis."""
    key = next((k for k, _ in study.grid if k in DEPTH_KEYS), None)
    if key is None:
        return []
    rows = []
    for result in cells:
        if result.status != "ok" or not result.selected or (result.partial and not study.allow_partial):
            continue
        depth = dict(result.cell.grid)[key]
        if depth is None:  # a random depth per example is no row of the map
            continue
        at = {result.cell.length: result.quality, **result.evals}  # the run's own length: its test metric
        rows += [HaystackRow(result.cell.variant, n, float(depth), value) for n, value in at.items()]
    return rows
