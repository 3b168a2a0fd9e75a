"""Character classes and the path grammar shared by templates, variable names and calc."""

from __future__ import annotations

from .nodes import IndexStep, NameStep, Step, Symbol, SymbolIndexStep

_IDENT_PUNCT = frozenset("_-:/~()@")
# .NET's char.IsWhiteSpace does not include the ASCII separators 0x1C-0x1F; Python's isspace does.
_NOT_DOTNET_WS = frozenset("\x1c\x1d\x1e\x1f")
_KEYWORDS_AFTER_WS = ("in", "==", "!=")


class ParseFail(Exception):
    """Internal: a grammar alternative failed at `pos` (the furthest point reached)."""

    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


def is_ws(c: str) -> bool:
    """True for characters .NET treats as whitespace."""
    return c.isspace() and c not in _NOT_DOTNET_WS


def dotnet_strip(text: str) -> str:
    """Trim whitespace the way .NET's String.Trim does."""
    start, end = 0, len(text)
    while start < end and is_ws(text[start]):
        start += 1
    while end > start and is_ws(text[end - 1]):
        end -= 1
    return text[start:end]


def is_ident_char(c: str) -> bool:
    """Characters allowed in an identifier, whitespace excluded."""
    return c.isalpha() or c.isdecimal() or c in _IDENT_PUNCT


class Scanner:
    """Position-based recursive-descent helpers over one source string."""

    def __init__(self, source: str) -> None:
        self.s = source
        self.n = len(source)

    def skip_ws(self, i: int) -> int:
        """Return the first index at or after `i` that is not whitespace."""
        s, n = self.s, self.n
        while i < n and is_ws(s[i]):
            i += 1
        return i

    def _ws_stops_identifier(self, j: int) -> bool:
        # A whitespace ends an identifier when followed by `|` or `}`, or by in/==/!= plus
        # whitespace (case-sensitive, as Octostache checks it); that is what makes
        # `#{each x in L}` and `#{if A == B}` parse.
        s, n = self.s, self.n
        if j + 1 < n and s[j + 1] in "|}":
            return True
        for kw in _KEYWORDS_AFTER_WS:
            end = j + 1 + len(kw)
            if end < n and s.startswith(kw, j + 1) and is_ws(s[end]):
                return True
        return False

    def identifier(self, i: int, allow_ws: bool = True) -> tuple[str, int]:
        """Parse an identifier at `i`; returns (trimmed text, end)."""
        s, n = self.s, self.n
        j = i
        while j < n:
            c = s[j]
            if is_ident_char(c) or (allow_ws and is_ws(c) and not self._ws_stops_identifier(j)):
                j += 1
            else:
                break
        if j == i:
            raise ParseFail(i, "expected a name")
        return dotnet_strip(s[i:j]), j

    def symbol(self, i: int) -> tuple[Symbol, int]:
        """Parse a variable path: identifier ( `.identifier` | indexer )*."""
        s, n = self.s, self.n
        first, j = self.identifier(i)
        steps: list[Step] = [NameStep(first)]
        while j < n:
            c = s[j]
            if c == ".":
                try:
                    name, k = self.identifier(j + 1)
                except ParseFail:
                    break
                steps.append(NameStep(name))
                j = k
            elif c == "[":
                try:
                    step, k = self.indexer(j)
                except ParseFail:
                    break
                steps.append(step)
                j = k
            else:
                break
        return Symbol(tuple(steps)), j

    def indexer(self, i: int) -> tuple[Step, int]:
        """Parse `[#{Symbol}]`, `[literal text with balanced [..]]` or `[]` at `i`."""
        s = self.s
        k = self.skip_ws(i + 1)
        if s.startswith("#{", k) and not s.startswith("#{/", k):
            try:
                sym, end = self.substitution_symbol(k)
                end = self.skip_ws(end)
                if end < self.n and s[end] == "]":
                    return SymbolIndexStep(sym), end + 1
            except ParseFail:
                pass
        text, end = self._string_index(i)
        return IndexStep(text), end

    def _string_index(self, i: int) -> tuple[str, int]:
        # Literal index: leading whitespace is dropped, trailing whitespace kept, nested
        # balanced brackets are part of the key (`Package[containers[0].name]`).
        s, n = self.s, self.n
        j = self.skip_ws(i + 1)
        parts: list[str] = []
        while j < n:
            c = s[j]
            if c == "]":
                return "".join(parts), j + 1
            if c == "[":
                inner, j = self._string_index(j)
                parts.append("[" + inner + "]")
                # whitespace straight after a nested index belongs to the surrounding token
                k = self.skip_ws(j)
                if k < n and s[k] == "]":
                    j = k
                continue
            k = j
            while k < n and s[k] not in "[]":
                k += 1
            parts.append(s[j:k])
            j = k
        raise ParseFail(n, "unclosed '[' in index")

    def substitution_symbol(self, i: int) -> tuple[Symbol, int]:
        """Parse `#{ Symbol }` (no filters) at `i`; used for variable indexes."""
        j = self.skip_ws(i + 2)
        sym, j = self.symbol(j)
        j = self.skip_ws(j)
        if j < self.n and self.s[j] == "}":
            return sym, j + 1
        raise ParseFail(j, "expected '}'")


def parse_name(name: str) -> Symbol | None:
    """Parse a variable name as a path, keeping the longest prefix that parses (Octostache)."""
    scanner = Scanner(name)
    try:
        sym, _ = scanner.symbol(0)
    except (ParseFail, RecursionError):
        return None
    return sym
