"""Task log output for the terminal and for scripts, a message of whole runs at a time.

A script printing a million lines reaches the CLI as a few dozen messages of blocks (stored
runs by column); what the CLI does per run or line is what limits how fast it prints. Text
output adds each machine's prefix with one bytes.replace per block and writes once per
message; JSON output keeps the shape of the line-by-line events (one JSON
object per message, one entry per line) so scripts reading `--output json` keep working.
Text is UTF-8 with invalid bytes shown as U+FFFD, unless `--raw` asks for the bytes as written.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.cli.json_output import enum_name, log_text, time_name, time_or_none


def valid_utf8(text: bytes) -> bytes:
    """The bytes, with each invalid UTF-8 byte replaced by U+FFFD (valid text costs one check)."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return log_text(text).encode("utf-8")
    return text


def prefixed(runs: apb.TaskLogRuns, raw: bool = False) -> bytes:
    """The runs' lines, each as `machine: text` and a newline; raw keeps invalid bytes."""
    parts: list[bytes] = []
    for item in runs.runs:
        prefix = item.machine.encode() + b": "
        text = item.run.text if raw else valid_utf8(item.run.text)
        parts.append(prefix)
        parts.append(text.replace(b"\n", b"\n" + prefix))
        parts.append(b"\n")
    return b"".join(parts)


def prefixed_blocks(
    blocks: apb.TaskLogBlocks, raw: bool = False, *, server_prefix: bool = True
) -> list[bytes]:
    """The blocks' lines, each as `machine: text` and a newline, as pieces to write in order:
    one replace per block, and no copy to join them (a message holds megabytes). Raw keeps
    invalid UTF-8 bytes; otherwise they show as U+FFFD (valid text costs one check)."""
    parts: list[bytes] = []
    for block in blocks.blocks:
        text = block.text if raw else valid_utf8(block.text)
        if not block.machine and not server_prefix:
            # The server's own lines (why a step was skipped, ...) as `deploy --wait` shows them.
            parts.append(text)
            parts.append(b"\n")
            continue
        prefix = block.machine.encode() + b": "
        parts.append(prefix)
        parts.append(text.replace(b"\n", b"\n" + prefix))
        parts.append(b"\n")
    return parts


def block_runs(blocks: apb.TaskLogBlocks) -> apb.TaskLogRuns:
    """The blocks as whole runs (for output that describes every line: JSON)."""
    message = apb.TaskLogRuns()
    add = message.runs.add
    for block in blocks.blocks:
        position = block.first_position
        text = block.text
        offset = 0
        for count, sequence, time_ms, source, level in zip(
            block.counts,
            block.sequences,
            block.times_unix_ms,
            block.sources,
            block.levels,
            strict=True,
        ):
            end = offset - 1
            for _ in range(count):
                end = text.find(b"\n", end + 1)
                if end < 0:
                    end = len(text)
                    break
            item = add()
            item.first_position = position
            item.machine = block.machine
            run = item.run
            run.sequence = sequence
            run.time_unix_ms = time_ms
            run.source = source
            run.level = level
            run.text = text[offset:end]
            run.count = count
            position += count
            offset = end + 1
    return message


def json_lines(task_id: str, runs: apb.TaskLogRuns) -> bytes:
    """One JSON line: the event as `lines` (json_output.event_json of TaskLogBatch) would be."""
    entries: list[str] = []
    source = tpb.LogSource.DESCRIPTOR
    level = tpb.LogLevel.DESCRIPTOR
    for item in runs.runs:
        run = item.run
        head = f', "machine": {json.dumps(item.machine)}, "line": {{"sequence": '
        tail = (
            f', "{time_name("time_unix_ms")}": {json.dumps(time_or_none(run.time_unix_ms))}, '
            f'"source": {json.dumps(enum_name(source, run.source))}, '
            f'"level": {json.dumps(enum_name(level, run.level))}, "text": '
        )
        position, sequence = item.first_position, run.sequence
        # Decoded once per run: a newline is never part of an invalid sequence, so splitting
        # the text equals decoding each line.
        for offset, text in enumerate(log_text(run.text).split("\n")):
            # What json.dumps(text, ensure_ascii=False) returns, without its per-call setup.
            encoded = encode_basestring(text)
            entries.append(
                f'{{"position": {position + offset}{head}{sequence + offset}{tail}{encoded}}}}}'
            )
    body = ", ".join(entries)
    return f'{{"task_id": {json.dumps(task_id)}, "lines": {{"lines": [{body}]}}}}\n'.encode()
