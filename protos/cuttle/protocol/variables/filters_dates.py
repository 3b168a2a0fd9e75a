"""Format, NowDate/NowDateUtc and AddHours/AddDays."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from .calc import parse_dotnet_double
from .dotnet_dates import DotnetDate, add, as_offset, format_date, now, parse_date
from .dotnet_numbers import FormatError, format_number, parse_decimal, parse_double
from .filters_text import dotnet_int


def _format_date(date: DotnetDate, fmt: str, is_offset: bool) -> str | None:
    try:
        return format_date(as_offset(date) if is_offset else date, fmt, is_offset)
    except (FormatError, ValueError, OverflowError):
        return None


def _format_number(
    value: Decimal, fmt: str, is_integer: bool, is_double: bool = False
) -> str | None:
    try:
        return format_number(value, fmt, is_integer, is_double)
    except (FormatError, ArithmeticError, ValueError):
        return None


def format_value(value: str | None, args: list[str]) -> str | None:
    """Apply a .NET format string, reading the input as a number or else a date."""
    if value is None or not args:
        return None
    if len(args) == 1:
        fmt = args[0]
        number = parse_decimal(value)
        if number is not None:
            return _format_number(number, fmt, is_integer=False)
        date = parse_date(value)
        return None if date is None else _format_date(date, fmt, is_offset=True)
    if len(args) != 2:
        return None
    kind, fmt = args[0].lower(), args[1]
    if kind in ("int", "int32"):
        n = dotnet_int(value)
        return None if n is None else _format_number(Decimal(n), fmt, is_integer=True)
    if kind == "double":
        d = parse_double(value)
        return None if d is None else _format_number(d, fmt, is_integer=False, is_double=True)
    if kind == "decimal":
        dec = parse_decimal(value)
        return None if dec is None else _format_number(dec, fmt, is_integer=False)
    if kind in ("date", "datetime", "datetimeoffset"):
        date = parse_date(value)
        return None if date is None else _format_date(date, fmt, kind == "datetimeoffset")
    return None


def _now(value: str | None, args: list[str], utc: bool) -> str | None:
    if value is not None or len(args) > 1:
        return None
    fmt = args[0] if args else "O"
    date = now(utc)
    if not args and not utc:
        # The reference shows local round-trip output without an offset.
        return format_date(DotnetDate(date.moment, "unspecified"), "O", False)
    try:
        return format_date(date, fmt, False)
    except (FormatError, ValueError):
        return None


def now_date(value: str | None, args: list[str]) -> str | None:
    """The local time (no input allowed), optionally formatted."""
    return _now(value, args, utc=False)


def now_date_utc(value: str | None, args: list[str]) -> str | None:
    """The UTC time (no input allowed), optionally formatted."""
    return _now(value, args, utc=True)


def _add(value: str | None, args: list[str], unit: timedelta) -> str | None:
    if value is None or len(args) != 1:
        return None
    amount = parse_dotnet_double(args[0])
    date = parse_date(value)
    if amount is None or date is None or amount != amount or abs(amount) > 1e7:
        return None
    try:
        shifted = add(date, unit * amount)
        return format_date(shifted, "O", date.kind == "offset")
    except (OverflowError, ValueError, FormatError):
        return None


def add_hours(value: str | None, args: list[str]) -> str | None:
    """Add (possibly fractional or negative) hours to a date; prints round-trip `O`."""
    return _add(value, args, timedelta(hours=1))


def add_days(value: str | None, args: list[str]) -> str | None:
    """Add (possibly fractional or negative) days to a date; prints round-trip `O`."""
    return _add(value, args, timedelta(days=1))
