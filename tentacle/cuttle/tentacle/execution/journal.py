"""The per-ticket durable journal: an append-only file of sequence-numbered log runs.

File layout (little endian): the 8-byte magic ``CTJRNL2\\n``, then records::

    seq u64 | count u32 | time_unix_ms i64 | source u8 | level u8 | length u32 | text[length]

A record is a run (see ``LogRun``): ``count`` consecutive lines joined by ``\\n`` with the
sequences ``seq .. seq + count - 1``. Sequences start at 1 and have no gaps. Writing runs rather
than lines is what keeps a burst of output cheap: the cost is per read() of the pipe, not per line.

The file is created by the first append, so a script that prints nothing costs no file. A line
is visible to readers only after the batch holding it has been written *and* fsynced, so
a line the server has seen survives a crash. On open, a torn last record (crash mid-write) is
truncated away. A journal written by an older Tentacle (one record per line, no magic) is
rewritten in this format once, on open, so an upgrade in place keeps the output of tickets that
were running.

The methods are blocking and thread-safe; the async caller runs them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

from cuttle.protocol.logruns import head_lines
from cuttle.tentacle.execution.model import LogLevel, LogRun, LogSource

__all__ = ["Journal", "PendingRun"]

MAGIC = b"CTJRNL2\n"
_HEADER = struct.Struct("<QIqBBI")
# The format before runs: one record per line, no magic. Only read, to upgrade a file in place.
_LEGACY_HEADER = struct.Struct("<QqBBI")
# One index entry per this many records: reading "after N" seeks near N instead of scanning.
_INDEX_EVERY = 64
_READ_BLOCK = 256 * 1024
_SOURCES = {s.value: s for s in LogSource}
_LEVELS = {lv.value: lv for lv in LogLevel}

PendingRun = tuple[int, LogSource, LogLevel, bytes, int]
"""A run waiting for its sequence numbers: (time_unix_ms, source, level, text, line count)."""


class Journal:
    """One ticket's journal file, with a sparse in-memory seq -> offset index."""

    def __init__(self, path: Path, *, new: bool = False) -> None:
        """Open the journal at ``path``; ``new``: the ticket was just created, there is no file."""
        self._path = path
        self._lock = threading.Lock()
        self._index_seqs: list[int] = []
        self._index_offsets: list[int] = []
        self._records = 0
        self._last_seq = 0
        # 0 until the magic is written: the first append writes it with the first records.
        self._size = 0
        self._closed = False
        self._fd: int | None = None
        if new:
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # created by the first append
        self._fd = fd
        try:
            if self._open_format(fd):
                self._recover()
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def last_sequence(self) -> int:
        """The highest sequence that is durable and visible."""
        return self._last_seq

    def _open_format(self, fd: int) -> bool:
        """Ready an existing file for appends; False when it holds nothing yet."""
        size = os.fstat(fd).st_size
        start = os.pread(fd, len(MAGIC), 0)
        if start == MAGIC:
            return True
        if size == 0 or MAGIC.startswith(start):
            # New, or a crash while the magic itself was being written: nothing was journaled.
            # The first append writes the magic again.
            if size:
                os.ftruncate(fd, 0)
            return False
        self._upgrade_legacy(size)
        return True

    def _upgrade_legacy(self, size: int) -> None:
        """Rewrite a one-record-per-line journal as runs of one line, atomically."""
        assert self._fd is not None  # noqa: S101 - only called on an open file
        data = os.pread(self._fd, size, 0)
        parts = [MAGIC]
        offset = 0
        expected = 1
        while offset + _LEGACY_HEADER.size <= len(data):
            seq, time_ms, source, level, length = _LEGACY_HEADER.unpack_from(data, offset)
            end = offset + _LEGACY_HEADER.size + length
            if seq != expected or source not in _SOURCES or level not in _LEVELS or end > size:
                break
            text = data[offset + _LEGACY_HEADER.size : end]
            parts.append(_HEADER.pack(seq, 1, time_ms, source, level, len(text)))
            parts.append(text)
            expected += 1
            offset = end
        tmp = self._path.with_name(self._path.name + ".upgrade")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"".join(parts))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)

    def _recover(self) -> None:
        assert self._fd is not None  # noqa: S101 - only called on an open file
        size = os.fstat(self._fd).st_size
        offset = len(MAGIC)
        expected = 1
        while offset + _HEADER.size <= size:
            seq, count, _, source, level, length = _HEADER.unpack(
                os.pread(self._fd, _HEADER.size, offset)
            )
            end = offset + _HEADER.size + length
            valid = seq == expected and count >= 1 and source in _SOURCES and level in _LEVELS
            if not valid or end > size:
                break
            self._note_record(seq, offset)
            expected += count
            offset = end
        if offset != size:
            # A crash mid-append leaves a partial record; everything before it is whole.
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        self._size = offset
        self._last_seq = expected - 1

    def _note_record(self, seq: int, offset: int) -> None:
        if self._records % _INDEX_EVERY == 0:
            self._index_seqs.append(seq)
            self._index_offsets.append(offset)
        self._records += 1

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def append(self, runs: Sequence[PendingRun]) -> int:
        """Append a batch of runs durably (one write, one fsync); return the last sequence."""
        if not runs:
            return self._last_seq
        with self._lock:
            if self._closed:
                raise ValueError("journal is closed")
            fd = self._fd
            if fd is None:
                # A script that prints nothing never costs a file (nor its deletion).
                fd = self._fd = os.open(
                    self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
                )
            seq = self._last_seq
            offset = self._size
            chunks: list[bytes] = []
            if offset == 0:
                chunks.append(MAGIC)
                offset = len(MAGIC)
            placed: list[tuple[int, int]] = []
            for time_ms, source, level, text, count in _coalesced(runs):
                placed.append((seq + 1, offset))
                chunks.append(
                    _HEADER.pack(seq + 1, count, time_ms, source.value, level.value, len(text))
                )
                chunks.append(text)
                seq += count
                offset += _HEADER.size + len(text)
            try:
                self._write_all(fd, b"".join(chunks))
                # fsync per batch: the batch is the acknowledgement point, and under load batches
                # are large because the pipe keeps filling while we sync (journal_writer.py).
                os.fsync(fd)
            except OSError:
                # A half-written batch (disk full) must not stay in front of the next one.
                os.ftruncate(fd, self._size)
                raise
            for first, at in placed:
                self._note_record(first, at)
            self._size = offset
            self._last_seq = seq
            return seq

    def read_after(
        self, after_sequence: int, max_lines: int, max_bytes: int = 3 * 1024 * 1024
    ) -> tuple[list[LogRun], bool]:
        """Runs of the lines after after_sequence, within max_lines/max_bytes (at least one line).

        Runs are cut at line boundaries to fit. Returns the runs and whether more lines exist
        beyond them.
        """
        with self._lock:
            if self._closed:
                raise ValueError("journal is closed")
            last_seq = self._last_seq
            end = self._size
            if after_sequence >= last_seq or max_lines <= 0:
                return [], after_sequence < last_seq
            pos = bisect.bisect_right(self._index_seqs, after_sequence + 1) - 1
            offset = self._index_offsets[pos] if pos >= 0 else len(MAGIC)
            assert self._fd is not None  # noqa: S101 - a line was journaled, so the file exists
            fd = os.dup(self._fd)
        try:
            runs = self._scan(fd, offset, end, after_sequence, max_lines, max_bytes)
        finally:
            os.close(fd)
        more = bool(runs) and runs[-1].last_sequence < last_seq
        return runs, more

    def _scan(
        self,
        fd: int,
        offset: int,
        end: int,
        after_sequence: int,
        max_lines: int,
        max_bytes: int,
    ) -> list[LogRun]:
        runs: list[LogRun] = []
        lines = 0
        total = 0
        buffer = b""
        buffer_start = offset
        while offset < end and lines < max_lines:
            rel = offset - buffer_start
            if rel + _HEADER.size > len(buffer):
                buffer = os.pread(fd, min(_READ_BLOCK, end - offset), offset)
                buffer_start, rel = offset, 0
            seq, count, time_ms, source, level, length = _HEADER.unpack_from(buffer, rel)
            record_end = offset + _HEADER.size + length
            offset = record_end
            if seq + count - 1 <= after_sequence:
                continue
            text_start = rel + _HEADER.size
            if text_start + length <= len(buffer):
                text = buffer[text_start : text_start + length]
            else:
                text = os.pread(fd, length, record_end - length)
            if seq <= after_sequence:
                _, text = head_lines(text, after_sequence - seq + 1)
                count -= after_sequence - seq + 1
                seq = after_sequence + 1
            full = True
            if lines + count > max_lines:
                text, _ = head_lines(text, max_lines - lines)
                count = max_lines - lines
                full = False
            if total + len(text) > max_bytes:
                text, count = _within_bytes(text, max_bytes - total, first=not runs)
                full = False
                if count == 0:
                    break
            runs.append(LogRun(seq, time_ms, _SOURCES[source], _LEVELS[level], text, count))
            lines += count
            total += len(text)
            if not full:
                break
        return runs

    def close(self) -> None:
        """Close the file; further calls raise ValueError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._fd is not None:
                    os.close(self._fd)


def _coalesced(runs: Sequence[PendingRun]) -> list[PendingRun]:
    """The runs with neighbours of the same time, source and level joined into one run.

    That is what a run is, so nothing is lost; a script writing fast gives a run per pipe read,
    dozens per millisecond, and every later step (journal, wire, server, store, followers)
    costs per run.
    """
    joined: list[PendingRun] = []
    texts: list[bytes] = []
    key: tuple[int, LogSource, LogLevel] | None = None
    lines = 0
    for time_ms, source, level, text, count in runs:
        if count < 1:
            raise ValueError(f"a run holds at least one line, not {count}")
        if key == (time_ms, source, level):
            texts.append(text)
            lines += count
            continue
        if key is not None:
            joined.append((*key, texts[0] if len(texts) == 1 else b"\n".join(texts), lines))
        key, texts, lines = (time_ms, source, level), [text], count
    if key is not None:
        joined.append((*key, texts[0] if len(texts) == 1 else b"\n".join(texts), lines))
    return joined


def _within_bytes(text: bytes, budget: int, *, first: bool) -> tuple[bytes, int]:
    """The leading whole lines of a run that fit in budget bytes (one line at least if first)."""
    cut = text.rfind(b"\n", 0, budget + 1) if budget >= 0 else -1
    if cut < 0:
        if not first:
            return b"", 0
        head, _ = head_lines(text, 1)
        return head, 1
    head = text[:cut]
    return head, head.count(b"\n") + 1
