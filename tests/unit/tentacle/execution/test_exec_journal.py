"""The durable journal: sequence numbers, paging, torn-tail recovery."""

from __future__ import annotations

import os
from pathlib import Path

from cuttle.tentacle.execution.journal import Journal
from cuttle.tentacle.execution.model import LogLevel, LogSource


def lines(*texts: bytes) -> list[tuple[int, LogSource, LogLevel, bytes]]:
    return [(1_700_000_000_000, LogSource.STDOUT, LogLevel.INFO, t) for t in texts]


def test_sequences_start_at_one_and_page_exactly(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    for batch in range(10):
        journal.append(lines(*(f"{batch}-{i}".encode() for i in range(100))))
    assert journal.last_sequence == 1000
    seen: list[int] = []
    after = 0
    while True:
        page, more = journal.read_after(after, 37)
        seen.extend(line.sequence for line in page)
        if not more:
            break
        after = page[-1].sequence
    assert seen == list(range(1, 1001))
    page, more = journal.read_after(555, 1)
    assert [(p.sequence, p.text) for p in page] == [(556, b"5-55")]
    assert more
    assert journal.read_after(1000, 10) == ([], False)
    journal.close()


def test_reopen_keeps_lines_and_continues_numbering(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.append(lines(b"a", b"\xff\x00binary"))
    journal.close()
    reopened = Journal(tmp_path / "journal")
    assert reopened.last_sequence == 2
    reopened.append(lines(b"c"))
    page, _ = reopened.read_after(0, 10)
    assert [(p.sequence, p.text) for p in page] == [(1, b"a"), (2, b"\xff\x00binary"), (3, b"c")]
    reopened.close()


def test_torn_last_record_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path)
    journal.append(lines(b"whole one", b"whole two"))
    journal.close()
    good_size = path.stat().st_size
    with open(path, "ab") as f:  # a crash mid-write: header promises 100 bytes, 3 arrive
        f.write((3).to_bytes(8, "little") + bytes(8) + b"\x01\x01" + (100).to_bytes(4, "little"))
        f.write(b"abc")
    reopened = Journal(path)
    assert reopened.last_sequence == 2
    assert os.path.getsize(path) == good_size
    reopened.append(lines(b"after crash"))
    page, _ = reopened.read_after(2, 10)
    assert [(p.sequence, p.text) for p in page] == [(3, b"after crash")]
    reopened.close()


def test_byte_budget_limits_a_page_but_returns_at_least_one_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.append(lines(b"x" * 1000, b"y" * 1000, b"z"))
    page, more = journal.read_after(0, 100, max_bytes=1500)
    assert [p.sequence for p in page] == [1]
    assert more
    page, more = journal.read_after(0, 100, max_bytes=10)
    assert [p.sequence for p in page] == [1]
    journal.close()
