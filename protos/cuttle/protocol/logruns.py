"""Cutting runs of log lines (lines joined by "\\n"), the same on the Tentacle and the server.

A run is how output travels and is kept (see LogRun in tentacle.proto): its text is its lines
joined by "\\n". Readers that resume "after sequence N" in the middle of a run, or that must
stop at a line limit, cut it at a line boundary with this.
"""

from __future__ import annotations

__all__ = ["head_lines"]


def head_lines(text: bytes, count: int) -> tuple[bytes, bytes]:
    """Split run text after its first ``count`` lines: (those lines, the rest without its "\\n")."""
    end = -1
    for _ in range(count):
        end = text.find(b"\n", end + 1)
        if end < 0:
            return text, b""
    return text[:end], text[end + 1 :]
