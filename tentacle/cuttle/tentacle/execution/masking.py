"""Turning raw pipe chunks into whole lines, and masking secrets in them.

Masking works on complete lines, never on raw ``read()`` chunks: a secret split across two
chunks is whole again once the line is assembled.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "MAX_LINE", "MIN_SECRET_LENGTH", "LineAssembler", "Masker"]

MASK = b"********"
# Lines up to this size arrive whole; longer ones are cut into pieces of this size so one
# runaway line cannot exhaust memory, and nothing is dropped.
MAX_LINE = 4 * 1024 * 1024
# Secrets shorter than this are not masked: masking "a" or "1" would shred every line of output
# while hiding nothing (a 1-2 character secret is guessable anyway), and the "********" would
# itself point at where the value occurs.
MIN_SECRET_LENGTH = 3


class LineAssembler:
    """Accumulates bytes and hands back complete lines (without the newline)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add a chunk; return the lines it completed, in order."""
        lines: list[bytes] = []
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            if self._partial:
                self._partial += chunk[start:newline]
                lines.extend(self._cut(bytes(self._partial)))
                self._partial.clear()
            else:
                lines.extend(self._cut(chunk[start:newline]))
            start = newline + 1
        self._partial += chunk[start:]
        while len(self._partial) >= self._max_line:
            lines.append(bytes(self._partial[: self._max_line]))
            del self._partial[: self._max_line]
        return lines

    def flush(self) -> list[bytes]:
        """Return the unterminated tail (at end of stream), if any."""
        if not self._partial:
            return []
        tail = bytes(self._partial)
        self._partial.clear()
        return [tail]

    def _cut(self, line: bytes) -> list[bytes]:
        if len(line) <= self._max_line:
            return [line]
        return [line[i : i + self._max_line] for i in range(0, len(line), self._max_line)]


class Masker:
    """Replaces every known secret in a line with ``********``."""

    def __init__(self) -> None:
        self._secrets: set[bytes] = set()
        self._pattern: re.Pattern[bytes] | None = None

    def add(self, secret: str) -> None:
        """Start masking a value (and each of its lines, since output is masked line by line)."""
        raw = secret.encode("utf-8")
        candidates = {raw, *raw.split(b"\n"), *raw.splitlines()}
        added = False
        for candidate in candidates:
            if len(candidate.strip()) >= MIN_SECRET_LENGTH and candidate not in self._secrets:
                self._secrets.add(candidate)
                added = True
        if added:
            # Longest first so a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile(b"|".join(re.escape(s) for s in ordered))

    def mask(self, line: bytes) -> bytes:
        """Return the line with every secret replaced."""
        if self._pattern is None:
            return line
        return self._pattern.sub(MASK, line)

    def mask_text(self, text: str) -> str:
        """Mask a str (failure messages, reasons) the same way as output bytes."""
        if self._pattern is None:
            return text
        return self.mask(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
