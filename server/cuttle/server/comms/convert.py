"""The one place the server's comms turn protobuf into domain values and back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from cuttle.protocol.v1 import tentacle_pb2 as pb
from cuttle.server.domain import scripts

SYNTAXES = {
    "bash": pb.SCRIPT_SYNTAX_BASH,
    "python": pb.SCRIPT_SYNTAX_PYTHON,
    "sh": pb.SCRIPT_SYNTAX_SH,
    "pwsh": pb.SCRIPT_SYNTAX_PWSH,
}

STATE_NAMES = {
    pb.SCRIPT_STATE_PENDING: "pending",
    pb.SCRIPT_STATE_RUNNING: "running",
    pb.SCRIPT_STATE_COMPLETE: "complete",
    pb.SCRIPT_STATE_CANCELLED: "cancelled",
    pb.SCRIPT_STATE_TIMED_OUT: "timed_out",
    pb.SCRIPT_STATE_RESULT_UNKNOWN: "result_unknown",
    pb.SCRIPT_STATE_FAILED_TO_START: "failed_to_start",
}


def start_request(
    request: scripts.ScriptRequest, transfers: Mapping[str, str] | None = None
) -> pb.StartScriptRequest:
    """The wire form of a script start; files named in `transfers` were uploaded under that id."""
    transfers = transfers or {}
    return pb.StartScriptRequest(
        ticket=request.ticket,
        body=request.body,
        syntax=SYNTAXES[request.syntax],
        files=[_script_file(f, transfers.get(f.name, "")) for f in request.files],
        isolation=pb.ISOLATION_FULL if request.full_isolation else pb.ISOLATION_NONE,
        mutex_name=request.mutex_name,
        isolation_timeout_seconds=request.isolation_timeout_seconds,
        timeout_seconds=request.timeout_seconds,
        variables=[
            pb.Variable(name=v.name, value=v.value, sensitive=v.sensitive)
            for v in request.variables
        ],
        arguments=list(request.arguments),
        package=request.package.to_proto() if request.package is not None else None,
    )


def _script_file(file: scripts.ScriptFile, transfer_id: str) -> pb.ScriptFile:
    if transfer_id:
        return pb.ScriptFile(
            name=file.name,
            transfer_id=transfer_id,
            sha256=hashlib.sha256(file.content).hexdigest(),
        )
    return pb.ScriptFile(name=file.name, content=file.content)


def _log_runs(runs: Iterable[pb.LogRun]) -> tuple[scripts.LogRun, ...]:
    """The domain form of the runs: the write path's one step per run, kept lean (enum fields
    are ints already; a list comprehension, not a generator)."""
    log_run = scripts.LogRun
    return tuple(
        [
            log_run(run.sequence, run.time_unix_ms, run.source, run.level, run.text, run.count or 1)
            for run in runs
        ]
    )


def script_status(status: pb.ScriptStatus) -> scripts.ScriptStatus:
    """The domain form of a ticket's status."""
    return scripts.ScriptStatus(
        ticket=status.ticket,
        state=STATE_NAMES.get(status.state, "result_unknown"),
        exit_code=status.exit_code,
        runs=_log_runs(status.runs),
        last_sequence=status.last_sequence,
        more_lines=status.more_lines,
        output_variables=tuple(
            scripts.RemoteVariable(v.name, v.value, v.sensitive) for v in status.output_variables
        ),
        artifacts=tuple(
            scripts.Artifact(a.name, a.path, a.size, a.sha256) for a in status.artifacts
        ),
        failure_message=status.failure_message,
        state_reason=status.state_reason,
    )


def agent_info(info: pb.TentacleInfo) -> scripts.AgentInfo:
    """The domain form of GetInfo's answer."""
    return scripts.AgentInfo(
        version=info.version,
        os=info.os,
        hostname=info.hostname,
        free_disk_bytes=info.free_disk_bytes,
        thumbprint=info.thumbprint,
    )
