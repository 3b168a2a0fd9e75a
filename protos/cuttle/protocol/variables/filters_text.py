"""Case, trim, edit and comparison filters."""

from __future__ import annotations

import re

from .dotnet_regex import compile_dotnet, replacement
from .lexer import is_ws

_INT32_MAX = 2**31 - 1


def dotnet_int(text: str) -> int | None:
    """Parse like .NET int.TryParse: surrounding whitespace, optional sign, ASCII digits."""
    t = text.strip()
    digits = t[1:] if t[:1] in "+-" else t
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    value = int(t)
    return value if -(2**31) <= value <= _INT32_MAX else None


def _map_chars(text: str, upper: bool) -> str:
    mapped = text.upper() if upper else text.lower()
    if len(mapped) == len(text):
        return mapped
    # .NET maps one UTF-16 unit to one (no ß -> SS); keep characters whose mapping expands.
    out = []
    for ch in text:
        m = ch.upper() if upper else ch.lower()
        out.append(m if len(m) == 1 else ch)
    return "".join(out)


def to_upper(value: str | None, args: list[str]) -> str | None:
    """Upper-case the text."""
    return None if value is None or args else _map_chars(value, True)


def to_lower(value: str | None, args: list[str]) -> str | None:
    """Lower-case the text."""
    return None if value is None or args else _map_chars(value, False)


def _lstrip(text: str) -> str:
    i = 0
    while i < len(text) and is_ws(text[i]):
        i += 1
    return text[i:]


def _rstrip(text: str) -> str:
    j = len(text)
    while j > 0 and is_ws(text[j - 1]):
        j -= 1
    return text[:j]


def trim(value: str | None, args: list[str]) -> str | None:
    """Trim both ends, or only `start` / `end`."""
    if value is None:
        return None
    if not args:
        return _lstrip(_rstrip(value))
    mode = args[0].lower()
    if mode == "start":
        return _lstrip(value)
    if mode == "end":
        return _rstrip(value)
    return None


def truncate(value: str | None, args: list[str]) -> str | None:
    """Keep the first n characters and add `...` (or the given suffix) when longer."""
    if value is None or not args:
        return None
    length = dotnet_int(args[0])
    if length is None or length < 0:
        return None
    suffix = args[1] if len(args) > 1 else "..."
    return value[:length] + suffix if length < len(value) else value


def substring(value: str | None, args: list[str]) -> str | None:
    """`len` characters from the start, or `start len`; an overrunning length is clamped."""
    if value is None or not 1 <= len(args) <= 2:
        return None
    numbers: list[int] = []
    for arg in args:
        number = dotnet_int(arg)
        if number is None or number < 0:
            return None
        numbers.append(number)
    start, length = (0, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
    if start > len(value):
        return None
    return value[start : start + length]


def replace(value: str | None, args: list[str]) -> str | None:
    """Replace every match of a .NET regex; the replacement uses .NET `$` syntax."""
    if value is None or not 1 <= len(args) <= 2:
        return None
    rx = compile_dotnet(args[0])
    if rx is None:
        return None
    repl = args[1] if len(args) > 1 else ""
    return rx.sub(replacement(rx, repl, value), value)


def match(value: str | None, args: list[str]) -> str | None:
    """`true` when the .NET regex matches anywhere in the text."""
    if value is None or len(args) != 1:
        return None
    rx = compile_dotnet(args[0])
    if rx is None:
        return None
    return "true" if rx.search(value) else "false"


def append(value: str | None, args: list[str]) -> str | None:
    """Add the arguments after the text (works with no input)."""
    if not args:
        return None
    return (value or "") + "".join(args)


def prepend(value: str | None, args: list[str]) -> str | None:
    """Add the arguments before the text (works with no input)."""
    if not args:
        return None
    return "".join(args) + (value or "")


_DUAL_SIZE = re.compile(r"^(?:(\d{1,3})?(/))?(\d{1,3})$")


def _byte(text: str) -> int | None:
    n = dotnet_int(text)
    return n if n is not None and 0 <= n <= 255 else None


def _indent_options(args: list[str]) -> tuple[str, str] | None:
    if not args:
        return "    ", "    "
    if len(args) == 2:
        return args[0], args[1]
    if len(args) > 2:
        return None
    m = _DUAL_SIZE.match(args[0])
    if m:
        initial, slash, subsequent = m.group(1), m.group(2), m.group(3)
        sub = _byte(subsequent)
        if slash and initial is not None:
            ini = _byte(initial)
            if ini is not None and sub is not None:
                return " " * ini, " " * sub
        elif slash:
            if sub is not None:
                return "", " " * sub
        elif sub is not None:
            return " " * sub, " " * sub
    return args[0], args[0]


def indent(value: str | None, args: list[str]) -> str | None:
    """Indent the first line and every later line (split on LF)."""
    if value is None:
        return None
    if value == "":
        return ""
    opts = _indent_options(args)
    if opts is None:
        return None
    return opts[0] + value.replace("\n", "\n" + opts[1])


def _compare(value: str | None, args: list[str], test: str) -> str | None:
    if value is None or len(args) != 1:
        return None
    arg = args[0]
    if test == "starts":
        ok = value.startswith(arg)
    elif test == "ends":
        ok = value.endswith(arg)
    else:
        ok = arg in value
    return "true" if ok else "false"


def starts_with(value: str | None, args: list[str]) -> str | None:
    """`true` when the text starts with the argument (ordinal)."""
    return _compare(value, args, "starts")


def ends_with(value: str | None, args: list[str]) -> str | None:
    """`true` when the text ends with the argument (ordinal)."""
    return _compare(value, args, "ends")


def contains(value: str | None, args: list[str]) -> str | None:
    """`true` when the text contains the argument (ordinal)."""
    return _compare(value, args, "contains")


def null(value: str | None, args: list[str]) -> str | None:
    """Always nothing."""
    return None
