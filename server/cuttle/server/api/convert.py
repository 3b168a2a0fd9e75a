"""The one place the admin API turns records into protobuf messages."""

from __future__ import annotations

from collections.abc import Sequence

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.domain.scripts import LogChunk
from cuttle.server.store.records import (
    CommsStyle,
    MachineRecord,
    StoredLine,
    TaskNodeRecord,
    TaskRecord,
    TaskTargetRecord,
)

MASK = "********"
_HEALTH = {
    "unknown": apb.HEALTH_STATUS_UNKNOWN,
    "healthy": apb.HEALTH_STATUS_HEALTHY,
    "unreachable": apb.HEALTH_STATUS_UNREACHABLE,
    "unavailable": apb.HEALTH_STATUS_UNAVAILABLE,
}
_STYLE = {"listening": apb.COMMS_STYLE_LISTENING, "polling": apb.COMMS_STYLE_POLLING}
_TASK_STATE = {
    "queued": apb.TASK_STATE_QUEUED,
    "running": apb.TASK_STATE_RUNNING,
    "success": apb.TASK_STATE_SUCCESS,
    "failed": apb.TASK_STATE_FAILED,
    "cancelled": apb.TASK_STATE_CANCELLED,
    "waiting": apb.TASK_STATE_WAITING,
    "cancelling": apb.TASK_STATE_CANCELLING,
    "timed_out": apb.TASK_STATE_TIMED_OUT,
}
_SCRIPT_STATE = {
    "pending": tpb.SCRIPT_STATE_PENDING,
    "running": tpb.SCRIPT_STATE_RUNNING,
    "complete": tpb.SCRIPT_STATE_COMPLETE,
    "cancelled": tpb.SCRIPT_STATE_CANCELLED,
    "timed_out": tpb.SCRIPT_STATE_TIMED_OUT,
    "result_unknown": tpb.SCRIPT_STATE_RESULT_UNKNOWN,
    "failed_to_start": tpb.SCRIPT_STATE_FAILED_TO_START,
    "not_delivered": tpb.SCRIPT_STATE_FAILED_TO_START,
}

STYLE_NAMES: dict[int, CommsStyle] = {
    apb.COMMS_STYLE_LISTENING: "listening",
    apb.COMMS_STYLE_POLLING: "polling",
}


def machine(record: MachineRecord, connected: bool | None = None) -> apb.Machine:
    """A machine as the admin API shows it."""
    return apb.Machine(
        name=record.name,
        environments=list(record.environments),
        roles=list(record.roles),
        comms_style=_STYLE[record.comms_style],
        endpoint=record.endpoint or "",
        thumbprint=record.thumbprint,
        health=_HEALTH[record.health],
        health_message=record.health_message,
        tentacle_version=record.tentacle_version,
        os=record.os,
        free_disk_bytes=record.free_disk_bytes or 0,
        last_health_check_unix_ms=record.last_health_check_ms or 0,
        registered_unix_ms=record.registered_ms,
        connected=bool(connected),
        enabled=record.enabled,
        tenants=list(record.tenants),
        tenant_tags=list(record.tenant_tags),
        tenanted_mode=record.tenanted_mode,
        policy=record.policy or "",
        unreachable_since_unix_ms=record.unreachable_since_ms or 0,
    )


def target(record: TaskTargetRecord) -> apb.TargetResult:
    """One machine's result in a task."""
    message = record.message
    if record.state == "not_delivered" and not message:
        message = "not delivered"
    return apb.TargetResult(
        machine=record.machine_name,
        state=_SCRIPT_STATE[record.state],
        exit_code=record.exit_code if record.exit_code is not None else -1,
        message=message,
        # A sensitive output is stored encrypted, for later steps; nobody is shown it.
        output_variables=[
            tpb.Variable(name=v.name, value=MASK if v.sensitive else v.value, sensitive=v.sensitive)
            for v in record.output_variables
        ],
        artifacts=[
            tpb.Artifact(name=a.name, path=a.path, size=a.size, sha256=a.sha256)
            for a in record.artifacts
        ],
    )


def task(record: TaskRecord) -> apb.Task:
    """A task and its targets."""
    return apb.Task(
        id=record.id,
        description=record.description,
        state=_TASK_STATE[record.state],
        created_unix_ms=record.created_ms,
        finished_unix_ms=record.finished_ms or 0,
        targets=[target(t) for t in record.targets],
        reason=record.reason,
        waiting_reason=record.waiting_reason,
        has_warnings=record.has_warnings,
        nodes=[node(n) for n in record.nodes],
        kind=record.kind.value,
        started_by=record.started_by,
        started_unix_ms=record.started_ms or 0,
    )


