"""bench.png: time and peak memory against N on log-log axes, one line per variant, one row per setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attnlab.bench.analysis import MEASURED  # noqa: E402


def plot(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    settings = list(dict.fromkeys((r["mode"], r["causal"]) for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(len(settings) or 1, 2, figsize=(11, 4 * max(len(settings), 1)), squeeze=False)
    colors = plt.get_cmap("tab10")
    for i, (mode, causal) in enumerate(settings):
        for column, ax, label in (
            ("time_ms_median", axes[i][0], "time (ms)"),
            ("peak_mem_mb", axes[i][1], "peak memory (MB)"),
        ):
            for j, variant in enumerate(variants):
                points = sorted(
                    (r["N"], r[column])
                    for r in rows
                    if r["variant"] == variant and (r["mode"], r["causal"]) == (mode, causal)
                    and r["status"] in MEASURED and r[column]
                )  # fmt: skip
                if points:
                    ns, ys = zip(*points)
                    ax.plot(ns, ys, marker="o", label=variant, color=colors(j % 10))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length N")
            ax.set_ylabel(label)
            ax.set_title(f"{label.split(' (')[0]} — {mode}{', causal' if causal else ''}")
            ax.grid(True, which="both", alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
