"""Translate .NET regular expressions and replacement strings to Python's `re`."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

_NAMED_GROUP = re.compile(r"\(\?<(?![=!])([A-Za-z_][A-Za-z0-9_]*)>|\(\?'([A-Za-z_][A-Za-z0-9_]*)'")
_BACKREF = re.compile(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>|\\k'([A-Za-z_][A-Za-z0-9_]*)'")


def _translate(pattern: str) -> str:
    # Walk the pattern so escapes such as `\\(?<x>` are not mistaken for syntax.
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            m = _BACKREF.match(pattern, i)
            if m:
                out.append(f"(?P={m.group(1) or m.group(2)})")
                i = m.end()
                continue
            nxt = pattern[i + 1]
            if nxt == "z":
                out.append(r"\Z")  # .NET \z is the very end, which is Python's \Z
            elif nxt == "Z":
                out.append(r"(?=\n?\Z)")  # .NET \Z also allows one final newline
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "(":
            m = _NAMED_GROUP.match(pattern, i)
            if m:
                out.append(f"(?P<{m.group(1) or m.group(2)}>")
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def compile_dotnet(pattern: str) -> re.Pattern[str] | None:
    """Compile a .NET pattern; None when Python cannot express it."""
    try:
        return re.compile(_translate(pattern))
    except (re.error, RecursionError, OverflowError, ValueError):
        return None


def replacement(rx: re.Pattern[str], template: str, subject: str) -> Callable[[re.Match[str]], str]:
    """Build a re.sub callback applying a .NET replacement string ($1, ${name}, $$, $&...)."""
    parts: list[str | int] = []  # str = literal, int = group number, -1.. = specials
    names = rx.groupindex
    i, n = 0, len(template)
    lit: list[str] = []
    while i < n:
        c = template[i]
        if c != "$" or i + 1 >= n:
            lit.append(c)
            i += 1
            continue
        nxt = template[i + 1]
        ref: int | None = None
        end = i + 2
        if nxt == "$":
            lit.append("$")
            i += 2
            continue
        if nxt.isdigit():
            j = i + 1
            while j < n and template[j].isdigit():
                j += 1
            # .NET takes the longest digit run that names an existing group.
            for k in range(j, i + 1, -1):
                num = int(template[i + 1 : k])
                if num <= rx.groups:
                    ref, end = num, k
                    break
        elif nxt == "{":
            close = template.find("}", i + 2)
            if close > 0:
                name = template[i + 2 : close]
                if name.isdigit() and int(name) <= rx.groups:
                    ref, end = int(name), close + 1
                elif name in names:
                    ref, end = names[name], close + 1
        elif nxt == "&":
            ref = 0
        elif nxt in "`'+_":
            ref = {"`": -1, "'": -2, "+": -3, "_": -4}[nxt]
        if ref is None:
            lit.append("$")
            i += 1
            continue
        if lit:
            parts.append("".join(lit))
            lit.clear()
        parts.append(ref)
        i = end
    if lit:
        parts.append("".join(lit))

    def apply(m: re.Match[str]) -> str:
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
            elif part >= 0:
                out.append(m.group(part) or "")
            elif part == -1:
                out.append(subject[: m.start()])
            elif part == -2:
                out.append(subject[m.end() :])
            elif part == -3:
                out.append((m.group(rx.groups) or "") if rx.groups else m.group(0))
            else:
                out.append(subject)
        return "".join(out)

    return apply
