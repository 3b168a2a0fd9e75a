"""The per-ticket durable journal: an append-only file of sequence-numbered log records.

Record layout (little endian)::

    seq u64 | time_unix_ms i64 | source u8 | level u8 | length u32 | text[length]

Sequence numbers start at 1 and grow by one. A line is visible to readers only after the batch
holding it has been written *and* fsynced, so a line the server has seen survives a crash. On
open, a torn last record (crash mid-write) is truncated away.

The methods are blocking and thread-safe; the async caller runs them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

from cuttle.tentacle.execution.model import LogLevel, LogLine, LogSource

__all__ = ["Journal", "PendingLine"]

_HEADER = struct.Struct("<QqBBI")
# One index entry per this many records: reading "after N" seeks near N instead of scanning.
_INDEX_EVERY = 256
_READ_BLOCK = 256 * 1024
_SOURCES = {s.value: s for s in LogSource}
_LEVELS = {lv.value: lv for lv in LogLevel}

PendingLine = tuple[int, LogSource, LogLevel, bytes]
"""A line waiting for its sequence number: (time_unix_ms, source, level, text)."""


class Journal:
    """One ticket's journal file, with a sparse in-memory seq -> offset index."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._index_seqs: list[int] = []
        self._index_offsets: list[int] = []
        self._last_seq = 0
        self._size = 0
        self._closed = False
        self._recover()

    @property
    def last_sequence(self) -> int:
        """The highest sequence that is durable and visible."""
        return self._last_seq

    def _recover(self) -> None:
        size = os.fstat(self._fd).st_size
        offset = 0
        expected = 1
        while offset + _HEADER.size <= size:
            seq, _, source, level, length = _HEADER.unpack(os.pread(self._fd, _HEADER.size, offset))
            end = offset + _HEADER.size + length
            valid = seq == expected and source in _SOURCES and level in _LEVELS
            if not valid or end > size:
                break
            if (seq - 1) % _INDEX_EVERY == 0:
                self._index_seqs.append(seq)
                self._index_offsets.append(offset)
            expected += 1
            offset = end
        if offset != size:
            # A crash mid-append leaves a partial record; everything before it is whole.
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        self._size = offset
        self._last_seq = expected - 1

    def append(self, lines: Sequence[PendingLine]) -> int:
        """Append a batch durably (one write, one fsync); return the last sequence assigned."""
        if not lines:
            return self._last_seq
        with self._lock:
            if self._closed:
                raise ValueError("journal is closed")
            seq = self._last_seq
            offset = self._size
            chunks: list[bytes] = []
            new_seqs: list[int] = []
            new_offsets: list[int] = []
            for time_ms, source, level, text in lines:
                seq += 1
                if (seq - 1) % _INDEX_EVERY == 0:
                    new_seqs.append(seq)
                    new_offsets.append(offset)
                header = _HEADER.pack(seq, time_ms, source.value, level.value, len(text))
                chunks.append(header)
                chunks.append(text)
                offset += _HEADER.size + len(text)
            data = b"".join(chunks)
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            # fsync per batch: the batch is the acknowledgement point, and under load batches are
            # large because the pipe keeps filling while we sync, so the cost is amortised.
            os.fsync(self._fd)
            self._index_seqs.extend(new_seqs)
            self._index_offsets.extend(new_offsets)
            self._size = offset
            self._last_seq = seq
            return seq

    def read_after(
        self, after_sequence: int, max_lines: int, max_bytes: int = 3 * 1024 * 1024
    ) -> tuple[list[LogLine], bool]:
        """Lines with sequence > after_sequence, at most max_lines/max_bytes (at least one line).

        Returns the lines and whether more lines exist beyond them.
        """
        with self._lock:
            if self._closed:
                raise ValueError("journal is closed")
            last_seq = self._last_seq
            end = self._size
            if after_sequence >= last_seq or max_lines <= 0:
                return [], after_sequence < last_seq
            pos = bisect.bisect_right(self._index_seqs, after_sequence + 1) - 1
            offset = self._index_offsets[pos] if pos >= 0 else 0
            fd = os.dup(self._fd)
        try:
            return self._scan(fd, offset, end, after_sequence, last_seq, max_lines, max_bytes)
        finally:
            os.close(fd)

    def _scan(
        self,
        fd: int,
        offset: int,
        end: int,
        after_sequence: int,
        last_seq: int,
        max_lines: int,
        max_bytes: int,
    ) -> tuple[list[LogLine], bool]:
        lines: list[LogLine] = []
        total = 0
        buffer = b""
        buffer_start = offset
        while offset < end:
            rel = offset - buffer_start
            if rel + _HEADER.size > len(buffer):
                buffer = os.pread(fd, min(_READ_BLOCK, end - offset), offset)
                buffer_start, rel = offset, 0
            seq, time_ms, source, level, length = _HEADER.unpack_from(buffer, rel)
            record_end = offset + _HEADER.size + length
            if seq > after_sequence:
                if lines and total + length > max_bytes:
                    break
                text_start = rel + _HEADER.size
                if text_start + length <= len(buffer):
                    text = buffer[text_start : text_start + length]
                else:
                    text = os.pread(fd, length, offset + _HEADER.size)
                lines.append(LogLine(seq, time_ms, _SOURCES[source], _LEVELS[level], text))
                total += length
                if len(lines) >= max_lines:
                    break
            offset = record_end
        more = bool(lines) and lines[-1].sequence < last_seq
        return lines, more

    def close(self) -> None:
        """Close the file; further calls raise ValueError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)
