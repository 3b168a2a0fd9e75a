"""The one place protobuf messages become execution objects and back (Tentacle side)."""

from __future__ import annotations

import math
import re

from cuttle.protocol.package_deployment import PackageDeployment
from cuttle.protocol.v1 import tentacle_pb2 as pb
from cuttle.tentacle.errors import BadRequest
from cuttle.tentacle.execution import model
from cuttle.tentacle.packages.extract import ArchiveFormat

_SHA256 = re.compile(r"[0-9a-f]{64}")
PACKAGE_FORMATS = tuple(f.value for f in ArchiveFormat)

_SYNTAX = {
    pb.SCRIPT_SYNTAX_BASH: model.Syntax.BASH,
    pb.SCRIPT_SYNTAX_PYTHON: model.Syntax.PYTHON,
    pb.SCRIPT_SYNTAX_SH: model.Syntax.SH,
}

_STATE = {
    model.ScriptState.PENDING: pb.SCRIPT_STATE_PENDING,
    model.ScriptState.RUNNING: pb.SCRIPT_STATE_RUNNING,
    model.ScriptState.COMPLETE: pb.SCRIPT_STATE_COMPLETE,
    model.ScriptState.CANCELLED: pb.SCRIPT_STATE_CANCELLED,
    model.ScriptState.TIMED_OUT: pb.SCRIPT_STATE_TIMED_OUT,
    model.ScriptState.RESULT_UNKNOWN: pb.SCRIPT_STATE_RESULT_UNKNOWN,
    model.ScriptState.FAILED_TO_START: pb.SCRIPT_STATE_FAILED_TO_START,
}

_SOURCE = {
    model.LogSource.STDOUT: pb.LOG_SOURCE_STDOUT,
    model.LogSource.STDERR: pb.LOG_SOURCE_STDERR,
    model.LogSource.TENTACLE: pb.LOG_SOURCE_TENTACLE,
}

_LEVEL = {
    model.LogLevel.INFO: pb.LOG_LEVEL_INFO,
    model.LogLevel.VERBOSE: pb.LOG_LEVEL_VERBOSE,
    model.LogLevel.HIGHLIGHT: pb.LOG_LEVEL_HIGHLIGHT,
    model.LogLevel.WARNING: pb.LOG_LEVEL_WARNING,
    model.LogLevel.ERROR: pb.LOG_LEVEL_ERROR,
}


def start_command(
    request: pb.StartScriptRequest, files: tuple[model.ScriptFile, ...]
) -> model.StartCommand:
    """Build the execution command from a StartScript request (files already resolved)."""
    syntax = _SYNTAX.get(request.syntax)
    if syntax is None:
        raise BadRequest(f"unsupported script syntax {request.syntax}")
    for name, value in (
        ("timeout_seconds", request.timeout_seconds),
        ("isolation_timeout_seconds", request.isolation_timeout_seconds),
    ):
        # NaN passes a `< 0` check and, handed to asyncio as a timeout, corrupts its timers.
        if not math.isfinite(value) or value < 0:
            raise BadRequest(f"{name} must be a finite, non-negative number, not {value}")
    return model.StartCommand(
        ticket=request.ticket,
        body=request.body,
        syntax=syntax,
        files=files,
        variables=tuple(model.Variable(v.name, v.value, v.sensitive) for v in request.variables),
        arguments=tuple(request.arguments),
        full_isolation=request.isolation == pb.ISOLATION_FULL,
        mutex_name=request.mutex_name or "default",
        isolation_timeout=request.isolation_timeout_seconds or None,
        timeout=request.timeout_seconds or None,
        package=_package(request.package) if request.HasField("package") else None,
    )


def _package(message: pb.PackageDeployment) -> PackageDeployment:
    """The package part of a start; malformed fields are refused before anything is claimed."""
    if not _SHA256.fullmatch(message.sha256):
        raise BadRequest(f"package sha256 {message.sha256!r} is not 64 lower-case hex digits")
    if message.format not in PACKAGE_FORMATS:
        raise BadRequest(
            f"package format {message.format!r} is not one of {', '.join(PACKAGE_FORMATS)}"
        )
    if not message.package_id or not message.version:
        raise BadRequest("a package needs its id and version")
    if message.script_file:
        try:
            model.check_relative_name(message.script_file)
        except ValueError as exc:
            raise BadRequest(f"package script file: {exc}") from None
    custom = message.custom_installation_directory
    if custom and not custom.startswith("/"):
        raise BadRequest(f"the custom installation directory {custom!r} is not an absolute path")
    return PackageDeployment.from_proto(message)


def script_status(snapshot: model.ScriptSnapshot) -> pb.ScriptStatus:
    """Build the wire status of a ticket; sensitive output values never leave masked."""
    return pb.ScriptStatus(
        ticket=snapshot.ticket,
        state=_STATE[snapshot.state],
        exit_code=snapshot.exit_code,
        runs=[
            pb.LogRun(
                sequence=run.sequence,
                time_unix_ms=run.time_unix_ms,
                source=_SOURCE[run.source],
                level=_LEVEL[run.level],
                text=run.text,
                count=run.count,
            )
            for run in snapshot.runs
        ],
        last_sequence=snapshot.last_sequence,
        more_lines=snapshot.more_lines,
        output_variables=[
            pb.Variable(name=v.name, value=v.value, sensitive=v.sensitive)
            for v in snapshot.output_variables
        ],
        artifacts=[
            pb.Artifact(name=a.name, path=a.path, size=a.size, sha256=a.sha256)
            for a in snapshot.artifacts
        ],
        failure_message=snapshot.failure_message,
        state_reason=snapshot.state_reason,
    )
