"""The study's figures, from the same aggregated points as study.md (runs cut short are left out
unless allow_partial=true):

- study.png: per grid point (one row of panels each), the primary metric against length per variant
  (mean, error bars = standard deviation over seeds, a faint dot per seed), beside train tokens/s and
  peak memory;
- state.png: the primary metric against decoding-state bytes per sequence (log x), one panel per
  length, one line per variant through its grid points (zoology's recall-against-state view); with
  eval_lengths, one more panel per test length: the metric there against the state measured there;
- extrapolation.png (eval_lengths): the metric of the same weights against test length, one line per
  variant (error bars: standard deviation over seeds), one panel per (grid point, training length), the
  training length marked (its point: the run's own test metric).

Every accuracy point draws its seeds' spread (error bars) and each seed's own value (a faint dot), and
under each figure stands its basis (collect.basis_caption): the seeds behind each point, the budget the
runs got and how their learning rate was chosen, so a figure read alone still says what it rests on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attnlab.study import axes as ax  # noqa: E402
from attnlab.study.collect import CellResult, Metric, points, state_key  # noqa: E402
from attnlab.study.plan import Study  # noqa: E402

MAX_ROWS = 12  # grid points drawn in study.png; the table holds them all
CAPTION_INCHES = 0.35  # the strip under a figure that holds its basis


def seed_dots(axis: plt.Axes, x: float, values: Sequence[float], color: Any) -> None:
    """Each seed's own value beside the mean and its error bar: seeds that split (one learns the task,
    another stays at chance) show as two clusters, which mean ± sd alone hides."""
    if len(values) > 1:
        axis.scatter([x] * len(values), values, s=14, alpha=0.45, color=color, zorder=3, linewidths=0)


def finish(fig: plt.Figure, path: Path, caption: str) -> None:
    """Lay the panels out above a strip holding `caption` (the figure's basis), save, close."""
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, CAPTION_INCHES / height if caption else 0, 1, 1))
    if caption:
        fig.text(0.5, 0.1 / height, caption, ha="center", va="bottom", fontsize=8, color="dimgrey")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _direction(metric: Metric) -> str:
    return f"{metric.name} ({'higher' if metric.higher_is_better else 'lower'} is better)"


def plot(
    path: Path, study: Study, cells: Sequence[CellResult], metric: Metric, caption: str = ""
) -> Path | None:
    """Write study.png; None when no cell finished (nothing to draw)."""
    if not any(c.status == "ok" for c in cells):
        return None
    grid = points(study, cells)
    grid_points = study.grid_points[:MAX_ROWS]
    fig, axes = plt.subplots(len(grid_points), 3, figsize=(16, 4.5 * len(grid_points)), squeeze=False)
    colors = plt.get_cmap("tab10")
    for row, g in zip(axes, grid_points, strict=True):
        gtext = ax.describe(g)
        panels = (
            (row[0], None, _direction(metric)),
            (row[1], "train_tokens_per_s", "train tokens/s"),
            (row[2], "peak_memory_mb", "peak memory (MB)"),
        )
        for i, variant in enumerate(study.variants):
            color = colors(i % 10)
            dodge = 2 ** (0.02 * (i - (len(study.variants) - 1) / 2))  # equal accuracies stay visible
            for axis, cost_key, _ in panels:
                xs, ys, errs, seeds = [], [], [], []
                for length in study.lengths:
                    point = grid[(variant, length, gtext)]
                    y = point.mean if cost_key is None else point.cost_mean(cost_key)
                    if y is not None:
                        xs.append(length)
                        ys.append(y)
                        errs.append(point.spread or 0.0)
                        seeds.append(point.quality)
                if not xs:
                    continue
                if cost_key is None:
                    xs = [x * dodge for x in xs]
                    axis.errorbar(xs, ys, yerr=errs, marker="o", capsize=4, label=variant, color=color)
                    for x, values in zip(xs, seeds, strict=True):
                        seed_dots(axis, x, values, color)
                else:
                    axis.plot(xs, ys, marker="o", label=variant, color=color)
        for axis, cost_key, label in panels:
            axis.set_xscale("log", base=2)
            axis.set_xticks(list(study.lengths), [str(n) for n in study.lengths])
            low, high = axis.get_ylim() if axis.has_data() else (0.0, 0.0)
            if cost_key is not None and low > 0 and high / low > 10:
                axis.set_yscale("log")
            axis.set_xlabel("sequence length")
            axis.set_ylabel(label)
            axis.grid(True, which="both", alpha=0.3)
            if axis.has_data():
                axis.legend(fontsize=8)
        where = f" | {gtext}" if g else ""
        row[0].set_title(
            f"{study.task}: {metric.name} (error bars: std over seeds {list(study.seeds)}){where}"
        )
        row[1].set_title(f"training throughput{where}")
        row[2].set_title(f"peak memory{where}")
    finish(fig, path, caption)
    return path


