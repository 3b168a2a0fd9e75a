"""SQLAlchemy tables of the server; the migrations in migrations/versions must match them.

Timestamps are integer unix milliseconds (UTC) so SQLite and PostgreSQL store the same values;
ids are uuid4 hex strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cuttle.server.domain.task_states import NodeKind, NodeState, RunState, TaskKind, TaskState
from cuttle.server.store.records import COMMS_STYLES, HEALTHS

# Named constraints: SQLite batch migrations rebuild tables and can only drop or alter a
# constraint that has a name, and both dialects then agree on what it is called.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_LENGTH = 200
# As migration 0002 made them; the deployment engine gives deployments the task vocabulary.
_DEPLOYMENT_STATES = ("queued", "running", "success", "failed", "cancelled", "timed_out")
ID_LENGTH = 32


def _values(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata and its naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {int: BigInteger}


class Machine(Base):
    """A deployment target (a Tentacle), trusted by its certificate thumbprint."""

    __tablename__ = "machines"
    __table_args__ = (
        CheckConstraint(_one_of("comms_style", COMMS_STYLES), name="comms_style"),
        CheckConstraint(_one_of("health", HEALTHS), name="health"),
        # Names are unique regardless of case: "Web-1" and "web-1" would confuse every person.
        Index("ix_machines_name_key", "name_key", unique=True),
        # Every incoming Tentacle connection is looked up by its certificate thumbprint.
        Index("ix_machines_thumbprint", "thumbprint", unique=True),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    comms_style: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str | None] = mapped_column(String(300))
    thumbprint: Mapped[str] = mapped_column(String(64))
    certificate_pem: Mapped[str] = mapped_column(Text)
    environments: Mapped[list[str]] = mapped_column(JSON)
    roles: Mapped[list[str]] = mapped_column(JSON)
    health: Mapped[str] = mapped_column(String(16))
    health_message: Mapped[str] = mapped_column(Text)
    tentacle_version: Mapped[str] = mapped_column(String(64))
    os: Mapped[str] = mapped_column(String(NAME_LENGTH))
    free_disk_bytes: Mapped[int | None] = mapped_column(BigInteger)
    last_health_check_ms: Mapped[int | None] = mapped_column(BigInteger)
    registered_ms: Mapped[int] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean)
    # By name, like environments and roles (the admin API checks that the names exist).
    tenants: Mapped[list[str]] = mapped_column(JSON, default=list)
    tenant_tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    tenanted_mode: Mapped[str] = mapped_column(String(32), default="untenanted")
    # None: the space's default machine policy.
    policy: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    # The first failed health check of the current run of failures; None once one succeeds.
    unreachable_since_ms: Mapped[int | None] = mapped_column(BigInteger)


class ApiKey(Base):
    """An API key: only the SHA-256 of the secret is kept, never the secret."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_key_hash", "key_hash", unique=True),
        # Verification finds candidates by the displayed prefix, then compares hashes.
        Index("ix_api_keys_prefix", "prefix"),
        # Revocation walks from a key to the keys created with it.
        Index("ix_api_keys_created_by_key_id", "created_by_key_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    key_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    permissions: Mapped[list[str]] = mapped_column(JSON)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked: Mapped[bool] = mapped_column(Boolean)
    # The user the key acts as (their teams' roles apply); None for the keys made by
    # `cuttle-server init`, whose permissions column says what they may do.
    user_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("documents.id", ondelete="CASCADE")
    )
    # The key whose caller created this one; None for init keys and keys older than 0007.
    # Revoking a key revokes those created with it; deleting it (its user was removed) deletes
    # them, for the same reason: what a key made is worth no more than the key.
    created_by_key_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("api_keys.id", ondelete="CASCADE")
    )


