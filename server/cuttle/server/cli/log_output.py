"""Task log output for the terminal and for scripts, a message of whole runs at a time.

A script printing a million lines reaches the CLI as a few hundred messages of runs; what the
CLI does per line is what limits how fast it prints. Text output adds each machine's prefix
with one bytes.replace per run; JSON output keeps the shape of the line-by-line events (one JSON
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
