"""The admin service: thin handlers that authorize, validate, call the engine or store, and reply.

Who may do what is fleet_access.py's; every change (machines, scripts, cancels) is an audit
event in the same transaction as the change. Machines and ad-hoc scripts are server-wide, so
their events go to the default space's trail (as space changes do); a deployment's cancel goes
to its own space's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import PurePosixPath
from typing import Any

import grpc
import structlog
from sqlalchemy.orm import Session

from cuttle.protocol import pki
from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import admin_pb2_grpc
from cuttle.server.api import access, convert
from cuttle.server.api.access import Principal
from cuttle.server.api.fleet_access import FleetAccess
from cuttle.server.domain.scripts import RemoteVariable
from cuttle.server.domain.task_specs import DeploymentTaskSpec
from cuttle.server.domain.task_states import TaskState
from cuttle.server.engine.adhoc import ScriptSpec
from cuttle.server.engine.follow import (
    FollowSettings,
    LogChunks,
    Started,
    TargetFinished,
    TaskFollower,
    Updated,
)
from cuttle.server.engine.health import HealthChecker
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.runner import TaskRunner
from cuttle.server.errors import InvalidArgument, PermissionDenied, ValidationFailed
from cuttle.server.store import artifacts as artifact_store
from cuttle.server.store import documents as doc_store
from cuttle.server.store import events, task_queue, tasks
from cuttle.server.store import machines as machine_store
from cuttle.server.store.errors import NotFound as StoreNotFound
from cuttle.server.store.records import MachineRecord, TaskRecord, now_ms
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
# Lines per message for clients that read the log line by line.
LOG_BATCH = 1000
# Mutex names are labels people read in logs; the agent hashes any it cannot use as a file name.
MAX_MUTEX_NAME = 200


def server_version() -> str:
    """The installed cuttle-server version."""
    try:
        return metadata.version("cuttle-server")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """Implements AdminService over the engine and store."""

    def __init__(
        self,
        *,
        tx: Transactions,
        identity: pki.Identity,
        polling_port: Callable[[], int],
        machine_added: Callable[[MachineRecord], Awaitable[None]],
        machine_removed: Callable[[MachineRecord], Awaitable[None]],
        connected: Callable[[str], bool | None],
        health: HealthChecker,
        runner: TaskRunner,
        signals: TaskSignals,
        follow_settings: FollowSettings | None = None,
        node_id: str = "",
    ) -> None:
        self._node_id = node_id
        self._tx = tx
        self._identity = identity
        self._polling_port = polling_port
        self._machine_added = machine_added
        self._machine_removed = machine_removed
        self._connected = connected
        self._health = health
        self._runner = runner
        self._signals = signals
        self._follow_settings = follow_settings or FollowSettings()

    def _machine(self, record: MachineRecord) -> apb.Machine:
        return convert.machine(record, self._connected(record.name))

    async def GetServerInfo(
        self, request: apb.GetServerInfoRequest, context: Context
    ) -> apb.ServerInfo:  # noqa: N802
        """Version, thumbprint and polling port of this server."""
        return apb.ServerInfo(
            version=server_version(),
            thumbprint=self._identity.thumbprint,
            polling_port=self._polling_port(),
            certificate_pem=self._identity.certificate_pem.decode(),
        )

    async def ListNodes(
        self, request: apb.ListNodesRequest, context: Context
    ) -> apb.ListNodesResponse:  # noqa: N802
        """The server nodes of this database, for anyone who may view something."""
        caller = access.current()
        if not caller.can_anywhere("view"):
            raise PermissionDenied("listing server nodes needs the view role somewhere")
        found = await self._tx.read(task_queue.nodes)
        return apb.ListNodesResponse(
            nodes=[
                apb.ServerNodeInfo(
                    id=n.id,
                    started_unix_ms=n.started_ms,
                    heartbeat_unix_ms=n.heartbeat_ms,
                    task_cap=n.task_cap,
                    tasks=n.tasks,
                    this_node=n.id == self._node_id,
                )
                for n in found
            ],
            now_unix_ms=now_ms(),
        )

    async def RegisterMachine(
        self, request: apb.RegisterMachineRequest, context: Context
    ) -> apb.Machine:  # noqa: N802
        """Register (or with force, re-register) a Tentacle and trust its certificate at once.

        Its environments must exist in the model, as for UpdateMachine; nothing is registered
        otherwise.
        """
        if not request.name.strip():
            raise InvalidArgument("machine name is empty")
        if not request.environments:
            raise InvalidArgument("a machine needs at least one environment")
        style = convert.STYLE_NAMES.get(request.comms_style)
        if style is None:
            raise InvalidArgument("comms_style must be listening or polling")
        if style == "listening" and not request.endpoint:
            raise InvalidArgument("a listening machine needs an endpoint (host:port)")
        try:
            thumbprint = pki.check_peer_certificate(request.certificate_pem.encode())
        except pki.CertificateError as exc:
            raise InvalidArgument(f"certificate refused: {exc}") from exc

        caller = access.current()

        def work(session: Session) -> MachineRecord:
            fleet = FleetAccess.load(session, caller)
            before = _find_machine(session, request.name.strip())
            if not caller.may_register_machines:
                # A person (not the installer's key) registering or replacing a machine's
                # certificate holds administer wherever the machine is and will be.
                fleet.require_in_every(
                    "administer",
                    _union(request.environments, before.environments if before else ()),
                    "register a machine or change its trust",
                )
            # The same rule as UpdateMachine: a machine only joins environments that exist.
            _check_machine_references(
                session,
                {
                    "environments": list(request.environments),
                    "tenants": None,
                    "tenant_tags": None,
                    "policy": None,
                },
            )
            record = machine_store.add(
                session,
                name=request.name.strip(),
                comms_style=style,
                endpoint=request.endpoint or None,
                thumbprint=thumbprint,
                certificate_pem=request.certificate_pem,
                environments=list(request.environments),
                roles=list(request.roles),
                replace=request.force,
            )
            replaced = before is not None and before.thumbprint != record.thumbprint
            _audit(
                session,
                caller,
                "machine registered" if before is None else "machine re-registered",
                record.name,
                (
                    f"Registered {style} machine {record.name} in "
                    f"{', '.join(record.environments)} (thumbprint {thumbprint})"
                )
                + (f", replacing thumbprint {before.thumbprint}" if replaced and before else ""),
                {
                    "thumbprint": thumbprint,
                    "previous_thumbprint": before.thumbprint if before else None,
                    "trust_changed": replaced,
                    "environments": list(record.environments),
                    "roles": list(record.roles),
                    "comms_style": style,
                },
            )
            return record

        record = await self._tx.run(work)
        await self._machine_added(record)
        log.info("machine_registered", machine=record.name, style=style, thumbprint=thumbprint)
        return self._machine(record)

    async def ListMachines(
        self, request: apb.ListMachinesRequest, context: Context
    ) -> apb.ListMachinesResponse:  # noqa: N802
        """Machines filtered by environment, role and name, paged; only those the caller sees."""
        caller = access.current()
        page_size = request.page_size or 100

        def work(session: Session) -> tuple[list[MachineRecord], str]:
            fleet = FleetAccess.load(session, caller)
            fleet.require_some_machine_view()
            found: list[MachineRecord] = []
            token: str | None = request.page_token or None
            # Read on until the page is full: a page is short only at the end of the list.
            while True:
                page = machine_store.list_machines(
                    session,
                    environments=list(request.environments),
                    roles=list(request.roles),
                    names=list(request.names),
                    page_size=page_size,
                    page_token=token,
                )
                for machine in page.items:
                    if len(found) < page_size and fleet.may_view_machine(machine):
                        found.append(machine)
                        token = machine.name
                    elif len(found) >= page_size:
                        return found, found[-1].name
                if page.next_page_token is None:
                    return found, ""
                token = page.next_page_token

        found, next_token = await self._tx.read(work)
        return apb.ListMachinesResponse(
            machines=[self._machine(m) for m in found], next_page_token=next_token
        )

    async def UpdateMachine(
        self, request: apb.UpdateMachineRequest, context: Context
    ) -> apb.Machine:  # noqa: N802
        """Change environments, roles, tenants, enabled or policy; names must exist."""

        def listed(present: bool, values: apb.StringList) -> list[str] | None:
            return list(values.values) if present else None

        changes: dict[str, Any] = {
            "environments": listed(request.HasField("environments"), request.environments),
            "roles": listed(request.HasField("roles"), request.roles),
            "tenants": listed(request.HasField("tenants"), request.tenants),
            "tenant_tags": listed(request.HasField("tenant_tags"), request.tenant_tags),
            "tenanted_mode": (request.tenanted_mode if request.HasField("tenanted_mode") else None),
            "enabled": request.enabled if request.HasField("enabled") else None,
            "policy": request.policy if request.HasField("policy") else None,
        }

        caller = access.current()

        def work(session: Session) -> MachineRecord:
            fleet = FleetAccess.load(session, caller)
            before = machine_store.get_by_name(session, request.name)
            _require_machine_view(fleet, before)
            fleet.require_in_every(
                "edit",
                _union(before.environments, changes["environments"] or ()),
                f"change machine {before.name!r}",
            )
            _check_machine_references(session, changes)
            record = machine_store.update(session, request.name, **changes)
            changed = {k: v for k, v in changes.items() if v is not None}
            _audit(
                session,
                caller,
                "machine updated",
                record.name,
                f"Changed {', '.join(sorted(changed)) or 'nothing'} of machine {record.name}",
                {"changed": sorted(changed), "after": changed},
            )
            return record

        record = await self._tx.run(work)
        log.info(
            "machine_updated",
            machine=record.name,
            **{k: v for k, v in changes.items() if v is not None},
        )
        return self._machine(record)

    async def RemoveMachine(
        self, request: apb.RemoveMachineRequest, context: Context
    ) -> apb.RemoveMachineResponse:  # noqa: N802
        """Forget a machine: its certificate stops working and its streams end at once."""
        caller = access.current()

        def work(session: Session) -> MachineRecord:
            fleet = FleetAccess.load(session, caller)
            before = machine_store.get_by_name(session, request.name)
            _require_machine_view(fleet, before)
            fleet.require_in_every(
                "administer", before.environments, f"remove machine {before.name!r}"
            )
            record = machine_store.remove(session, request.name)
            _audit(
                session,
                caller,
                "machine removed",
                record.name,
                f"Removed machine {record.name} (thumbprint {record.thumbprint}); its "
                "certificate is no longer trusted",
                {"thumbprint": record.thumbprint, "environments": list(record.environments)},
            )
            return record

        record = await self._tx.run(work)
        await self._machine_removed(record)
        log.info("machine_removed", machine=record.name, thumbprint=record.thumbprint)
        return apb.RemoveMachineResponse()

    async def CheckHealth(
        self, request: apb.CheckHealthRequest, context: Context
    ) -> apb.CheckHealthResponse:  # noqa: N802
        """Check machines now and return what was recorded (those the caller may see)."""
        caller = access.current()

        def visible(session: Session) -> list[str] | None:
            fleet = FleetAccess.load(session, caller)
            if fleet.fleet_caller.has_full_rights:
                return list(request.names)
            fleet.require_some_machine_view()
            if not request.names:
                # "All machines" means all the caller sees; None: there are none to check.
                seen = [
                    m.name for m in machine_store.all_machines(session) if fleet.may_view_machine(m)
                ]
                return seen or None
            for name in request.names:
                _require_machine_view(fleet, machine_store.get_by_name(session, name))
            return list(request.names)

        names = await self._tx.read(visible)
        if names is None:
            return apb.CheckHealthResponse()
        records = await self._health.check(names)
        return apb.CheckHealthResponse(machines=[self._machine(m) for m in records])

    # Events may come serialized already (api/log_events.py), which the stub's type does not say.
    async def RunScript(  # type: ignore[override]
        self, request: apb.RunScriptRequest, context: Context
    ) -> AsyncIterator[apb.TaskEvent | bytes]:  # noqa: N802
        """Start a script task and stream its events until it ends."""
        syntax = {1: "bash", 2: "python", 3: "sh", 4: "pwsh"}.get(request.syntax)
        if syntax is None:
            raise InvalidArgument("choose a script syntax (bash, python, sh, pwsh)")
        for label, value in (
            ("timeout", request.timeout_seconds),
            ("isolation timeout", request.isolation_timeout_seconds),
        ):
            if not math.isfinite(value) or value < 0:
                # NaN would pass `< 0` and reach the agent's timers.
                raise InvalidArgument(f"{label} must be a finite, non-negative number, not {value}")
        if (request.mutex_name or request.isolation_timeout_seconds) and not request.full_isolation:
            raise InvalidArgument(
                "a mutex name or isolation timeout only applies with full isolation"
            )
        if len(request.mutex_name) > MAX_MUTEX_NAME:
            raise InvalidArgument(f"mutex name longer than {MAX_MUTEX_NAME} characters")
        for file in request.files:
            _check_file_name(file.name, syntax)
        caller = access.current()

        def admit(session: Session, machines: Sequence[MachineRecord]) -> None:
            fleet = FleetAccess.load(session, caller)
            for machine in machines:
                # A machine the caller cannot see is refused as such, not named by its rights.
                fleet.require_in_every(
                    "deploy", machine.environments, f"run a script on {machine.name!r}"
                )

        def created(session: Session, task: TaskRecord) -> None:
            machines = [t.machine_name for t in task.targets]
            digest = hashlib.sha256(request.body.encode()).hexdigest()
            _audit(
                session,
                caller,
                "script run",
                task.id,
                f"Ran a {syntax} script (sha256 {digest}) on {', '.join(machines)} "
                f"(task {task.id})",
                {
                    "task_id": task.id,
                    "syntax": syntax,
                    "script_sha256": digest,
                    "machines": machines,
                    # Names only: values may be secrets, and sensitive ones always are.
                    "variables": [v.name for v in request.variables],
                    "files": {f.name: hashlib.sha256(f.content).hexdigest() for f in request.files},
                },
                kind="task",
            )

        task = await self._runner.submit_script(
            ScriptSpec(
                syntax=syntax,
                body=request.body,
                environments=tuple(request.environments),
                roles=tuple(request.roles),
                machines=tuple(request.machines),
                timeout_seconds=request.timeout_seconds,
                full_isolation=request.full_isolation,
                mutex_name=request.mutex_name,
                isolation_timeout_seconds=request.isolation_timeout_seconds,
                variables=tuple(
                    RemoteVariable(v.name, v.value, v.sensitive) for v in request.variables
                ),
                files=tuple((f.name, f.content) for f in request.files),
            ),
            started_by=caller.name,
            admit=admit,
            created=created,
        )
        async for event in self._follow(
            task.id, 0, follow=True, log_form=_log_form(request.accept_blocks, request.accept_runs)
        ):
            yield event

    # Events may come serialized already (api/log_events.py), which the stub's type does not say.
    async def WatchTask(  # type: ignore[override]
        self, request: apb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[apb.TaskEvent | bytes]:  # noqa: N802
        """Replay a task's log from a position and, unless told not to, follow it to the end."""
        task = await self._visible_task(request.task_id, "read its log")
        async for event in self._follow(
            task.id,
            request.after_position,
            follow=not request.no_follow,
            log_form=_log_form(request.accept_blocks, request.accept_runs),
        ):
            yield event

    async def _follow(
        self, task_id: str, after: int, *, follow: bool, log_form: str
    ) -> AsyncIterator[apb.TaskEvent | bytes]:
        follower = TaskFollower(self._tx, self._signals, task_id, after, self._follow_settings)
        async for event in follower.events(follow=follow):
            if isinstance(event, LogChunks):
                if log_form == "blocks":
                    # Serialized here, sent as it is (api/log_events.py).
                    yield convert.log_blocks_event(task_id, event.chunks)
                    continue
                if log_form == "runs":
                    message = apb.TaskEvent(task_id=task_id)
                    convert.log_runs(message.runs, event.chunks)
                    yield message
                    continue
                lines = convert.log_lines(event.chunks)
                for start in range(0, len(lines), LOG_BATCH):
                    batch = apb.TaskLogBatch(lines=lines[start : start + LOG_BATCH])
                    yield apb.TaskEvent(task_id=task_id, lines=batch)
            elif isinstance(event, TargetFinished):
                yield apb.TaskEvent(task_id=task_id, target_finished=convert.target(event.target))
            elif isinstance(event, Started):
                yield apb.TaskEvent(task_id=task_id, started=convert.task(event.task))
            elif isinstance(event, Updated):
                yield apb.TaskEvent(task_id=task_id, updated=convert.task(event.task))
            else:
                yield apb.TaskEvent(task_id=task_id, finished=convert.task(event.task))

    async def _visible_task(self, given: str, action: str) -> TaskRecord:
        """The task an id or unique prefix names, if the caller may view it."""
        caller = access.current()

        def work(session: Session) -> TaskRecord:
            task = tasks.get(session, tasks.resolve_id(session, given))
            FleetAccess.load(session, caller).require_on_task(task, "view", action)
            return task

        return await self._tx.read(work)

    async def GetTask(self, request: apb.GetTaskRequest, context: Context) -> apb.Task:  # noqa: N802
        """One task and its targets (the id or a unique prefix of it)."""
        return convert.task(await self._visible_task(request.task_id, "see the task"))

    async def ListTasks(
        self, request: apb.ListTasksRequest, context: Context
    ) -> apb.ListTasksResponse:  # noqa: N802
        """Tasks the caller may see, newest first, filtered, paged."""
        caller = access.current()
        try:
            states = [TaskState(s.strip().lower()) for s in request.states]
        except ValueError:
            raise InvalidArgument(
                f"task states are {', '.join(s.value for s in TaskState)}, "
                f"not {', '.join(request.states)}"
            ) from None
        project = request.project.casefold()
        environment = request.environment.casefold()

        def work(session: Session) -> tuple[list[TaskRecord], str]:
            fleet = FleetAccess.load(session, caller)
            # A project renamed since keeps its older deployments: they match by id too.
            project_ids = (
                {
                    found.id
                    for space in doc_store.list_spaces(session)
                    if (found := doc_store.find(session, space.id, "project", project))
                }
                if project
                else set()
            )

            def keep(task: TaskRecord) -> bool:
                spec = task.spec
                if isinstance(spec, DeploymentTaskSpec):
                    matches = (
                        spec.project_name.casefold() == project or spec.project_id in project_ids
                    )
                    where_environments = [spec.environment_name]
                else:
                    matches = False
                    where_environments = list(fleet.task_environments(task))
                if project and not matches:
                    return False
                if environment and environment not in {e.casefold() for e in where_environments}:
                    return False
                return fleet.may_on_task(task, "view")

            page = tasks.list_tasks(
                session,
                states=states,
                started_by=request.started_by,
                since_ms=request.since_unix_ms,
                keep=keep,
                page_size=request.page_size or 50,
                page_token=request.page_token or None,
            )
            return list(page.items), page.next_page_token or ""

        found, next_token = await self._tx.read(work)
        return apb.ListTasksResponse(
            tasks=[convert.task(t) for t in found], next_page_token=next_token
        )

    async def CancelTask(self, request: apb.CancelTaskRequest, context: Context) -> apb.Task:  # noqa: N802
        """Cancel a task; running scripts are killed on their machines."""
        caller = access.current()
        task_id = await self._tx.read(lambda s: tasks.resolve_id(s, request.task_id))
        reason = request.reason or f"cancelled by {caller.name}"

        def admit(session: Session, task: TaskRecord) -> None:
            fleet = FleetAccess.load(session, caller)
            # Someone who may not even see the task is told it is not there to see.
            fleet.require_on_task(task, "view", "see the task")
            fleet.require_on_task(task, "deploy", "cancel the task")
            spec = task.spec
            _audit(
                session,
                caller,
                "task cancelled",
                task.id,
                f"Cancelled task {task.id} ({task.description}): {reason}",
                {"task_id": task.id, "reason": reason, "state_before": task.state.value},
                kind="task",
                space_id=spec.space_id if isinstance(spec, DeploymentTaskSpec) else None,
            )

        record = await self._runner.cancel(task_id, reason, admit=admit)
        return convert.task(record)

    async def DownloadArtifact(
        self, request: apb.DownloadArtifactRequest, context: Context
    ) -> AsyncIterator[apb.ArtifactChunk]:  # noqa: N802
        """An artifact's content as stored on the server."""
        task = await self._visible_task(request.task_id, "download its artifacts")
        content = await self._tx.read(
            lambda s: artifact_store.get_content(s, task.id, request.machine, request.name)
        )
        digest = hashlib.sha256(content).hexdigest()
        chunk = 1024 * 1024
        for offset in range(0, max(len(content), 1), chunk):
            yield apb.ArtifactChunk(
                data=content[offset : offset + chunk], total_size=len(content), sha256=digest
            )


