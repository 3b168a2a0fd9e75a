"""The byte format of a task log chunk: the runs of lines of one batch, one after another.

Format 2 (written now): the byte 0x02, then per run: first sequence (int64), line count
(uint32), time in unix ms (int64), source (uint8), level (uint8), text length (uint32), then the
text: the run's lines joined by "\\n". All big-endian. Plain struct packing rather than protobuf
or JSON: bytes stay bytes, and the cost is per run, so a batch of thousands of lines is packed
without touching a line.

Format 1 (chunks written before runs existed) has no leading marker: per line a sequence
(int64), time, source, level, length and text. Its first byte is the top byte of a sequence,
always 0x00, which is how the two are told apart; format 1 chunks stay readable.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from cuttle.server.domain.scripts import LogRun, RunColumns
from cuttle.server.store.records import LogLineRecord

__all__ = ["pack", "unpack", "unpack_columns", "unpack_runs"]

_FORMAT_RUNS = 2
_RUN_HEADER = struct.Struct(">qIqBBI")
_LINE_HEADER = struct.Struct(">qqBBI")


def pack(runs: Sequence[LogRun]) -> bytes:
    """Pack runs into one chunk."""
    header = _RUN_HEADER.pack
    parts: list[bytes] = [bytes((_FORMAT_RUNS,))]
    for run in runs:
        text = bytes(run.text)
        parts.append(header(run.sequence, run.count, run.time_ms, run.source, run.level, len(text)))
        parts.append(text)
    return b"".join(parts)


def unpack(data: bytes) -> Iterator[LogLineRecord]:
    """The lines of a chunk, in order, one by one."""
    if data[:1] == bytes((_FORMAT_RUNS,)):
        yield from _unpack_runs(data)
    else:
        yield from _unpack_lines(data)


def unpack_runs(data: bytes) -> list[LogRun]:
    """The runs of a chunk, in order: one pass over its bytes, no per-line work.

    A format 1 chunk gives one run per line (those chunks predate runs and stay small).
    """
    if data[:1] != bytes((_FORMAT_RUNS,)):
        return [
            LogRun(line.sequence, line.time_ms, line.source, line.level, line.text)
            for line in _unpack_lines(data)
        ]
    view = memoryview(data)
    runs: list[LogRun] = []
    offset = 1
    size = _RUN_HEADER.size
    unpack_header = _RUN_HEADER.unpack_from
    while offset < len(view):
        sequence, count, time_ms, source, level, length = unpack_header(view, offset)
        offset += size
        runs.append(
            LogRun(sequence, time_ms, source, level, bytes(view[offset : offset + length]), count)
        )
        offset += length
    return runs


def unpack_columns(data: bytes) -> RunColumns:
    """A chunk's runs by column: one pass over its run headers, the texts joined by one copy.

    What a read-back sends: nothing is built per run but its header's fields.
    """
    if data[:1] != bytes((_FORMAT_RUNS,)):
        return RunColumns.of_runs(unpack_runs(data))
    view = memoryview(data)
    offset = 1
    end = len(view)
    size = _RUN_HEADER.size
    unpack_header = _RUN_HEADER.unpack_from
    headers: list[tuple[int, int, int, int, int, int]] = []
    texts: list[memoryview] = []
    while offset < end:
        header = unpack_header(view, offset)
        offset += size
        length = header[5]
        if header[1]:
            headers.append(header)
            texts.append(view[offset : offset + length])
        offset += length
    if not headers:
        return RunColumns.of_runs(())
    sequences, counts, times, sources, levels, lengths = zip(*headers, strict=True)
    return RunColumns(
        text=b"\n".join(texts),
        counts=counts,
        lengths=lengths,
        sequences=sequences,
        times_ms=times,
        sources=sources,
        levels=levels,
    )


def _unpack_runs(data: bytes) -> Iterator[LogLineRecord]:
    view = memoryview(data)
    offset = 1
    size = _RUN_HEADER.size
    while offset < len(view):
        sequence, count, time_ms, source, level, length = _RUN_HEADER.unpack_from(view, offset)
        offset += size
        texts = bytes(view[offset : offset + length]).split(b"\n")
        offset += length
        if len(texts) != count:
            raise ValueError(f"a log run at sequence {sequence} holds {len(texts)}, not {count}")
        for index, text in enumerate(texts):
            yield LogLineRecord(sequence + index, time_ms, source, level, text)


def _unpack_lines(data: bytes) -> Iterator[LogLineRecord]:
    view = memoryview(data)
    offset = 0
    size = _LINE_HEADER.size
    while offset < len(view):
        sequence, time_ms, source, level, length = _LINE_HEADER.unpack_from(view, offset)
        offset += size
        yield LogLineRecord(sequence, time_ms, source, level, bytes(view[offset : offset + length]))
        offset += length
