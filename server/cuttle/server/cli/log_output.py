"""Task log output for the terminal and for scripts, a message of whole runs at a time.

A script printing a million lines reaches the CLI as a few dozen messages of blocks (stored
runs by column); what the CLI does per run or line is what limits how fast it prints. Text
output adds each machine's prefix with one bytes.replace per block and writes once per
message; JSON output keeps the shape of the line-by-line events (one JSON
object per message, one entry per line) so scripts reading `--output json` keep working.
"""

from __future__ import annotations

import json
from binascii import b2a_base64

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import tentacle_pb2 as tpb


def prefixed(runs: apb.TaskLogRuns) -> bytes:
    """The runs' lines, each as `machine: text` and a newline."""
    parts: list[bytes] = []
    for item in runs.runs:
        prefix = item.machine.encode() + b": "
        parts.append(prefix)
        parts.append(item.run.text.replace(b"\n", b"\n" + prefix))
        parts.append(b"\n")
    return b"".join(parts)


def prefixed_blocks(blocks: apb.TaskLogBlocks) -> list[bytes]:
    """The blocks' lines, each as `machine: text` and a newline, as pieces to write in order:
    one replace per block, and no copy to join them (a message holds megabytes)."""
    parts: list[bytes] = []
    for block in blocks.blocks:
        prefix = block.machine.encode() + b": "
        parts.append(prefix)
        parts.append(block.text.replace(b"\n", b"\n" + prefix))
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
    """One JSON line: the event as `lines` (the protobuf JSON of TaskLogBatch) would be."""
    entries: list[str] = []
    for item in runs.runs:
        run = item.run
        head = f', "machine": {json.dumps(item.machine)}, "line": {{"sequence": "'
        tail = (
            f'", "time_unix_ms": "{run.time_unix_ms}", '
            f'"source": "{tpb.LogSource.Name(run.source)}", '
            f'"level": "{tpb.LogLevel.Name(run.level)}", "text": "'
        )
        position, sequence = item.first_position, run.sequence
        for offset, text in enumerate(run.text.split(b"\n")):
            encoded = b2a_base64(text, newline=False).decode()
            entries.append(
                f'{{"position": "{position + offset}"{head}{sequence + offset}{tail}{encoded}"}}}}'
            )
    body = ", ".join(entries)
    return f'{{"task_id": {json.dumps(task_id)}, "lines": {{"lines": [{body}]}}}}\n'.encode()