def _log_form(blocks: bool, runs: bool) -> str:
    """How a caller reads the log: by column, as runs, or (older clients) line by line."""
    return "blocks" if blocks else "runs" if runs else "lines"


def _find_machine(session: Session, name: str) -> MachineRecord | None:
    try:
        return machine_store.get_by_name(session, name)
    except StoreNotFound:
        return None


def _union(first: Sequence[str], second: Sequence[str]) -> list[str]:
    seen = {n.casefold() for n in first}
    return [*first, *(n for n in second if n.casefold() not in seen)]


def _require_machine_view(fleet: FleetAccess, machine: MachineRecord) -> None:
    # Machines the caller cannot see are named as missing rights, not hidden: machine names
    # are not secrets, and "not found" for an existing machine would mislead an operator.
    if not fleet.may_view_machine(machine):
        raise PermissionDenied(
            f"{fleet.caller.name!r} needs the view role in one of the environments of machine "
            f"{machine.name!r} ({', '.join(machine.environments)})"
        )


def _audit(
    session: Session,
    caller: Principal,
    category: str,
    name: str,
    message: str,
    details: dict[str, Any],
    *,
    kind: str = "machine",
    space_id: str | None = None,
) -> None:
    """An operation's audit event: server-wide ones go to the default space's trail."""
    if space_id is None:
        space_id = doc_store.get_space(session, doc_store.DEFAULT_SPACE).id
    events.record(
        session,
        space_id=space_id,
        actor=caller.name,
        category=category,
        kind=kind,
        document_id=None,
        document_name=name,
        message=message,
        details=details,
    )


