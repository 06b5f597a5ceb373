"""Exit codes from a run's results: pure logic over records."""

from __future__ import annotations

import pytest

from fleet.results.record import make_record
from fleet.runner import RunOutcome


def result(status: str = "ok", passed: bool | None = True) -> object:
    fields: dict[str, object] = {"status": status}
    if passed is not None:
        fields["passed"] = passed
    return make_record("result", {"device": "d"}, fields)


@pytest.mark.parametrize(
    ("results", "errors", "code"),
    [
        ([result(), result()], {}, 0),
        ([result(), result("skipped", None)], {}, 0),  # one device lacks a runtime: fine
        ([result("skipped", None), result("skipped", None)], {}, 2),  # nothing measured
        ([result(), result(passed=False)], {}, 1),
        ([result(), result("out_of_memory", False)], {}, 1),
        ([result(), result("refused", False)], {}, 1),
        ([result(), result("invalid_model", False)], {}, 2),
        ([result()], {"pi": "pi: cannot reach"}, 2),
    ],
)
def test_exit_code(results: list, errors: dict[str, str], code: int) -> None:
    outcome = RunOutcome("r", records=results, device_errors=errors)
    assert outcome.exit_code == code


def test_failed_counts_findings_errors_and_broken_budgets_not_skips() -> None:
    outcome = RunOutcome(
        "r",
        records=[result(), result("skipped", None), result(passed=False), result("timeout", False)],
    )
    assert len(outcome.failed) == 2
