"""haystack.png: the length x depth heat map of task=passkey, one panel per variant."""

from __future__ import annotations

import math

import matplotlib.image

from attnlab.study.haystack import HaystackRow, haystack_grid, plot_haystack

ROWS = [
    HaystackRow("multihead", 256, 0.0, 1.0),
    HaystackRow("multihead", 256, 0.0, 0.5),  # a second seed: averaged
    HaystackRow("multihead", 1024, 0.0, 0.25),
    HaystackRow("multihead", 256, 1.0, 0.75),
    HaystackRow("linear", 1024, 1.0, 0.125),
    HaystackRow("linear", 256, 0.0, None),  # a run that did not finish
    ("linear", 256, 1.0, float("nan")),  # plain tuples are rows too
]


def test_grid_averages_seeds_and_leaves_missing_cells_blank():
    grid = haystack_grid(ROWS)
    assert grid.variants == ("multihead", "linear")
    assert grid.lengths == (256, 1024) and grid.depths == (0.0, 1.0)
    multihead, linear = grid.values["multihead"], grid.values["linear"]  # (depths, lengths)
    assert multihead[0, 0] == 0.75 and multihead[0, 1] == 0.25 and multihead[1, 0] == 0.75
    assert math.isnan(multihead[1, 1])
    assert linear[1, 1] == 0.125 and math.isnan(linear[0, 0]) and math.isnan(linear[1, 0])
    # the spread over seeds where a cell has two: sd(1.0, 0.5); one seed has none
    assert math.isclose(grid.spreads["multihead"][0, 0], 0.3535533905932738)
    assert math.isnan(grid.spreads["multihead"][0, 1]) and math.isnan(grid.spreads["linear"][1, 1])


def test_plot_writes_one_panel_per_variant(tmp_path):
    path = plot_haystack(tmp_path / "haystack.png", ROWS, train_length=256)
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > height > 100  # two panels side by side
    one = plot_haystack(tmp_path / "one.png", [r for r in ROWS if r[0] == "multihead"], limits=None)
    assert matplotlib.image.imread(one).shape[1] < width
    assert plot_haystack(tmp_path / "none.png", [HaystackRow("linear", 256, 0.0, None)]) is None
    assert not (tmp_path / "none.png").exists()


def test_the_heat_map_carries_its_basis_under_the_panels(tmp_path, monkeypatch):
    """The study's caption (seeds, budget, tuning: attnlab.study.collect.basis_caption) stands under the
    panels, so the heat map read alone says what its numbers rest on."""
    import matplotlib.figure

    texts = []
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        texts.extend(t.get_text() for t in fig.texts)
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    plot_haystack(tmp_path / "haystack.png", ROWS, caption="mean ± sd over seeds 0, 1 · 400 steps")
    assert "mean ± sd over seeds 0, 1 · 400 steps" in texts
