"""Errors raised by the template parser."""

from __future__ import annotations


class TemplateSyntaxError(ValueError):
    """A malformed template, with the 1-based line and column of the problem."""

    def __init__(self, message: str, line: int, column: int, position: int) -> None:
        super().__init__(f"{message} (line {line}, column {column})")
        self.message = message
        self.line = line
        self.column = column
        self.position = position


def line_and_column(source: str, position: int) -> tuple[int, int]:
    """Return the 1-based line and column of `position` in `source`."""
    position = max(0, min(position, len(source)))
    line = source.count("\n", 0, position) + 1
    last_newline = source.rfind("\n", 0, position)
    return line, position - last_newline
