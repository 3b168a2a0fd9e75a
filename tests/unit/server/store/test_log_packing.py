"""The chunk format of the task log: runs now, per-line chunks from before still readable."""

from __future__ import annotations

import struct

import pytest

from cuttle.server.domain.scripts import LogRun
from cuttle.server.store import log_packing
from cuttle.server.store.records import LogLineRecord


def test_runs_unpack_line_by_line_with_their_sequences() -> None:
    chunk = log_packing.pack([LogRun(5, 100, 1, 2, b"a\n\nc", 3), LogRun(8, 101, 2, 5, b"\xff", 1)])
    assert list(log_packing.unpack(chunk)) == [
        LogLineRecord(5, 100, 1, 2, b"a"),
        LogLineRecord(6, 100, 1, 2, b""),
        LogLineRecord(7, 100, 1, 2, b"c"),
        LogLineRecord(8, 101, 2, 5, b"\xff"),
    ]


def test_chunks_written_before_runs_stay_readable() -> None:
    old = struct.Struct(">qqBBI")
    chunk = old.pack(1, 100, 1, 2, 3) + b"one" + old.pack(2, 101, 2, 5, 0)
    assert list(log_packing.unpack(chunk)) == [
        LogLineRecord(1, 100, 1, 2, b"one"),
        LogLineRecord(2, 101, 2, 5, b""),
    ]


def test_a_run_whose_count_disagrees_with_its_text_is_an_error() -> None:
    chunk = log_packing.pack([LogRun(1, 100, 1, 2, b"a\nb", 3)])
    with pytest.raises(ValueError, match="holds 2, not 3"):
        list(log_packing.unpack(chunk))
