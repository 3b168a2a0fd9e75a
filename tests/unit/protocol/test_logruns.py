"""Cutting a run of log lines at a line boundary."""

from __future__ import annotations

from cuttle.protocol.logruns import head_lines


def test_head_lines_splits_after_whole_lines() -> None:
    assert head_lines(b"a\nb\nc", 1) == (b"a", b"b\nc")
    assert head_lines(b"a\nb\nc", 2) == (b"a\nb", b"c")
    assert head_lines(b"a\nb\nc", 3) == (b"a\nb\nc", b"")
    assert head_lines(b"\n\n", 1) == (b"", b"\n")
    assert head_lines(b"", 1) == (b"", b"")
