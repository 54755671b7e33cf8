"""study.png: the primary metric against length per variant (mean, error bars = standard deviation
over seeds), beside train tokens/s and peak memory against length, from the same runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attnlab.study.collect import CellResult, Metric, points  # noqa: E402
from attnlab.study.plan import Study  # noqa: E402


def plot(path: Path, study: Study, cells: Sequence[CellResult], metric: Metric) -> Path | None:
    """Write study.png; None when no cell finished (nothing to draw)."""
    if not any(c.status == "ok" for c in cells):
        return None
    grid = points(study, cells)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = plt.get_cmap("tab10")
    panels = (
        (axes[0], None, f"{metric.name} ({'higher' if metric.higher_is_better else 'lower'} is better)"),
        (axes[1], "train_tokens_per_s", "train tokens/s"),
        (axes[2], "peak_memory_mb", "peak memory (MB)"),
    )
    for i, variant in enumerate(study.variants):
        color = colors(i % 10)
        dodge = 2 ** (0.02 * (i - (len(study.variants) - 1) / 2))  # equal accuracies stay visible
        for ax, cost_key, _ in panels:
            xs, ys, errs = [], [], []
            for length in study.lengths:
                point = grid[(variant, length)]
                y = point.mean if cost_key is None else point.cost_mean(cost_key)
                if y is not None:
                    xs.append(length)
                    ys.append(y)
                    errs.append(point.spread or 0.0)
            if not xs:
                continue
            if cost_key is None:
                xs = [x * dodge for x in xs]
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=4, label=variant, color=color)
            else:
                ax.plot(xs, ys, marker="o", label=variant, color=color)
    for ax, cost_key, label in panels:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(study.lengths), [str(n) for n in study.lengths])
        low, high = ax.get_ylim() if ax.has_data() else (0.0, 0.0)
        if cost_key is not None and low > 0 and high / low > 10:
            ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    axes[0].set_title(f"{study.task}: {metric.name} (error bars: std over seeds {list(study.seeds)})")
    axes[1].set_title("training throughput")
    axes[2].set_title("peak memory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
