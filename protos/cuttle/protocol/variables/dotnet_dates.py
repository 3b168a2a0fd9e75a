"""A port of .NET date parsing (common invariant/en-US shapes) and date format strings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from .dotnet_numbers import FormatError

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTH_INDEX = {m.lower(): i + 1 for i, m in enumerate(MONTHS)} | {
    m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)
}


@dataclass(frozen=True)
class DotnetDate:
    """A date-time with .NET's notion of kind: unspecified, utc, local, or fixed offset."""

    moment: datetime  # naive wall-clock time
    kind: str  # "unspecified", "utc", "local", "offset"
    offset: timedelta | None = None

    def effective_offset(self) -> timedelta:
        """The offset `z` specifiers print."""
        if self.kind == "utc":
            return timedelta(0)
        if self.offset is not None:
            return self.offset
        local = self.moment.astimezone().utcoffset()
        return local if local is not None else timedelta(0)


_ISO = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"\s*(Z|[+-]\d{1,2}(?::?\d{2})?)?"
)
_US = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})"
    r"(?:\s+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?\s*([AaPp][Mm])?)?"
    r"\s*(Z|[+-]\d{1,2}(?::?\d{2})?)?"
)
_NAMED = re.compile(
    r"(?:[A-Za-z]+,?\s+)?(?:(\d{1,2})\s+([A-Za-z]+)|([A-Za-z]+)\s+(\d{1,2}),?)\s+(\d{4})"
    r"(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?)?\s*(Z|GMT|[+-]\d{1,2}(?::?\d{2})?)?"
)


def _zone(text: str | None) -> tuple[str, timedelta | None]:
    if not text:
        return "unspecified", None
    if text in ("Z", "GMT"):
        return "utc", None
    sign = -1 if text[0] == "-" else 1
    body = text[1:].replace(":", "")
    hours = int(body[:-2]) if len(body) > 2 else int(body)
    minutes = int(body[-2:]) if len(body) > 2 else 0
    return "offset", sign * timedelta(hours=hours, minutes=minutes)


def _hour12(hour: int, ampm: str | None) -> int:
    if not ampm:
        return hour
    if hour > 12:
        raise ValueError("bad hour")
    pm = ampm.lower() == "pm"
    return (hour % 12) + (12 if pm else 0)


def parse_date(text: str) -> DotnetDate | None:
    """Parse a date-time the way DateTime.TryParse commonly succeeds (invariant/en-US)."""
    t = text.strip()
    try:
        m = _ISO.fullmatch(t)
        if m:
            y, mo, d, h, mi, s, frac, zone = m.groups()
            micro = int((frac or "0").ljust(7, "0")[:6])
            moment = datetime(
                int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro
            )
            kind, off = _zone(zone)
            return DotnetDate(moment, kind, off)
        m = _US.fullmatch(t)
        if m:
            mo, d, y, h, mi, s, frac, ampm, zone = m.groups()
            micro = int((frac or "0").ljust(7, "0")[:6])
            hour = _hour12(int(h or 0), ampm)
            moment = datetime(int(y), int(mo), int(d), hour, int(mi or 0), int(s or 0), micro)
            kind, off = _zone(zone)
            return DotnetDate(moment, kind, off)
        m = _NAMED.fullmatch(t)
        if m:
            d1, mon1, mon2, d2, y, h, mi, s, ampm, zone = m.groups()
            month = _MONTH_INDEX.get((mon1 or mon2).lower())
            if month is None:
                return None
            hour = _hour12(int(h or 0), ampm)
            moment = datetime(int(y), month, int(d1 or d2), hour, int(mi or 0), int(s or 0))
            kind, off = _zone(zone)
            return DotnetDate(moment, kind, off)
    except (ValueError, OverflowError):
        return None
    return None


def as_offset(date: DotnetDate) -> DotnetDate:
    """DateTimeOffset semantics: a date without a zone takes the local offset."""
    if date.kind == "unspecified":
        return DotnetDate(date.moment, "offset", date.effective_offset())
    if date.kind == "utc":
        return DotnetDate(date.moment, "offset", timedelta(0))
    return date


_STANDARD = {
    "d": "MM/dd/yyyy",
    "D": "dddd, dd MMMM yyyy",
    "f": "dddd, dd MMMM yyyy HH:mm",
    "F": "dddd, dd MMMM yyyy HH:mm:ss",
    "g": "MM/dd/yyyy HH:mm",
    "G": "MM/dd/yyyy HH:mm:ss",
    "m": "MMMM dd",
    "M": "MMMM dd",
    "s": "yyyy'-'MM'-'dd'T'HH':'mm':'ss",
    "t": "HH:mm",
    "T": "HH:mm:ss",
    "y": "yyyy MMMM",
    "Y": "yyyy MMMM",
}


def _to_utc(date: DotnetDate) -> DotnetDate:
    utc = date.moment - date.effective_offset()
    return DotnetDate(utc, "utc")


