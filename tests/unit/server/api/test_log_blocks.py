"""A log read back as blocks: the hand-serialized event is the protobuf message, and the CLI
prints it as it prints runs."""

from __future__ import annotations

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.server.api import convert
from cuttle.server.api.log_events import event_bytes
from cuttle.server.cli import log_output
from cuttle.server.domain.scripts import LogChunk, LogRun

RUNS_WEB = (
    LogRun(5, 7, 1, 2, b"a\n\nb", 3),
    LogRun(8, 2**40, 2, 4, b"\xff\xfe", 1),
    LogRun(9, 11, 1, 1, b"x" * 300, 1),
)
CHUNKS = (
    LogChunk.of_runs(3, 'web-"01"', RUNS_WEB),
    LogChunk.of_runs(8, "db-01", (LogRun(1, 9, 3, 4, b"", 1),)),
    # A large text: its length takes a varint of several bytes.
    LogChunk.of_runs(9, "db-01", (LogRun(2, 9, 1, 1, b"y\n" * 70_000 + b"z", 70_001),)),
)


def _as_runs(chunks: tuple[LogChunk, ...]) -> apb.TaskLogRuns:
    message = apb.TaskLogRuns()
    convert.log_runs(message, chunks)
    return message


def test_the_serialized_event_is_the_protobuf_message() -> None:
    event = apb.TaskEvent.FromString(convert.log_blocks_event("t1", CHUNKS))
    assert event.task_id == "t1"
    assert event.WhichOneof("kind") == "blocks"
    first = event.blocks.blocks[0]
    assert (first.first_position, first.machine) == (3, 'web-"01"')
    assert first.text == b"a\n\nb\n\xff\xfe\n" + b"x" * 300
    assert list(first.counts) == [3, 1, 1]
    assert list(first.sequences) == [5, 8, 9]
    assert list(first.times_unix_ms) == [7, 2**40, 11]
    assert list(first.sources) == [1, 2, 1]
    assert list(first.levels) == [2, 4, 1]
    assert [b.first_position for b in event.blocks.blocks] == [3, 8, 9]


def test_blocks_read_as_the_runs_they_were() -> None:
    event = apb.TaskEvent.FromString(convert.log_blocks_event("t1", CHUNKS))
    assert log_output.block_runs(event.blocks) == _as_runs(CHUNKS)


def test_blocks_print_as_runs_print() -> None:
    event = apb.TaskEvent.FromString(convert.log_blocks_event("t1", CHUNKS))
    printed = b"".join(log_output.prefixed_blocks(event.blocks))
    assert printed == log_output.prefixed(_as_runs(CHUNKS))
    # Invalid UTF-8 shows as U+FFFD, as on the line-by-line path; --raw keeps the bytes.
    replaced = "\ufffd".encode() * 2
    assert printed.startswith(b'web-"01": a\nweb-"01": \nweb-"01": b\nweb-"01": ' + replaced)
    raw = b"".join(log_output.prefixed_blocks(event.blocks, raw=True))
    assert raw == log_output.prefixed(_as_runs(CHUNKS), raw=True)
    assert raw.startswith(b'web-"01": a\nweb-"01": \nweb-"01": b\nweb-"01": \xff\xfe\n')


def test_other_events_are_serialized_as_usual() -> None:
    event = apb.TaskEvent(task_id="t1", finished=apb.Task(id="t1"))
    assert event_bytes(event) == event.SerializeToString()
    assert event_bytes(b"ready") == b"ready"


def test_deploy_wait_shows_the_servers_own_lines_without_a_prefix() -> None:
    blocks = apb.TaskLogBlocks(
        blocks=[
            apb.TaskLogBlock(machine="", text=b"Step 'Web' skipped: condition"),
            apb.TaskLogBlock(machine="web-01", text=b"one\ntwo"),
        ]
    )
    shown = b"".join(log_output.prefixed_blocks(blocks, server_prefix=False))
    assert shown == b"Step 'Web' skipped: condition\nweb-01: one\nweb-01: two\n"
    # task log keeps the prefix on every line, the server's included.
    assert b"".join(log_output.prefixed_blocks(blocks)).startswith(b": Step 'Web'")
