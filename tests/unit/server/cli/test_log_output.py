"""The CLI's log output: runs printed with machine prefixes, JSON lines as line events were."""

from __future__ import annotations

import json

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.cli import log_output
from cuttle.server.cli.context import to_json

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


def test_each_line_gets_its_machine_prefix() -> None:
    assert log_output.prefixed(RUNS) == (b'web-"01": a\nweb-"01": \nweb-"01": b\ndb-01: \xff\xfe\n')


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
    expected = to_json(apb.TaskEvent(task_id="t1", lines=apb.TaskLogBatch(lines=lines)))
    out = log_output.json_lines("t1", RUNS)
    assert out.endswith(b"\n")
    assert out.count(b"\n") == 1, "one JSON line per message"
    assert json.loads(out) == expected
