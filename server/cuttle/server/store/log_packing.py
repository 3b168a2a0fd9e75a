"""The byte format of a task log chunk: consecutive lines packed one after another.

Per line: sequence (int64), time in unix ms (int64), source (uint8), level (uint8), text length
(uint32), then the text bytes, all big-endian. Plain struct packing rather than protobuf or
JSON: it is the cheapest format to write from Python per line and keeps bytes as bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from cuttle.server.store.records import LogLineRecord

_HEADER = struct.Struct(">qqBBI")


def pack(lines: Sequence[LogLineRecord]) -> bytes:
    """Pack lines into one chunk."""
    header = _HEADER.pack
    parts: list[bytes] = []
    for line in lines:
        text = bytes(line.text)
        parts.append(header(line.sequence, line.time_ms, line.source, line.level, len(text)))
        parts.append(text)
    return b"".join(parts)


def unpack(data: bytes) -> Iterator[LogLineRecord]:
    """The lines of a chunk, in order."""
    view = memoryview(data)
    offset = 0
    size = _HEADER.size
    while offset < len(view):
        sequence, time_ms, source, level, length = _HEADER.unpack_from(view, offset)
        offset += size
        yield LogLineRecord(
            sequence=sequence,
            time_ms=time_ms,
            source=source,
            level=level,
            text=bytes(view[offset : offset + length]),
        )
        offset += length
