"""Machine health after a check: unreachable first, unavailable after the policy's time."""

from __future__ import annotations

import pytest

from cuttle.server.domain.machine_health import (
    HealthOutcome,
    after_check,
    becomes_unavailable_at_ms,
)

T0 = 1_700_000_000_000


@pytest.mark.parametrize(
    ("succeeded", "checked_ms", "since_ms", "after_seconds", "expected"),
    [
        # A success ends any run of failures.
        (True, T0, None, 300, HealthOutcome("healthy", None)),
        (True, T0 + 999_000, T0, 300, HealthOutcome("healthy", None)),
        # The first failure starts the run: unreachable, not yet unavailable.
        (False, T0, None, 300, HealthOutcome("unreachable", T0)),
        # Later failures keep the start of the run.
        (False, T0 + 299_999, T0, 300, HealthOutcome("unreachable", T0)),
        # Exactly the policy's time counts.
        (False, T0 + 300_000, T0, 300, HealthOutcome("unavailable", T0)),
        (False, T0 + 900_000, T0, 300, HealthOutcome("unavailable", T0)),
        # 0 seconds: the first failure counts at once.
        (False, T0, None, 0, HealthOutcome("unavailable", T0)),
        # Fractions of a second are honoured.
        (False, T0 + 1_499, T0, 1.5, HealthOutcome("unreachable", T0)),
        (False, T0 + 1_500, T0, 1.5, HealthOutcome("unavailable", T0)),
        # A start stamped by a node whose clock runs ahead never lies in the future.
        (False, T0, T0 + 5_000, 300, HealthOutcome("unreachable", T0)),
    ],
)
def test_health_after_a_check(
    succeeded: bool,
    checked_ms: int,
    since_ms: int | None,
    after_seconds: float,
    expected: HealthOutcome,
) -> None:
    outcome = after_check(
        succeeded=succeeded,
        checked_ms=checked_ms,
        unreachable_since_ms=since_ms,
        unavailable_after_seconds=after_seconds,
    )
    assert outcome == expected


@pytest.mark.parametrize(
    ("since_ms", "after_seconds", "expected"),
    [(None, 300, None), (T0, 300, T0 + 300_000), (T0, 0, T0), (T0, 2.5, T0 + 2_500)],
)
def test_when_an_unreachable_machine_turns_unavailable(
    since_ms: int | None, after_seconds: float, expected: int | None
) -> None:
    assert becomes_unavailable_at_ms(since_ms, after_seconds) == expected
