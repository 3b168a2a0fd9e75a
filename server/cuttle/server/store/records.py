"""Frozen values the store hands out; rows never leave the store as ORM objects."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeAlias, TypeVar, get_args

from cuttle.server.domain.scripts import Artifact, RemoteVariable
from cuttle.server.domain.task_specs import TaskSpec
from cuttle.server.domain.task_states import NodeKind, NodeState, RunState, TaskKind, TaskState

JsonValue: TypeAlias = (
    str | int | float | bool | None | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
)

CommsStyle = Literal["listening", "polling"]
# "unreachable": the last health check failed, for less than the machine policy's
# unavailable_after_seconds; "unavailable": failing for at least that long (see machine_health).
Health = Literal["unknown", "healthy", "unreachable", "unavailable"]
COMMS_STYLES: tuple[CommsStyle, ...] = get_args(CommsStyle)
HEALTHS: tuple[Health, ...] = get_args(Health)

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
class LogLineRecord:
    """A log line as a Tentacle journaled it (sequence is per ticket, increasing)."""

    sequence: int
    time_ms: int
    source: int
    level: int
    text: bytes


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


@dataclass(frozen=True, slots=True)
class ScriptRunRecord:
    """One script run: a ticket on one agent, its outcome and how far its log is stored."""

    ticket: str
    task_id: str
    node_id: str
    machine_name: str
    attempt: int
    state: RunState
    exit_code: int | None
    last_sequence: int
    message: str
    output_variables: tuple[RemoteVariable, ...]
    artifacts: tuple[Artifact, ...]
    created_ms: int
    finished_ms: int | None


@dataclass(frozen=True, slots=True)
class TaskNodeRecord:
    """A step, action or machine of a task's tree; machine nodes carry their script runs."""

    id: str
    task_id: str
    parent_id: str | None
    kind: NodeKind
    position: int
    name: str
    machine_name: str | None
    state: NodeState
    reason: str
    started_ms: int | None
    ended_ms: int | None
    runs: tuple[ScriptRunRecord, ...] = ()

    @property
    def latest_run(self) -> ScriptRunRecord | None:
        """The newest run (the one a retry made last), if any."""
        return self.runs[-1] if self.runs else None


@dataclass(frozen=True, slots=True)
class TaskTargetRecord:
    """A machine's part of a task as the script console shows it: its node and latest run."""

    task_id: str
    node_id: str
    machine_name: str
    ticket: str
    state: RunState
    exit_code: int | None
    last_sequence: int
    message: str
    output_variables: tuple[RemoteVariable, ...]
    artifacts: tuple[Artifact, ...]
    finished_ms: int | None
    attempts: int


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A unit of server work and its tree of steps, actions and machines."""

    id: str
    kind: TaskKind
    description: str
    state: TaskState
    spec: TaskSpec
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    owner_node: str | None
    cancel_requested: bool
    cancel_reason: str
    log_count: int
    nodes: tuple[TaskNodeRecord, ...]
    waiting_reason: str = ""
    has_warnings: bool = False
    # Why the task ended as it did (failed with the reason, cancelled by whom); empty while open.
    reason: str = ""
    # Who asked for the task ("" for tasks stored before this was kept).
    started_by: str = ""

    @property
    def machine_nodes(self) -> tuple[TaskNodeRecord, ...]:
        """The machine nodes, in tree order."""
        return tuple(n for n in self.nodes if n.kind == NodeKind.MACHINE)

    @property
    def targets(self) -> tuple[TaskTargetRecord, ...]:
        """Each machine node with its latest run (machines without a run yet are left out)."""
        found: list[TaskTargetRecord] = []
        for node in self.machine_nodes:
            run = node.latest_run
            if run is None:
                continue
            found.append(
                TaskTargetRecord(
                    task_id=self.id,
                    node_id=node.id,
                    machine_name=run.machine_name,
                    ticket=run.ticket,
                    state=run.state,
                    exit_code=run.exit_code,
                    last_sequence=run.last_sequence,
                    message=run.message,
                    output_variables=run.output_variables,
                    artifacts=run.artifacts,
                    finished_ms=run.finished_ms,
                    attempts=len(node.runs),
                )
            )
        return tuple(found)
