"""The README's default runs learn what the README says they learn (slow: minutes each, on CPU)."""

from __future__ import annotations

import pytest
from helpers import compose_run

from attnlab.train import run

pytestmark = pytest.mark.slow


def test_main_job_beats_the_majority_class(tmp_path):
    """`python -m attnlab` (ListOps, multihead, 1,500 steps): test accuracy clearly above the majority rate."""
    results = run(compose_run(tmp_path, ["logger=none"], fast=False))
    metrics = results["metrics"]
    assert metrics["test/acc"] > 1.5 * metrics["test/baseline_acc"], metrics


def test_translate_default_run_beats_copying_the_source(tmp_path):
    """`python -m attnlab task=translate`: well above copying the source (docs/measurements.md).

    Whether the default difficulty stays below the ceiling and apart from `attention=linear` was
    measured before the encoder-decoder's embedding scale was fixed; with the fix the tiny model
    learns much faster (test BLEU 91.1 after the default 1,500 steps), so those two claims are re-measured before
    they are asserted again (issue 17, point 4)."""
    metrics = run(compose_run(tmp_path / "multihead", ["task=translate", "logger=none"], fast=False))[
        "metrics"
    ]
    assert metrics["test/baseline_bleu"] + 15 < metrics["test/bleu"], metrics
