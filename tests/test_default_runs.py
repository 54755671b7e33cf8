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
    results = run(compose_run(tmp_path, ["task=translate", "logger=none"], fast=False))
    metrics = results["metrics"]
    assert metrics["test/bleu"] > metrics["test/baseline_bleu"] + 30, metrics
