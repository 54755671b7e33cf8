"""The conformance suite, shipped with the package (as scikit-learn ships `check_estimator`).

Every installed variant, built-in or plugin, can be held to the attention contract without the
attnlab repository:

    python -m attnlab.check sigmoid           # one line per contract point: PASS / FAIL / SKIP (why)
    python -m attnlab.check --all             # every installed variant; exit status 1 on any FAIL

From a plugin's own tests:

    import pytest
    from attnlab.check import check_variant, conformance_cases, run_check

    @pytest.mark.parametrize(("name", "point"), conformance_cases(["sigmoid"]))
    def test_conformance(name, point):
        run_check(name, point)                # AssertionError on FAIL, pytest.skip on SKIP

    def test_all_points():
        check_variant("sigmoid")              # raises ConformanceError listing every failure

The points are in attnlab/check/checks.py (CHECKS): the declaration, shape and dtype, batch rows
independent, causality (gradients, perturbation, chunk boundaries), key padding, cross attention,
incremental decoding equal to the parallel pass (beams included), exactness, the declared
reference tolerance, gradients, bf16/fp16, FLOP coverage, positions in the layer (rope, alibi) and
packed documents kept apart.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

from attnlab.attention import available_attentions, registry_entry
from attnlab.check.checks import CHECKS, Check, Skip

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class Result:
    variant: str
    point: str
    status: str  # PASS, FAIL or SKIP
    detail: str = ""  # the failure or the reason for the skip

    def line(self, width: int = 0) -> str:
        text = f"{self.status}  {self.point:<{width}}"
        if self.status == SKIP:
            return f"{text}  ({self.detail})"
        return f"{text}  {self.detail}" if self.detail else text.rstrip()


class ConformanceError(AssertionError):
    """A variant failed one or more contract points; the message lists them, one a line."""


def _check(point: str) -> Check:
    if point not in CHECKS:
        from attnlab.errors import ConfigError, did_you_mean

        raise ConfigError(
            f"unknown contract point '{point}'{did_you_mean(point, CHECKS)}; choose among {', '.join(CHECKS)}"
        )
    return CHECKS[point]


def evaluate(name: str, point: str) -> Result:
    """Run one contract point on variant `name`: its Result (never raises for the variant's faults)."""
    check = _check(point)
    try:
        check.run(name)
    except Skip as skip:
        return Result(name, point, SKIP, str(skip))
    except AssertionError as failure:
        return Result(name, point, FAIL, " ".join(str(failure).split()) or "assertion failed")
    except Exception as error:  # a variant that crashes on a request it declares fails that point
        return Result(name, point, FAIL, f"raised {type(error).__name__}: {' '.join(str(error).split())}")
    return Result(name, point, PASS)


def run_checks(name: str, points: Iterable[str] | None = None) -> list[Result]:
    """Every contract point (or `points`) on variant `name`, in order."""
    registry_entry(name)  # an unknown name is a ConfigError with the closest match
    return [evaluate(name, point) for point in (points or CHECKS)]


def check_variant(name: str, points: Iterable[str] | None = None) -> list[Result]:
    """Run the suite on `name`; raise ConformanceError listing every failure, else return the results."""
    results = run_checks(name, points)
    failures = [r for r in results if r.status == FAIL]
    if failures:
        lines = "\n".join(f"  {r.point}: {r.detail}" for r in failures)
        raise ConformanceError(f"attention '{name}' fails {len(failures)} contract point(s):\n{lines}")
    return results


def conformance_cases(names: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(variant, point) pairs for `pytest.mark.parametrize(("name", "point"), ...)`: every installed
    variant when `names` is None."""
    return [
        (name, point) for name in (available_attentions() if names is None else names) for point in CHECKS
    ]


def run_check(name: str, point: str) -> None:
    """One case of `conformance_cases` in a test: AssertionError on FAIL; pytest.skip on SKIP (a plain
    Skip exception outside pytest)."""
    result = evaluate(name, point)
    if result.status == FAIL:
        raise AssertionError(f"{name} {point}: {result.detail}")
    if result.status == SKIP:
        pytest = sys.modules.get("pytest")
        if pytest is not None:
            pytest.skip(result.detail)
        raise Skip(result.detail)


__all__ = [
    "CHECKS",
    "Check",
    "ConformanceError",
    "Result",
    "Skip",
    "check_variant",
    "conformance_cases",
    "evaluate",
    "run_check",
    "run_checks",
]
