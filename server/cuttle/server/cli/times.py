"""Times typed on the command line: `--since 2h` or `--since 2026-12-07T10:00:00Z`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGO = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """A moment given as an age (`90s`, `30m`, `2h`, `7d`, `1w`) or an ISO 8601 / RFC 3339 time.

    A time without a zone is UTC, as every time Cuttle prints is.
    """
    value = text.strip()
    match = _AGO.match(value.lower())
    if match:
        amount, unit = match.groups()
        return now - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an age (30m, 2h, 7d) nor a time (2026-12-07T10:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_duration(milliseconds: int) -> str:
    """A duration for tables: 850ms, 42s, 3m 05s, 2h 07m."""
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    seconds = milliseconds // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