def format_date(date: DotnetDate, fmt: str, is_offset: bool) -> str:
    """Format like DateTime/DateTimeOffset.ToString(fmt) in the invariant culture."""
    if fmt == "":
        fmt = "G"
        if is_offset:
            return _custom(date, "MM/dd/yyyy HH:mm:ss zzz")
    if len(fmt) == 1:
        if fmt in "oO":
            base = _custom(date, "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffff")
            if date.kind == "utc" and not is_offset:
                return base + "Z"
            if is_offset or date.kind in ("local", "offset"):
                return base + _custom(date, "zzz")
            return base
        if fmt in "rR":
            return _custom(_to_utc(date), "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'")
        if fmt == "u":
            target = _to_utc(date) if is_offset else date
            return _custom(target, "yyyy'-'MM'-'dd HH':'mm':'ss'Z'")
        if fmt == "U":
            if is_offset:
                raise FormatError("U is not valid for DateTimeOffset")
            return _custom(_to_utc(date), "dddd, dd MMMM yyyy HH:mm:ss")
        if fmt in _STANDARD:
            return _custom(date, _STANDARD[fmt])
        raise FormatError(f"unknown standard date format {fmt}")
    return _custom(date, fmt)


def _run(fmt: str, i: int) -> int:
    j = i
    while j < len(fmt) and fmt[j] == fmt[i]:
        j += 1
    return j - i


def _offset_text(off: timedelta, width: int) -> str:
    total = int(off.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    if width == 1:
        return f"{sign}{hours}"
    if width == 2:
        return f"{sign}{hours:02d}"
    return f"{sign}{hours:02d}:{minutes:02d}"


def _custom(date: DotnetDate, fmt: str) -> str:
    d = date.moment
    out: list[str] = []
    i = 0
    ticks = f"{d.microsecond:06d}0"
    while i < len(fmt):
        c = fmt[i]
        if c in "'\"":
            end = fmt.find(c, i + 1)
            if end < 0:
                raise FormatError("unterminated quote")
            out.append(fmt[i + 1 : end])
            i = end + 1
            continue
        if c == "\\":
            if i + 1 >= len(fmt):
                raise FormatError("trailing backslash")
            out.append(fmt[i + 1])
            i += 2
            continue
        if c == "%":
            if i + 1 < len(fmt) and fmt[i + 1] != "%":
                out.append(_custom(date, fmt[i + 1]) if fmt[i + 1] not in "'\"\\" else "")
                i += 2
                continue
            raise FormatError("bad %")
        n = _run(fmt, i)
        if c == "d":
            out.append(
                str(d.day)
                if n == 1
                else f"{d.day:02d}"
                if n == 2
                else DAYS[d.weekday()][:3]
                if n == 3
                else DAYS[d.weekday()]
            )
        elif c == "M":
            out.append(
                str(d.month)
                if n == 1
                else f"{d.month:02d}"
                if n == 2
                else MONTHS[d.month - 1][:3]
                if n == 3
                else MONTHS[d.month - 1]
            )
        elif c == "y":
            out.append(
                str(d.year % 100)
                if n == 1
                else f"{d.year % 100:02d}"
                if n == 2
                else str(d.year).rjust(n, "0")
            )
        elif c in "hH":
            hour = d.hour if c == "H" else (d.hour % 12 or 12)
            out.append(str(hour) if n == 1 else f"{hour:02d}")
        elif c == "m":
            out.append(str(d.minute) if n == 1 else f"{d.minute:02d}")
        elif c == "s":
            out.append(str(d.second) if n == 1 else f"{d.second:02d}")
        elif c in "fF":
            if n > 7:
                raise FormatError("too many f")
            digits = ticks[:n]
            out.append(digits if c == "f" else digits.rstrip("0"))
            if c == "F" and not digits.rstrip("0") and out and out[-1] == "" and False:
                pass
        elif c == "t":
            ampm = "AM" if d.hour < 12 else "PM"
            out.append(ampm[0] if n == 1 else ampm)
        elif c == "z":
            out.append(_offset_text(date.effective_offset(), min(n, 3)))
        elif c == "K":
            if date.kind == "utc":
                out.append("Z")
            elif date.kind != "unspecified":
                out.append(_offset_text(date.effective_offset(), 3))
            n = 1
        elif c == "g":
            out.append("A.D.")
        elif c in ":/":
            out.append(c)
            n = 1
        else:
            out.append(c)
            n = 1
        i += n
    return "".join(out)


def now(utc: bool) -> DotnetDate:
    """The current time as .NET's DateTime.Now / DateTime.UtcNow."""
    if utc:
        return DotnetDate(datetime.now(UTC).replace(tzinfo=None), "utc")
    local = datetime.now().astimezone()
    off = local.utcoffset()
    return DotnetDate(local.replace(tzinfo=None), "local", off)


def add(date: DotnetDate, delta: timedelta) -> DotnetDate:
    """Shift a date, keeping its kind and offset."""
    return DotnetDate(date.moment + delta, date.kind, date.offset)


_ = timezone
