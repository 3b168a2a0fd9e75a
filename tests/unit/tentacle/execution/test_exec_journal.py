"""The durable journal: runs of lines, sequence numbers, paging, torn-tail recovery, upgrade."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from cuttle.tentacle.execution.journal import MAGIC, Journal, PendingRun
from cuttle.tentacle.execution.model import LogLevel, LogRun, LogSource

STAMP = 1_700_000_000_000


def one_line_runs(*texts: bytes) -> list[PendingRun]:
    return [(STAMP, LogSource.STDOUT, LogLevel.INFO, t, 1) for t in texts]


def run_of(*texts: bytes, source: LogSource = LogSource.STDOUT) -> PendingRun:
    return (STAMP, source, LogLevel.INFO, b"\n".join(texts), len(texts))


def flatten(runs: list[LogRun]) -> list[tuple[int, bytes]]:
    """(sequence, text) per line; checks every run's count matches its text."""
    out: list[tuple[int, bytes]] = []
    for run in runs:
        texts = run.lines()
        assert len(texts) == run.count
        out.extend((run.sequence + i, t) for i, t in enumerate(texts))
    return out


def test_sequences_start_at_one_and_page_exactly(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    for batch in range(10):
        # Each batch: one run of 60 lines and 40 one-line runs, so pages cut runs.
        texts = [f"{batch}-{i}".encode() for i in range(100)]
        journal.append([run_of(*texts[:60]), *one_line_runs(*texts[60:])])
    assert journal.last_sequence == 1000
    seen: list[tuple[int, bytes]] = []
    after = 0
    while True:
        page, more = journal.read_after(after, 37)
        assert sum(r.count for r in page) <= 37
        seen.extend(flatten(page))
        if not more:
            break
        after = page[-1].last_sequence
    assert [s for s, _ in seen] == list(range(1, 1001))
    assert seen[555] == (556, b"5-55")
    page, more = journal.read_after(555, 1)
    assert flatten(page) == [(556, b"5-55")]
    assert more
    assert journal.read_after(1000, 10) == ([], False)
    journal.close()


@pytest.mark.parametrize("after", [0, 1, 2, 3, 4, 5, 6])
def test_reading_from_inside_a_run_returns_exactly_the_rest(tmp_path: Path, after: int) -> None:
    journal = Journal(tmp_path / "journal")
    journal.append([run_of(b"a", b"", b"c"), run_of(b"d", b"e", source=LogSource.STDERR)])
    journal.append(one_line_runs(b"f"))
    everything = [(1, b"a"), (2, b""), (3, b"c"), (4, b"d"), (5, b"e"), (6, b"f")]
    page, more = journal.read_after(after, 100)
    assert flatten(page) == everything[after:]
    assert not more
    if after < 5:
        # A run keeps its source when it is cut.
        assert page[-2].source is LogSource.STDERR
    journal.close()


def test_reopen_keeps_runs_and_continues_numbering(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.append([run_of(b"a", b"\xff\x00binary")])
    journal.close()
    reopened = Journal(tmp_path / "journal")
    assert reopened.last_sequence == 2
    reopened.append(one_line_runs(b"c"))
    page, _ = reopened.read_after(0, 10)
    assert flatten(page) == [(1, b"a"), (2, b"\xff\x00binary"), (3, b"c")]
    reopened.close()


def test_torn_last_record_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path)
    journal.append([run_of(b"whole one", b"whole two")])
    journal.close()
    good_size = path.stat().st_size
    with open(path, "ab") as f:  # a crash mid-write: header promises 100 bytes, 3 arrive
        f.write(struct.pack("<QIqBBI", 3, 2, 0, 1, 1, 100))
        f.write(b"abc")
    reopened = Journal(path)
    assert reopened.last_sequence == 2
    assert os.path.getsize(path) == good_size
    reopened.append(one_line_runs(b"after crash"))
    page, _ = reopened.read_after(2, 10)
    assert flatten(page) == [(3, b"after crash")]
    reopened.close()


def test_a_crash_while_writing_the_magic_leaves_an_empty_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(MAGIC[:3])
    journal = Journal(path)
    assert journal.last_sequence == 0
    journal.append(one_line_runs(b"first"))
    assert flatten(journal.read_after(0, 10)[0]) == [(1, b"first")]
    journal.close()


def test_a_journal_from_before_runs_is_upgraded_in_place(tmp_path: Path) -> None:
    # The old layout: one record per line, no magic, and a torn tail after two whole lines.
    path = tmp_path / "journal"
    old = struct.Struct("<QqBBI")
    path.write_bytes(
        old.pack(1, STAMP, 1, 1, 3)
        + b"one"
        + old.pack(2, STAMP, 2, 5, 3)
        + b"t\xffo"
        + old.pack(3, STAMP, 1, 1, 50)
        + b"torn"
    )
    journal = Journal(path)
    assert journal.last_sequence == 2
    page, _ = journal.read_after(0, 10)
    assert flatten(page) == [(1, b"one"), (2, b"t\xffo")]
    assert page[1].source is LogSource.STDERR
    assert page[1].level is LogLevel.ERROR
    journal.append(one_line_runs(b"three"))
    journal.close()
    assert path.read_bytes().startswith(MAGIC)
    assert not path.with_name("journal.upgrade").exists()
    reopened = Journal(path)
    assert flatten(reopened.read_after(0, 10)[0])[-1] == (3, b"three")
    reopened.close()


def test_byte_budget_limits_a_page_but_returns_at_least_one_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.append([run_of(b"x" * 1000, b"y" * 1000, b"z")])
    page, more = journal.read_after(0, 100, max_bytes=1500)
    assert flatten(page) == [(1, b"x" * 1000)]
    assert more
    page, more = journal.read_after(0, 100, max_bytes=10)
    assert flatten(page) == [(1, b"x" * 1000)]
    page, more = journal.read_after(1, 100, max_bytes=2000)
    assert flatten(page) == [(2, b"y" * 1000), (3, b"z")]
    assert not more
    journal.close()


def test_a_run_must_hold_a_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    with pytest.raises(ValueError, match="at least one line"):
        journal.append([(STAMP, LogSource.STDOUT, LogLevel.INFO, b"", 0)])
    assert journal.last_sequence == 0
    journal.close()


@pytest.mark.parametrize("new", [True, False])
def test_the_file_is_created_by_the_first_line(tmp_path: Path, new: bool) -> None:
    path = tmp_path / "journal"
    journal = Journal(path, new=new)
    assert journal.read_after(0, 10) == ([], False)
    assert not path.exists()
    assert journal.append(one_line_runs(b"first", b"second")) == 2
    assert path.read_bytes().startswith(MAGIC)
    journal.close()
    reopened = Journal(path)
    assert flatten(reopened.read_after(0, 10)[0]) == [(1, b"first"), (2, b"second")]
    reopened.close()


def test_a_journal_without_a_file_reopens_empty_and_a_close_creates_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    Journal(path).close()
    journal = Journal(path)
    assert journal.last_sequence == 0
    journal.close()
    assert not path.exists()


def test_a_failed_first_append_leaves_a_journal_the_next_append_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal"
    journal = Journal(path, new=True)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        journal.append(one_line_runs(b"lost"))
    assert path.read_bytes() == b""  # the magic went with the failed batch
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert journal.append(one_line_runs(b"kept")) == 1
    journal.close()
    reopened = Journal(path)
    assert flatten(reopened.read_after(0, 10)[0]) == [(1, b"kept")]
    reopened.close()


def test_neighbouring_runs_of_one_time_source_and_level_are_joined(tmp_path: Path) -> None:
    # A fast script gives a run per pipe read: those of one millisecond, source and level
    # become one run (all later steps cost per run); any difference keeps runs apart.
    journal = Journal(tmp_path / "journal")
    stderr = (STAMP, LogSource.STDERR, LogLevel.INFO, b"e", 1)
    later = (STAMP + 1, LogSource.STDOUT, LogLevel.INFO, b"l", 1)
    also_later = (STAMP + 1, LogSource.STDOUT, LogLevel.INFO, b"m", 1)
    journal.append([run_of(b"a", b""), *one_line_runs(b"b", b"c"), stderr, later, also_later])
    page, more = journal.read_after(0, 100)
    assert not more
    assert [(r.sequence, r.count, r.source, r.text) for r in page] == [
        (1, 4, LogSource.STDOUT, b"a\n\nb\nc"),
        (5, 1, LogSource.STDERR, b"e"),
        (6, 2, LogSource.STDOUT, b"l\nm"),
    ]
    assert flatten(page) == [
        (1, b"a"),
        (2, b""),
        (3, b"b"),
        (4, b"c"),
        (5, b"e"),
        (6, b"l"),
        (7, b"m"),
    ]
    journal.close()