class Task(Base):
    """A unit of server work; log_count allocates the positions of its log lines."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_one_of("kind", _values(TaskKind)), name="kind"),
        CheckConstraint(_one_of("state", _values(TaskState)), name="state"),
        # Listing is newest first; resumption looks for unfinished ones.
        Index("ix_tasks_created_ms_id", "created_ms", "id"),
        Index("ix_tasks_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    # The kind's typed spec (domain/task_specs.py) as JSON.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    started_ms: Mapped[int | None] = mapped_column(BigInteger)
    finished_ms: Mapped[int | None] = mapped_column(BigInteger)
    owner_node: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    cancel_reason: Mapped[str] = mapped_column(Text)
    log_count: Mapped[int] = mapped_column(BigInteger)
    # The bytes of script output stored in the task's log, measured against its size limit;
    # past the limit lines are only counted (task_log.py), so the log can say what it lost.
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    log_dropped_lines: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    log_dropped_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Why a queued or waiting task is not moving (a slot, a mutex, a person); empty otherwise.
    waiting_reason: Mapped[str] = mapped_column(Text, default="")
    has_warnings: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why the task ended as it did: the failure, who cancelled.
    reason: Mapped[str] = mapped_column(Text, default="")
    # The owner's claim holds until then; it renews it while alive, and any node may adopt
    # an unfinished task whose claim ran out (its owner died).
    lease_expires_ms: Mapped[int | None] = mapped_column(BigInteger)
    # Who asked for it (the caller's name, as in the audit trail); "" for tasks from before.
    started_by: Mapped[str] = mapped_column(String(NAME_LENGTH), default="", server_default="")


class ServerNode(Base):
    """A server node that is (or was) alive: its heartbeat and how many tasks it runs at once."""

    __tablename__ = "server_nodes"

    id: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    started_ms: Mapped[int] = mapped_column(BigInteger)
    heartbeat_ms: Mapped[int] = mapped_column(BigInteger)
    task_cap: Mapped[int] = mapped_column(Integer)


class ServerIdentityRow(Base):
    """The one server identity every node presents; its key sealed with the master key."""

    __tablename__ = "server_identity"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    thumbprint: Mapped[str] = mapped_column(String(64))
    certificate_pem: Mapped[str] = mapped_column(Text)
    key_ciphertext: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class TaskNode(Base):
    """A step, action or machine of a task's tree, ordered by position among its siblings."""

    __tablename__ = "task_nodes"
    __table_args__ = (
        CheckConstraint(_one_of("kind", _values(NodeKind)), name="kind"),
        CheckConstraint(_one_of("state", _values(NodeState)), name="state"),
        # A task's tree is always read whole, in order.
        Index("ix_task_nodes_task_id_position", "task_id", "position"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    task_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    parent_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("task_nodes.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))
    # Tree order over the whole task (a pre-order walk): siblings keep the plan's order.
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    # Not a foreign key to machines: the history outlives a removed machine.
    machine_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    started_ms: Mapped[int | None] = mapped_column(BigInteger)
    ended_ms: Mapped[int | None] = mapped_column(BigInteger)


class ScriptRun(Base):
    """One ticket on one agent; last_sequence is how far its journal is stored."""

    __tablename__ = "script_runs"
    __table_args__ = (
        CheckConstraint(_one_of("state", _values(RunState)), name="state"),
        UniqueConstraint("node_id", "attempt"),
        Index("ix_script_runs_task_id", "task_id"),
    )

    # The Tentacle knows a script only by its ticket; re-attaching after a restart uses it.
    ticket: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    node_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("task_nodes.id", ondelete="CASCADE")
    )
    machine_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    # 1 for the first run of a machine node; a retry is the next number.
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
    output_variables: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    finished_ms: Mapped[int | None] = mapped_column(BigInteger)


class Interruption(Base):
    """A deployment waiting for a person: what for, who may answer, and the answer once given.

    A row, not a coroutine: a restart or another node finds it open and waits on; answering it
    is a transition the runner picks up.
    """

    __tablename__ = "interruptions"
    __table_args__ = (
        CheckConstraint("kind IN ('guided_failure', 'manual_intervention')", name="kind"),
        Index("ix_interruptions_task_id", "task_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    task_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    # The machine node (guided failure) or action node (manual intervention) that waits.
    node_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("task_nodes.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(NAME_LENGTH))
    machine: Mapped[str] = mapped_column(String(NAME_LENGTH))
    title: Mapped[str] = mapped_column(Text)
    instructions: Mapped[str] = mapped_column(Text)
    responsible_teams: Mapped[list[str]] = mapped_column(JSON)
    responses: Mapped[list[str]] = mapped_column(JSON)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    # Empty until answered.
    response: Mapped[str] = mapped_column(String(32))
    answered_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    answered_ms: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text)


class TaskLogChunk(Base):
    """A batch of consecutive log lines of one script run, packed into one row.

    One row per batch, not per line: a busy script sends thousands of lines a second and the
    per-row cost of an insert (two index entries, parameter handling) dominated the whole
    path. Positions first_position..last_position belong to this chunk's lines in order;
    (ticket, first_sequence) is unique so a replayed batch cannot be stored twice.
    """

    __tablename__ = "task_log_chunks"
    __table_args__ = (
        UniqueConstraint("ticket", "first_sequence"),
        # Readers ask for "the lines after position N": the chunk holding N+1 and those after.
        Index("ix_task_log_chunks_task_id_last_position", "task_id", "last_position"),
    )

    task_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    first_position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_position: Mapped[int] = mapped_column(BigInteger)
    # The run whose journal these lines are; None for lines the server wrote itself.
    ticket: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("script_runs.ticket", ondelete="CASCADE")
    )
    # Kept beside the ticket so reading a log needs no join.
    machine_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    first_sequence: Mapped[int] = mapped_column(BigInteger)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    # Bytes, not text: script output need not be valid UTF-8 and must come back unchanged.
    lines: Mapped[bytes] = mapped_column(LargeBinary)


class ArtifactBlob(Base):
    """An artifact downloaded from a Tentacle, kept in the database for now."""

    __tablename__ = "artifact_blobs"

    task_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    machine_name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)


class Space(Base):
    """A partition of the model: every document, release and event belongs to one space."""

    __tablename__ = "spaces"
    __table_args__ = (Index("ix_spaces_name_key", "name_key", unique=True),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Document(Base):
    """One document of the model (environment, lifecycle, project...), its body as JSON.

    Like Octopus, the body is a JSON document validated by its schema in cuttle.server.model;
    the columns are what is looked up, ordered or constrained. References to other documents
    are ids in the body and rows in document_references.
    """

    __tablename__ = "documents"
    __table_args__ = (
        # Names are unique per kind in a space, regardless of case.
        Index("ix_documents_space_id_kind_name_key", "space_id", "kind", "name_key", unique=True),
        # Listing a kind in its order (environments) or by name.
        Index("ix_documents_space_id_kind_sort_order", "space_id", "kind", "sort_order"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    space_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("spaces.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    sort_order: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Optimistic concurrency: an update names the revision it read.
    revision: Mapped[int] = mapped_column(Integer)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class DocumentReference(Base):
    """Document from_id refers to to_id at path; a referenced document cannot be deleted."""

    __tablename__ = "document_references"
    __table_args__ = (Index("ix_document_references_to_id", "to_id"),)

    from_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(500), primary_key=True)
    to_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("documents.id", ondelete="RESTRICT")
    )


class Release(Base):
    """An immutable snapshot of a project's process and variables under a version."""

    __tablename__ = "releases"
    __table_args__ = (
        Index("ix_releases_project_id_version_key", "project_id", "version_key", unique=True),
        # Listing a project's releases newest first, paged.
        Index("ix_releases_project_id_created_ms_id", "project_id", "created_ms", "id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    space_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("spaces.id", ondelete="CASCADE")
    )
    # Deleting a project deletes its releases, as in Octopus.
    project_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("documents.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    notes: Mapped[str] = mapped_column(Text)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    variables_snapshot_ms: Mapped[int] = mapped_column(BigInteger)


class RunbookSnapshot(Base):
    """A frozen copy of a runbook's process and the project's variables; one is published."""

    __tablename__ = "runbook_snapshots"
    __table_args__ = (
        Index(
            "ix_runbook_snapshots_project_id_runbook_key_created_ms",
            "project_id",
            "runbook_key",
            "created_ms",
        ),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    project_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("documents.id", ondelete="CASCADE")
    )
    runbook: Mapped[str] = mapped_column(String(NAME_LENGTH))
    runbook_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    published: Mapped[bool] = mapped_column(Boolean)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH))


class Deployment(Base):
    """A release deployed (or being deployed) to an environment, optionally for a tenant."""

    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint(_one_of("state", _DEPLOYMENT_STATES), name="state"),
        Index("ix_deployments_release_id_created_ms", "release_id", "created_ms"),
        Index("ix_deployments_environment_id", "environment_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    release_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("releases.id", ondelete="CASCADE")
    )
    # History outlives what it names: no foreign keys to environments and tenants.
    environment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    tenant_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    state: Mapped[str] = mapped_column(String(16))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    finished_ms: Mapped[int | None] = mapped_column(BigInteger)


class DashboardCell(Base):
    """One dashboard cell per project, environment and tenant: what its latest deployment shows.

    A copy of the fields the dashboard prints, kept in step with `deployments` on every recorded
    deployment and state change (store/dashboard.py), so the dashboard reads this small table
    and never the history: joined to `deployments`, PostgreSQL's planner hash-joins a sequential
    scan of every past deployment once there are enough of them.
    """

    __tablename__ = "dashboard_cells"

    # The space leads the key: the dashboard reads one space's cells as one index range.
    space_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    # Environments and tenants are history's names, as in `deployments`: no foreign keys.
    environment_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    # "" for no tenant: a primary key column cannot be NULL.
    tenant_key: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    # No foreign keys: deleting releases rebuilds the project's cells (store/dashboard.py).
    latest_deployment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    release_version: Mapped[str] = mapped_column(String(NAME_LENGTH))
    state: Mapped[str] = mapped_column(String(16))
    task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    deployed_ms: Mapped[int] = mapped_column(BigInteger)
    finished_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_success_deployment_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    last_success_version: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    last_success_ms: Mapped[int | None] = mapped_column(BigInteger)


class Event(Base):
    """The audit trail: who changed what, when, with before/after (sensitive values elided)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_space_id_occurred_ms_id", "space_id", "occurred_ms", "id"),
        Index("ix_events_document_id", "document_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    space_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    occurred_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    category: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    document_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    document_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class PendingCancel(Base):
    """A cancel the server could not deliver because the agent was away; kept until it is.

    Keyed by ticket, the only name the Tentacle knows the script by. Not tied to the task
    target: a script still running on an agent needs killing even if its history is gone.
    Tied to the machine: removing the machine removes its pending cancels in the same
    transaction, on whichever node removes it.
    """

    __tablename__ = "pending_cancels"
    __table_args__ = (
        # Delivery asks for the records that are due; the cascade from machines looks up by id.
        Index("ix_pending_cancels_next_attempt_ms", "next_attempt_ms"),
        Index("ix_pending_cancels_machine_id", "machine_id"),
    )

    ticket: Mapped[str] = mapped_column(String(64), primary_key=True)
    machine_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("machines.id", ondelete="CASCADE")
    )
    machine_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    task_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    reason: Mapped[str] = mapped_column(Text)
    # When the server gave up reaching the agent and left the cancel pending.
    recorded_ms: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)
    last_attempt_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str] = mapped_column(Text)
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger)


class Package(Base):
    """A version of a package in the built-in feed; its bytes are a content-addressed file.

    Rows are the reference count of the stored files: a file is removed when no row names its
    SHA-256 any more (packages/blobs.py), so a package pushed twice is stored once.
    """

    __tablename__ = "packages"
    __table_args__ = (
        # One version of a package per space; ids compare without case, versions canonically.
        Index(
            "ix_packages_space_id_package_key_version_key",
            "space_id",
            "package_key",
            "version_key",
            unique=True,
        ),
        Index("ix_packages_sha256", "sha256"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    space_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("spaces.id", ondelete="CASCADE")
    )
    package_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    package_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    format: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    pushed_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    pushed_ms: Mapped[int] = mapped_column(BigInteger)


class ReleasePackage(Base):
    """A package version a release recorded: such a version is never deleted or replaced."""

    __tablename__ = "release_packages"
    __table_args__ = (
        # "Which releases use this version?" on delete, replace and prune.
        Index(
            "ix_release_packages_space_id_package_key_version_key",
            "space_id",
            "package_key",
            "version_key",
        ),
    )

    release_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("releases.id", ondelete="CASCADE"), primary_key=True
    )
    package_key: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    version_key: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    space_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    package_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[str] = mapped_column(String(NAME_LENGTH))
    sha256: Mapped[str] = mapped_column(String(64))


class RunbookSnapshotPackage(Base):
    """A package version a runbook snapshot recorded: kept as a release's is."""

    __tablename__ = "runbook_snapshot_packages"
    __table_args__ = (
        Index(
            "ix_runbook_snapshot_packages_space_id_package_key_version_key",
            "space_id",
            "package_key",
            "version_key",
        ),
    )

    snapshot_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("runbook_snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    package_key: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    version_key: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    space_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    package_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[str] = mapped_column(String(NAME_LENGTH))
    sha256: Mapped[str] = mapped_column(String(64))