def plot_state(
    path: Path, study: Study, cells: Sequence[CellResult], metric: Metric, caption: str = ""
) -> Path | None:
    """Write state.png; None when no finished cell recorded its decoding state. One panel per training
    length (the metric against the state at that length), then, with eval_lengths, one per (training
    length, test length): the same weights' metric at the test length against the state measured there,
    where a KV cache has grown and a recurrent state has not (recall bought, at what bytes at 4K)."""
    grid = points(study, cells)
    if not any(p.mean is not None and p.cost_mean("decode_state_bytes") for p in grid.values()):
        return None
    # (length trained at, length tested at): the run's own test metric and state at the training length
    panels = [(n, n) for n in study.lengths]
    panels += [(n, m) for n in study.lengths for m in sorted(set(study.eval_lengths)) if m != n]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    colors = plt.get_cmap("tab10")
    for axis, (length, tested) in zip(axes[0], panels, strict=True):
        for i, variant in enumerate(study.variants):
            found = []
            for g in study.grid_points:
                point = grid[(variant, length, ax.describe(g))]
                if tested == length:
                    state, value, spread = point.cost_mean("decode_state_bytes"), point.mean, point.spread
                    seeds = point.quality
                else:
                    state, value = point.cost_mean(state_key(tested)), point.eval_mean(tested)
                    spread, seeds = point.eval_spread(tested), point.evals.get(tested) or []
                if value is not None and state:
                    found.append((state, value, spread or 0.0, g))
                    seed_dots(axis, state, seeds, colors(i % 10))
            if not found:
                continue
            found.sort(key=lambda item: item[0])
            xs, ys, errs, _ = zip(*found, strict=True)
            axis.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=variant, color=colors(i % 10))
            if len(study.grid_points) > 1:
                for x, y, _, g in found:
                    axis.annotate(_short(g), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        axis.set_xscale("log", base=2)
        axis.set_xlabel(f"decoding state per sequence at {tested} tokens (bytes, measured)")
        axis.set_ylabel(_direction(metric))
        title = (
            f"{study.task}, L={length}"
            if tested == length
            else f"{study.task}: trained at {length}, tested at {tested}"
        )
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        if axis.has_data():
            axis.legend(fontsize=8)
    finish(fig, path, caption)
    return path


def _short(point: ax.Point) -> str:
    names = ax.labels([k for k, _ in point])
    return " ".join(f"{names[k]}={ax.value_text(v)}" for k, v in point)


def plot_extrapolation(
    path: Path, study: Study, cells: Sequence[CellResult], metric: Metric, caption: str = ""
) -> Path | None:
    """Write extrapolation.png (eval_lengths); None without test lengths or numbers at them."""
    if not study.eval_lengths:
        return None
    grid = points(study, cells)
    if not any(p.evals for p in grid.values()):
        return None
    panels = [(g, n) for g in study.grid_points for n in study.lengths][: MAX_ROWS * 3]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    tested = sorted(set(study.eval_lengths))
    for axis, (g, length) in zip(axes.flat, panels, strict=False):
        gtext = ax.describe(g)
        for i, variant in enumerate(study.variants):
            point = grid[(variant, length, gtext)]
            # the run's own test metric is the same weights at the training length
            values = {n: point.eval_mean(n) for n in tested} | {length: point.eval_mean(length) or point.mean}
            spreads = {n: point.eval_spread(n) for n in tested} | {
                length: point.eval_spread(length) or point.spread
            }
            xs = sorted(n for n, y in values.items() if y is not None)
            if xs:
                errs = [spreads[n] or 0.0 for n in xs]
                axis.errorbar(
                    xs,
                    [values[n] for n in xs],
                    yerr=errs,
                    marker="o",
                    capsize=3,
                    label=variant,
                    color=colors(i % 10),
                )
                for n in xs:  # the training length's seeds: its own test metric where no eval there
                    seed_dots(
                        axis, n, point.evals.get(n) or (point.quality if n == length else []), colors(i % 10)
                    )
        axis.axvline(length, color="grey", linestyle="--", linewidth=1, label=f"trained at {length}")
        axis.set_xscale("log", base=2)
        ticks = sorted({*tested, length})
        axis.set_xticks(ticks, [str(n) for n in ticks])
        axis.set_xlabel("test length")
        axis.set_ylabel(_direction(metric))
        axis.set_title(f"{study.task}: trained at L={length}" + (f" | {_short(g)}" if g else ""), fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    finish(fig, path, caption)
    return path
