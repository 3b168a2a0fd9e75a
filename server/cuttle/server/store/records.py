"""Frozen values the store hands out; rows never leave the store as ORM objects."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeAlias, TypeVar, get_args

JsonValue: TypeAlias = (
    str | int | float | bool | None | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
)

CommsStyle = Literal["listening", "polling"]
# "unreachable": the last health check failed, for less than the machine policy's
# unavailable_after_seconds; "unavailable": failing for at least that long (see machine_health).
Health = Literal["unknown", "healthy", "unreachable", "unavailable"]
TaskKind = Literal["script"]
TaskState = Literal["queued", "running", "success", "failed", "cancelled"]
# The Tentacle's script states (ScriptState in tentacle.proto) plus 'not_delivered': the server
# never got the script to the agent, so it is safe to run it again.
ScriptState = Literal[
    "pending",
    "running",
    "complete",
    "cancelled",
    "timed_out",
    "result_unknown",
    "failed_to_start",
    "not_delivered",
]

COMMS_STYLES: tuple[CommsStyle, ...] = get_args(CommsStyle)
HEALTHS: tuple[Health, ...] = get_args(Health)
TASK_STATES: tuple[TaskState, ...] = get_args(TaskState)
SCRIPT_STATES: tuple[ScriptState, ...] = get_args(ScriptState)
UNFINISHED_TASK_STATES: tuple[TaskState, ...] = ("queued", "running")
FINISHED_TASK_STATES: tuple[TaskState, ...] = ("success", "failed", "cancelled")
FINISHED_SCRIPT_STATES: tuple[ScriptState, ...] = (
    "complete",
    "cancelled",
    "timed_out",
    "result_unknown",
    "failed_to_start",
    "not_delivered",
)

T = TypeVar("T")


def now_ms() -> int:
    """Return the current UTC time in integer unix milliseconds, the store's timestamp unit."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass next_page_token back to get the next one (None: no more)."""

    items: tuple[T, ...]
    next_page_token: str | None


@dataclass(frozen=True, slots=True)
class MachineRecord:
    """A deployment target running a Tentacle."""

    id: str
    name: str
    comms_style: CommsStyle
    endpoint: str | None
    thumbprint: str
    certificate_pem: str
    environments: tuple[str, ...]
    roles: tuple[str, ...]
    health: Health
    health_message: str
    tentacle_version: str
    os: str
    free_disk_bytes: int | None
    last_health_check_ms: int | None
    registered_ms: int
    enabled: bool
    tenants: tuple[str, ...] = ()
    tenant_tags: tuple[str, ...] = ()
    tenanted_mode: str = "untenanted"
    policy: str | None = None
    # When the current run of failed health checks began; None while checks succeed.
    unreachable_since_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored: its hash and display prefix, never the secret."""

    id: str
    name: str
    prefix: str
    permissions: tuple[str, ...]
    created_ms: int
    revoked: bool
    # The user the key acts as; None for system keys (see permissions).
    user_id: str | None = None
    # The key whose caller created this one; None for init keys (and keys older than lineage).
    created_by_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutputVariable:
    """An output variable a script set; sensitive values are stored masked."""

    name: str
    value: str
    sensitive: bool


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """An artifact a script published, as the Tentacle described it."""

    name: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class TaskTargetRecord:
    """One machine's part of a task: the ticket the Tentacle knows it by and how far it got."""

    task_id: str
    machine_name: str
    ticket: str
    state: ScriptState
    exit_code: int | None
    last_sequence: int
    message: str
    output_variables: tuple[OutputVariable, ...]
    artifacts: tuple[ArtifactRef, ...]
    finished_ms: int | None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A unit of server work (for now: a script run on some machines) and its targets."""

    id: str
    kind: TaskKind
    description: str
    state: TaskState
    spec: Mapping[str, JsonValue]
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    owner_node: str | None
    cancel_requested: bool
    cancel_reason: str
    log_count: int
    targets: tuple[TaskTargetRecord, ...]


@dataclass(frozen=True, slots=True)
class LogLineRecord:
    """A log line as a Tentacle journaled it (sequence is per ticket, increasing)."""

    sequence: int
    time_ms: int
    source: int
    level: int
    text: bytes


@dataclass(frozen=True, slots=True)
class LogRunRecord:
    """Consecutive lines a Tentacle journaled with one time, source and level.

    ``text`` holds ``count`` lines joined by "\\n"; their sequences are ``sequence`` to
    ``sequence + count - 1``. The log is written in runs so that storing a burst of output
    costs per run, not per line.
    """

    sequence: int
    time_ms: int
    source: int
    level: int
    text: bytes
    count: int = 1

    @property
    def last_sequence(self) -> int:
        """The sequence of the run's last line."""
        return self.sequence + self.count - 1


@dataclass(frozen=True, slots=True)
class StoredLine:
    """A log line as stored: position orders all of a task's lines, across machines."""

    task_id: str
    position: int
    machine_name: str
    sequence: int
    time_ms: int
    source: int
    level: int
    text: bytes


@dataclass(frozen=True, slots=True)
class ArtifactBlobRecord:
    """An artifact's content as downloaded from a Tentacle (without the bytes)."""

    task_id: str
    machine_name: str
    name: str
    sha256: str
    size: int
