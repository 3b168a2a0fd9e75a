"""Machine health after a check: when an unreachable machine starts to count as unavailable.

A failed health check does not make a machine unavailable at once: networks blip and agents
restart. The first failure starts a run of failures (`unreachable_since`); while the run is
shorter than the machine policy's `unavailable_after_seconds` the machine is "unreachable" (work
is still tried), and from then on it is "unavailable" (work skips it). One successful check
ends the run. A policy of 0 seconds makes the first failure count at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CheckedHealth = Literal["healthy", "unreachable", "unavailable"]


@dataclass(frozen=True)
class HealthOutcome:
    """What to record after a check: the health and when the current run of failures began."""

    health: CheckedHealth
    unreachable_since_ms: int | None


def after_check(
    *,
    succeeded: bool,
    checked_ms: int,
    unreachable_since_ms: int | None,
    unavailable_after_seconds: float,
) -> HealthOutcome:
    """The health a machine has after a check that succeeded or failed at checked_ms."""
    if succeeded:
        return HealthOutcome("healthy", None)
    since = checked_ms if unreachable_since_ms is None else min(unreachable_since_ms, checked_ms)
    if checked_ms - since >= unavailable_after_seconds * 1000:
        return HealthOutcome("unavailable", since)
    return HealthOutcome("unreachable", since)


def becomes_unavailable_at_ms(
    unreachable_since_ms: int | None, unavailable_after_seconds: float
) -> int | None:
    """When an unreachable machine would count as unavailable, if the next check fails too."""
    if unreachable_since_ms is None:
        return None
    return unreachable_since_ms + int(unavailable_after_seconds * 1000)
