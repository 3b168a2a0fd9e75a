"""Times typed on the command line, and durations printed in tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cuttle.server.cli.times import format_duration, parse_since

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2H", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2026-12-07T10:00:00Z", datetime(2026, 12, 7, 10, tzinfo=UTC)),
        ("2026-12-07T11:00:00+01:00", datetime(2026, 12, 7, 10, tzinfo=UTC)),
        # No zone: UTC, as every time Cuttle prints.
        ("2026-12-07 10:00", datetime(2026, 12, 7, 10, tzinfo=UTC)),
        ("2026-12-06", datetime(2026, 12, 6, tzinfo=UTC)),
    ],
)
def test_since_takes_an_age_or_a_time(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "5 parsecs", "-2h"])
def test_since_refuses_anything_else_and_says_what_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match="neither an age"):
        parse_since(text, NOW)


@pytest.mark.parametrize(
    ("ms", "text"),
    [(850, "850ms"), (42_000, "42s"), (185_000, "3m 05s"), (7_620_000, "2h 07m")],
)
def test_durations_read_as_people_say_them(ms: int, text: str) -> None:
    assert format_duration(ms) == text
