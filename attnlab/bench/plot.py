"""bench.png: time and peak memory against N on log-log axes, one line per variant, one row per setting.

Points without a measurement (unsupported, oom, error, skipped) are not left out silently: each is an
x in the variant's colour along the bottom of the panel, at its N, and the legend says why
(`performer: unsupported`).
"""

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
                _mark_unmeasured(ax, rows, variant, (mode, causal), row=j, color=colors(j % 10))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            if any(r["status"] not in MEASURED and (r["mode"], r["causal"]) == (mode, causal) for r in rows):
                _room_below(ax, len(variants))
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


STATUS_MARKERS = {"unsupported": "x", "oom": "v", "error": "X", "skipped": "1"}  # else "x"


def _mark_unmeasured(
    ax: Any, rows: list[dict[str, Any]], variant: str, setting: tuple, *, row: int, color: Any
) -> None:
    """A marker per N the variant has no measurement at, along the bottom (one band per variant)."""
    from matplotlib.transforms import blended_transform_factory

    missing: dict[str, list[int]] = {}
    for r in rows:
        if r["variant"] == variant and (r["mode"], r["causal"]) == setting and r["status"] not in MEASURED:
            missing.setdefault(r["status"], []).append(r["N"])
    band = blended_transform_factory(ax.transData, ax.transAxes)  # x: N, y: a fraction of the panel
    for status, ns in missing.items():
        ax.scatter(ns, [0.03 + 0.04 * row] * len(ns), transform=band, marker=STATUS_MARKERS.get(status, "x"),
                   s=40, color=color, label=f"{variant}: {status}", clip_on=False)  # fmt: skip


def _room_below(ax: Any, bands: int) -> None:
    """Lower the (log) y-axis so that the bottom bands of markers sit below the measured lines."""
    import math

    low, high = ax.get_ylim()
    if low <= 0 or high <= low:
        return
    fraction = min(0.5, 0.04 * bands + 0.04)  # of the panel's height, kept free at the bottom
    span = math.log(high / low)
    ax.set_ylim(low / math.exp(span * fraction / (1 - fraction)), high)