def node(record: TaskNodeRecord) -> apb.TaskNode:
    """A node of a task's tree; a machine node with its latest run's result."""
    latest = record.latest_run
    return apb.TaskNode(
        id=record.id,
        parent_id=record.parent_id or "",
        kind=record.kind.value,
        name=record.name,
        state=record.state.value,
        reason=record.reason,
        started_unix_ms=record.started_ms or 0,
        ended_unix_ms=record.ended_ms or 0,
        machine=record.machine_name or "",
        exit_code=-1 if latest is None or latest.exit_code is None else latest.exit_code,
        attempts=len(record.runs),
        output_variables=[]
        if latest is None
        else [
            tpb.Variable(name=v.name, value=MASK if v.sensitive else v.value, sensitive=v.sensitive)
            for v in latest.output_variables
        ],
    )


def log_runs(message: apb.TaskLogRuns, chunks: Sequence[LogChunk]) -> None:
    """Fill `message` (in place: a submessage passed to a constructor is copied) with the
    stored chunks as whole runs, each with the position of its first line."""
    add = message.runs.add
    for chunk in chunks:
        position = chunk.first_position
        for run in chunk.runs:
            # Filled in place: building a LogRun first and passing it would copy the text again.
            item = add()
            item.first_position = position
            item.machine = chunk.machine_name
            wire = item.run
            wire.sequence = run.sequence
            wire.time_unix_ms = run.time_ms
            wire.source = run.source  # type: ignore[assignment]
            wire.level = run.level  # type: ignore[assignment]
            wire.text = run.text
            wire.count = run.count
            position += run.count


def log_blocks_event(task_id: str, chunks: Sequence[LogChunk]) -> bytes:
    """A TaskEvent of `blocks` holding the chunks, already serialized.

    The text is most of a read-back's bytes: it goes from the store's chunk into the message
    in one copy (the join), where a protobuf message would copy it in and again out. Each
    block's other fields are serialized by protobuf and its text field appended after them
    (a field's place on the wire does not matter). RunScript and WatchTask send these bytes
    as they are (see log_events.py).
    """
    parts: list[bytes] = []
    for chunk in chunks:
        columns = chunk.columns
        head = apb.TaskLogBlock(
            first_position=chunk.first_position,
            machine=chunk.machine_name,
            counts=columns.counts,
            sequences=columns.sequences,
            times_unix_ms=columns.times_ms,
            sources=columns.sources,  # type: ignore[arg-type]
            levels=columns.levels,  # type: ignore[arg-type]
        ).SerializeToString()
        text = columns.text
        text_key = _TEXT_KEY + _varint(len(text))
        parts += [
            _BLOCK_KEY,
            _varint(len(head) + len(text_key) + len(text)),
            head,
            text_key,
            text,
        ]
    size = sum(len(part) for part in parts)
    event = apb.TaskEvent(task_id=task_id).SerializeToString()
    return b"".join([event, _BLOCKS_KEY, _varint(size), *parts])


# Wire keys (field number << 3 | 2, length-delimited) of TaskEvent.blocks, TaskLogBlocks.blocks
# and TaskLogBlock.text.
_BLOCKS_KEY = bytes((8 << 3 | 2,))
_BLOCK_KEY = bytes((1 << 3 | 2,))
_TEXT_KEY = bytes((3 << 3 | 2,))


def _varint(value: int) -> bytes:
    """A protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def log_lines(chunks: Sequence[LogChunk]) -> list[apb.TaskLogLine]:
    """Stored chunks line by line, for clients that do not read runs."""
    lines: list[apb.TaskLogLine] = []
    for chunk in chunks:
        position = chunk.first_position
        for run in chunk.runs:
            for index, text in enumerate(run.text.split(b"\n")):
                lines.append(
                    apb.TaskLogLine(
                        position=position,
                        machine=chunk.machine_name,
                        line=tpb.LogLine(
                            sequence=run.sequence + index,
                            time_unix_ms=run.time_ms,
                            source=run.source,  # type: ignore[arg-type]
                            level=run.level,  # type: ignore[arg-type]
                            text=text,
                        ),
                    )
                )
                position += 1
    return lines


def log_line(line: StoredLine) -> apb.TaskLogLine:
    """A stored log line."""
    return apb.TaskLogLine(
        position=line.position,
        machine=line.machine_name,
        line=tpb.LogLine(
            sequence=line.sequence,
            time_unix_ms=line.time_ms,
            source=line.source,  # type: ignore[arg-type]
            level=line.level,  # type: ignore[arg-type]
            text=line.text,
        ),
    )
