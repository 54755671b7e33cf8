"""The shipped conformance suite as a plugin author meets it: `python -m attnlab.check` and its
pytest helpers, on a correct plugin (sigmoid) and on one that claims causal=True but leaks the
future (tests/plugins/attnlab_leaky_plugin)."""

from __future__ import annotations

import pytest
from conftest import BROKEN_SITE, EXAMPLE_SITE, HONEST_SITE, LEAKY_SITE, activated, plugin_pythonpath
from helpers import run_cli

from attnlab.check import CHECKS, ConformanceError, check_variant, conformance_cases, run_checks
from attnlab.check.__main__ import main

CAUSALITY = ("causality-gradients", "causality-perturbation")


def test_leaky_plugin_fails_on_causality_and_a_correct_one_passes(tmp_path):
    env = {"PYTHONPATH": plugin_pythonpath(EXAMPLE_SITE, LEAKY_SITE)}
    leaky = run_cli(["leaky"], cwd=tmp_path, module="attnlab.check", env=env, timeout=120)
    assert leaky.returncode == 1, leaky.stdout + leaky.stderr
    failed = [line.split()[1] for line in leaky.stdout.splitlines() if line.strip().startswith("FAIL")]
    assert set(failed) == set(CAUSALITY), leaky.stdout
    assert "causal out[0] depends on future k" in leaky.stdout
    assert "leaky FAILS the contract" in leaky.stdout
    correct = run_cli(["sigmoid"], cwd=tmp_path, module="attnlab.check", env=env, timeout=120)
    assert correct.returncode == 0, correct.stdout + correct.stderr
    lines = [line.strip() for line in correct.stdout.splitlines() if line.startswith("  ")]
    assert len(lines) == len(CHECKS) + 1  # one line per contract point, then the verdict
    assert "PASS  causality-gradients" in correct.stdout and "FAIL" not in correct.stdout
    assert "SKIP  decoding-beams          (does not declare incremental)" in correct.stdout


def test_check_variant_raises_with_every_failure():
    with activated(LEAKY_SITE):
        with pytest.raises(ConformanceError, match="causality-gradients") as failure:
            check_variant("leaky")
        assert "causality-perturbation" in str(failure.value)
        statuses = {r.point: r.status for r in run_checks("leaky")}
    assert statuses["padding"] == "PASS" and statuses["causality-gradients"] == "FAIL"
    results = check_variant("sigmoid", points=["padding", "decoding-beams"])
    assert [(r.point, r.status) for r in results] == [("padding", "PASS"), ("decoding-beams", "SKIP")]


def test_conformance_cases_cover_every_point():
    cases = conformance_cases(["sigmoid", "linear"])
    assert cases[: len(CHECKS)] == [("sigmoid", point) for point in CHECKS]
    assert len(cases) == 2 * len(CHECKS)
    assert {name for name, _ in conformance_cases()} >= {"multihead", "sigmoid"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["linaer"], "unknown attention 'linaer' (did you mean 'linear'?)"),
        (["linear", "--point", "causalty"], "unknown contract point 'causalty' (did you mean"),
    ],
)
def test_usage_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_plugin_that_failed_to_load_is_named(capsys):
    with activated(BROKEN_SITE):
        assert main(["broken"]) == 2
    assert "attention 'broken' is a plugin that failed to load" in capsys.readouterr().err


def test_points_subset_and_exit_status(capsys):
    assert main(["multihead", "--point", "causality-gradients", "--point", "exactness"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["PASS", "causality-gradients"] and out[2].split() == ["PASS", "exactness"]


def test_capabilities_are_enforced_by_the_framework_not_by_the_plugin():
    """tests/plugins/attnlab_honest_plugin declares causal and cross (no padding masks) and never calls
    check_request: the framework refuses what it does not declare before its forward runs."""
    import torch

    from attnlab.attention import build_attention
    from attnlab.errors import CapabilityError

    with activated(HONEST_SITE):
        results = check_variant("honest")  # raises ConformanceError on any failure
        assert {r.point: r.status for r in results}["padding"] == "PASS"
        attention = build_attention("honest", head_dim=8, heads=2, max_len=16)
    calls = []
    attention.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True)
    q = torch.randn(1, 2, 6, 8)  # (B, H, N, D)
    with pytest.raises(CapabilityError, match="attention 'honest' does not support key padding masks"):
        attention(q, q, q, key_padding_mask=torch.zeros(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="causal attention needs equal query and key lengths"):
        attention(q, q[:, :, :4], q[:, :, :4], causal=True)
    assert calls == []  # refused before forward (and its hooks) ran
    assert attention(q, q, q, causal=True).shape == (1, 2, 6, 8)
    assert len(calls) == 1


def test_the_honest_plugin_passes_the_cli_check(tmp_path):
    env = {"PYTHONPATH": plugin_pythonpath(HONEST_SITE)}
    honest = run_cli(["honest"], cwd=tmp_path, module="attnlab.check", env=env, timeout=120)
    assert honest.returncode == 0, honest.stdout + honest.stderr
    assert "PASS  padding\n" in honest.stdout and "PASS  cross-attention\n" in honest.stdout
    assert "FAIL" not in honest.stdout