def _check_machine_references(session: Session, changes: dict[str, Any]) -> None:
    """Every environment, tenant, tag and policy a machine is given must exist."""
    space = doc_store.get_space(session, doc_store.DEFAULT_SPACE)
    problems: list[tuple[str, str]] = []
    for field, kind in (("environments", "environment"), ("tenants", "tenant")):
        names = changes[field] or []
        known = doc_store.ids_by_name(session, space.id, kind, names)
        problems.extend(
            (f"{field}[{i}]", f"no {kind} named {name!r}")
            for i, name in enumerate(names)
            if doc_store.name_key(name) not in known
        )
    tags = {
        f"{set_name}/{tag}".casefold()
        for record in doc_store.all_of_kind(session, space.id, "tag_set")
        for set_name in [record.name]
        for tag in record.body.get("tags", [])
    }
    problems.extend(
        (f"tenant_tags[{i}]", f"no tenant tag {tag!r} (tags are written 'Tag set/Tag')")
        for i, tag in enumerate(changes["tenant_tags"] or [])
        if tag.casefold() not in tags
    )
    policy = changes["policy"]
    if policy and doc_store.find(session, space.id, "machine_policy", policy) is None:
        problems.append(("policy", f"no machine policy named {policy!r}"))
    if problems:
        raise ValidationFailed(problems)


def _check_file_name(name: str, syntax: str) -> None:
    """Refuse a script file name no agent would write (the agent's own rule, checked early)."""
    path = PurePosixPath(name)
    body = "script.py" if syntax == "python" else "script.sh"
    if (
        not name
        or "\0" in name
        or "\\" in name
        or path.is_absolute()
        or not path.parts
        or ".." in path.parts
        or path.parts[0] == ".cuttle"
        or path.as_posix() == body
    ):
        # Accepted, the task would be stored and then refused by every agent it reaches.
        raise InvalidArgument(
            f"script file name {name!r} must be a relative path inside the workspace, "
            f"without '..', not under .cuttle/ and not {body}"
        )
