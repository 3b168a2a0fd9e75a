"""The CLI's log output: runs printed with machine prefixes, JSON lines as line events are.

Text is UTF-8 with invalid bytes as U+FFFD; --raw keeps the bytes as the script wrote them.
"""

from __future__ import annotations

import json

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.cli import log_output
from cuttle.server.cli.json_output import event_json

RUNS = apb.TaskLogRuns(
    runs=[
        apb.TaskLogRun(
            first_position=3,
            machine='web-"01"',
            run=tpb.LogRun(sequence=5, time_unix_ms=7, source=1, level=2, text=b"a\n\nb", count=3),
        ),
        apb.TaskLogRun(
            first_position=6,
            machine="db-01",
            run=tpb.LogRun(sequence=1, time_unix_ms=9, source=2, level=4, text=b"\xff\xfe"),
        ),
    ]
)


def test_each_line_gets_its_machine_prefix_and_invalid_bytes_show_as_replacement() -> None:
    assert log_output.prefixed(RUNS) == (
        b'web-"01": a\nweb-"01": \nweb-"01": b\ndb-01: ' + "\ufffd\ufffd".encode() + b"\n"
    )


def test_raw_keeps_the_bytes_as_written() -> None:
    assert log_output.prefixed(RUNS, raw=True) == (
        b'web-"01": a\nweb-"01": \nweb-"01": b\ndb-01: \xff\xfe\n'
    )


def test_valid_utf8_is_left_as_it_is() -> None:
    text = "héllo ✓\nwörld".encode()
    assert log_output.valid_utf8(text) is text
    assert log_output.valid_utf8(b"a\xc3(b\n\xe2\x82") == "a\ufffd(b\n\ufffd".encode()


def test_json_lines_have_the_shape_of_line_events() -> None:
    lines = [
        apb.TaskLogLine(
            position=item.first_position + offset,
            machine=item.machine,
            line=tpb.LogLine(
                sequence=item.run.sequence + offset,
                time_unix_ms=item.run.time_unix_ms,
                source=item.run.source,
                level=item.run.level,
                text=text,
            ),
        )
        for item in RUNS.runs
        for offset, text in enumerate(item.run.text.split(b"\n"))
    ]
    expected = event_json(apb.TaskEvent(task_id="t1", lines=apb.TaskLogBatch(lines=lines)))
    out = log_output.json_lines("t1", RUNS)
    assert out.endswith(b"\n")
    assert out.count(b"\n") == 1, "one JSON line per message"
    assert json.loads(out) == expected


def test_json_lines_follow_the_output_conventions() -> None:
    event = json.loads(log_output.json_lines("t1", RUNS))
    first, _, _, last = event["lines"]["lines"]
    assert first == {
        "position": 3,
        "machine": 'web-"01"',
        "line": {
            "sequence": 5,
            "written_at": "1970-01-01T00:00:00.007Z",
            "source": "stdout",
            "level": "verbose",
            "text": "a",
        },
    }
    assert last["line"]["text"] == "\ufffd\ufffd"
    assert (last["line"]["source"], last["line"]["level"]) == ("stderr", "warning")
