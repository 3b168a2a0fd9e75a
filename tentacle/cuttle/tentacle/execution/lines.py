"""Turning raw pipe chunks into blocks of whole lines.

Secrets are masked (cuttle.protocol.masking) on complete lines, never on raw ``read()`` chunks:
a secret split across two chunks is whole again once the line is assembled.
"""

from __future__ import annotations

__all__ = ["MAX_LINE", "Block", "LineAssembler"]

# Lines up to this size arrive whole; longer ones are cut into pieces of this size so one
# runaway line cannot exhaust memory, and nothing is dropped.
MAX_LINE = 4 * 1024 * 1024

Block = tuple[bytes, int]
"""Complete lines joined by "\\n" (no trailing newline), and how many there are."""


class LineAssembler:
    """Accumulates bytes and hands back blocks of complete lines (without the newlines)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> list[Block]:
        """Add a chunk; return the lines it completed, in order, as blocks."""
        last_newline = chunk.rfind(b"\n")
        if last_newline < 0:
            self._partial += chunk
            return self._cut_partial()
        head = chunk[:last_newline]
        if self._partial:
            self._partial += head
            head = bytes(self._partial)
            self._partial.clear()
        self._partial += chunk[last_newline + 1 :]
        blocks = self._blocks(head)
        blocks.extend(self._cut_partial())
        return blocks

    def flush(self) -> list[Block]:
        """Return the unterminated tail (at end of stream), if any."""
        if not self._partial:
            return []
        tail = bytes(self._partial)
        self._partial.clear()
        return [(tail, 1)]

    def _blocks(self, text: bytes) -> list[Block]:
        if len(text) <= self._max_line:
            # No line in it can be overlong: the common case costs one count() in C.
            return [(text, text.count(b"\n") + 1)]
        blocks: list[Block] = []
        run: list[bytes] = []
        for line in text.split(b"\n"):
            if len(line) <= self._max_line:
                run.append(line)
                continue
            if run:
                blocks.append((b"\n".join(run), len(run)))
                run = []
            blocks.extend(
                (line[i : i + self._max_line], 1) for i in range(0, len(line), self._max_line)
            )
        if run:
            blocks.append((b"\n".join(run), len(run)))
        return blocks

    def _cut_partial(self) -> list[Block]:
        pieces: list[Block] = []
        while len(self._partial) >= self._max_line:
            pieces.append((bytes(self._partial[: self._max_line]), 1))
            del self._partial[: self._max_line]
        return pieces
