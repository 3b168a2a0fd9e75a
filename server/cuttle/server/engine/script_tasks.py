"""Ad-hoc script tasks: run one script on many machines, store every line once, survive restarts.

A task's targets each have a ticket chosen here. Running a target means: start the script
(idempotent per ticket), watch its journal from the last sequence we stored, store each batch
and the new last sequence in one transaction, and when the script ends record its result, fetch
its artifacts, and only then tell the agent to forget the ticket. A server that dies anywhere in
between resumes from the stored sequence: no line is stored twice, none is lost, and the script
is never started a second time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import structlog
from sqlalchemy.orm import Session

from cuttle.protocol.backoff import Backoff
from cuttle.server.comms.client import TentacleClient
from cuttle.server.comms.registry import Connections
from cuttle.server.domain.scripts import RemoteVariable, ScriptFile, ScriptRequest, ScriptStatus
from cuttle.server.engine.masking import ValueMasker
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.transactions import Transactions
from cuttle.server.errors import (
    AgentError,
    AgentRejected,
    InvalidArgument,
    NotDelivered,
    NotFound,
)
from cuttle.server.store import artifacts as artifact_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store import task_log, tasks
from cuttle.server.store.records import (
    ArtifactRef,
    LogLineRecord,
    OutputVariable,
    TaskRecord,
    TaskTargetRecord,
)

log = structlog.get_logger(__name__)

SYNTAXES = ("bash", "python", "sh", "pwsh")
MASK = "********"
# Agent errors that say the request itself is wrong (not that the agent is away or busy).
PERMANENT_REJECTIONS = frozenset({"invalid_argument"})
QUEUED: tuple[Literal["queued"]] = ("queued",)


@dataclass(frozen=True)
class ScriptTaskSettings:
    """Limits of script tasks; all configurable."""

    # How long a target keeps trying to reach its agent before the result counts as unknown.
    agent_lost_after: float = 600.0
    max_artifact_bytes: int = 64 * 1024 * 1024
    reconnect_max_delay: float = 10.0


@dataclass(frozen=True)
class ScriptSpec:
    """What a user asked to run, and where."""

    syntax: str
    body: str
    environments: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    machines: tuple[str, ...] = ()
    timeout_seconds: float = 0.0
    variables: tuple[RemoteVariable, ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()


@dataclass
class _Running:
    task: asyncio.Task[None]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    secrets: tuple[RemoteVariable, ...] = ()


class ScriptTasks:
    """Submits, runs, resumes and cancels script tasks."""

    def __init__(
        self,
        tx: Transactions,
        connections: Connections,
        signals: TaskSignals,
        settings: ScriptTaskSettings,
    ) -> None:
        self._tx = tx
        self._connections = connections
        self._signals = signals
        self._settings = settings
        self._running: dict[str, _Running] = {}
        # Sensitive inputs are kept in memory only (never in the task spec).
        self._secrets: dict[str, tuple[RemoteVariable, ...]] = {}

    async def resume(self) -> int:
        """Pick up every unfinished task after a (re)start; returns how many."""
        unfinished = await self._tx.run(lambda s: tasks.unfinished_tasks(s))
        for task in unfinished:
            log.info("task_resumed", task_id=task.id)
            self._spawn(task.id)
        return len(unfinished)

    async def stop(self) -> None:
        """Stop running tasks here; their scripts go on and are resumed on the next start."""
        runners = [r.task for r in self._running.values()]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        self._running.clear()

    async def submit(self, spec: ScriptSpec) -> TaskRecord:
        """Validate, pick the machines, store the task and start running it."""
        if spec.syntax not in SYNTAXES:
            raise InvalidArgument(
                f"syntax must be one of {', '.join(SYNTAXES)}, not {spec.syntax!r}"
            )
        if not spec.body.strip():
            raise InvalidArgument("the script body is empty")
        if not (spec.environments or spec.roles or spec.machines):
            raise InvalidArgument("choose machines by --machine, --environment or --role")

        def create(session: Session) -> TaskRecord:
            matching = machine_store.all_machines(
                session, environments=spec.environments, roles=spec.roles, names=spec.machines
            )
            chosen = [m for m in matching if m.enabled]
            missing = {n.lower() for n in spec.machines} - {m.name.lower() for m in chosen}
            if missing:
                raise NotFound(f"no enabled machine named {', '.join(sorted(missing))}")
            if not chosen:
                raise NotFound(
                    "no machine matches "
                    + ", ".join(
                        f"{label} {', '.join(values)}"
                        for label, values in (
                            ("environment", spec.environments),
                            ("role", spec.roles),
                        )
                        if values
                    )
                )
            description = f"Run {spec.syntax} script on {len(chosen)} machine(s)"
            return tasks.create_script_task(
                session,
                description=description,
                spec={
                    "syntax": spec.syntax,
                    "body": spec.body,
                    "timeout_seconds": spec.timeout_seconds,
                    "variables": [
                        {"name": v.name, "value": v.value}
                        for v in spec.variables
                        if not v.sensitive
                    ],
                    "sensitive_names": [v.name for v in spec.variables if v.sensitive],
                    "files": [{"name": name, "content": data.hex()} for name, data in spec.files],
                },
                machine_names=[m.name for m in chosen],
            )

        task = await self._tx.run(create)
        self._secrets[task.id] = tuple(v for v in spec.variables if v.sensitive)
        log.info("task_submitted", task_id=task.id, machines=len(task.targets))
        self._spawn(task.id)
        return task

    async def cancel(self, task_id: str, reason: str) -> TaskRecord:
        """Cancel a task: its scripts are killed on every machine, confirmed by the agents."""
        record = await self._tx.run(lambda s: tasks.request_cancel(s, task_id, reason))
        running = self._running.get(task_id)
        if running is not None:
            running.reason = reason
            running.cancel.set()
        self._signals.notify(task_id)
        return record

    def _spawn(self, task_id: str) -> None:
        if task_id in self._running:
            return
        runner = asyncio.create_task(self._run_task(task_id), name=f"task-{task_id}")
        self._running[task_id] = _Running(runner, secrets=self._secrets.pop(task_id, ()))
        runner.add_done_callback(lambda _t: self._running.pop(task_id, None))

    async def _run_task(self, task_id: str) -> None:
        structlog.contextvars.bind_contextvars(task_id=task_id)
        task = await self._tx.run(lambda s: tasks.get(s, task_id))
        if task.state == "queued":
            task = await self._tx.run(
                lambda s: tasks.set_state(s, task_id, "running", expected=QUEUED)
            )
            self._signals.notify(task_id)
        running = self._running[task_id]
        if task.cancel_requested:
            running.reason = task.cancel_reason
            running.cancel.set()
        pending = [t for t in task.targets if t.finished_ms is None]
        await asyncio.gather(*(self._run_target(task, t, running) for t in pending))
        final = await self._tx.run(lambda s: tasks.get(s, task_id))
        if final.cancel_requested:
            state = "cancelled"
        elif all(t.state == "complete" and t.exit_code == 0 for t in final.targets):
            state = "success"
        else:
            state = "failed"
        await self._tx.run(lambda s: tasks.set_state(s, task_id, state))  # type: ignore[arg-type]
        self._signals.notify(task_id)
        log.info("task_finished", state=state)

    def _request(
        self, task: TaskRecord, target: TaskTargetRecord, running: _Running
    ) -> ScriptRequest:
        spec = task.spec
        variables = [
            RemoteVariable(str(v["name"]), str(v["value"]))  # type: ignore[index,call-overload]
            for v in spec.get("variables", [])  # type: ignore[union-attr]
        ]
        variables.append(RemoteVariable("Octopus.Machine.Name", target.machine_name))
        variables.append(RemoteVariable("Octopus.Task.Id", task.id))
        variables.extend(running.secrets)
        files = tuple(
            (str(f["name"]), bytes.fromhex(str(f["content"])))  # type: ignore[index,call-overload]
            for f in spec.get("files", [])  # type: ignore[union-attr]
        )
        return ScriptRequest(
            ticket=target.ticket,
            body=str(spec["body"]),
            syntax=str(spec["syntax"]),
            files=tuple(ScriptFile(name, content) for name, content in files),
            variables=tuple(variables),
            timeout_seconds=float(spec.get("timeout_seconds", 0) or 0),  # type: ignore[arg-type]
        )

    async def _run_target(
        self, task: TaskRecord, target: TaskTargetRecord, running: _Running
    ) -> None:
        machine = target.machine_name
        bound = structlog.get_logger(__name__).bind(machine=machine, ticket=target.ticket)
        sensitive_names = task.spec.get("sensitive_names") or []
        if sensitive_names and not running.secrets and target.state in ("pending", "not_delivered"):
            await self._finish_target(
                task.id,
                machine,
                "failed_to_start",
                -1,
                "its sensitive variables were held in memory only and the server restarted "
                "before the script started; run it again",
            )
            return
        masker = ValueMasker(v.value for v in running.secrets)
        request = self._request(task, target, running)
        after = target.last_sequence
        backoff = Backoff(initial=0.2, maximum=self._settings.reconnect_max_delay)
        lost_since: float | None = None
        cancel_sent = False
        started = False
        while True:
            try:
                client = self._connections.client(machine)
                if running.cancel.is_set() and not cancel_sent:
                    await client.cancel_script(target.ticket, running.reason or "cancelled")
                    cancel_sent = True
                status = await client.start_script(request)
                started = True
                watcher = asyncio.create_task(
                    self._follow(task.id, machine, client, target.ticket, after, masker)
                )
                canceller = asyncio.create_task(running.cancel.wait())
                done, _ = await asyncio.wait(
                    {watcher, canceller}, return_when=asyncio.FIRST_COMPLETED
                )
                if watcher not in done:
                    await client.cancel_script(target.ticket, running.reason or "cancelled")
                    cancel_sent = True
                    await watcher
                canceller.cancel()
                status, after = watcher.result()
                await self._conclude(task.id, machine, client, status, masker)
                return
            except (AgentError, NotFound) as exc:
                if (
                    isinstance(exc, NotDelivered)
                    and not started
                    and target.state
                    in (
                        "pending",
                        "not_delivered",
                    )
                ):
                    # The agent never had it: safe for a person (or a deployment) to retry.
                    await self._finish_target(task.id, machine, "not_delivered", -1, str(exc))
                    return
                if isinstance(exc, AgentRejected) and exc.kind in PERMANENT_REJECTIONS:
                    # Asking again cannot help: the agent refuses the same request every time.
                    state = "result_unknown" if started else "failed_to_start"
                    await self._finish_target(
                        task.id, machine, state, -1, f"the agent refused the request: {exc}"
                    )
                    return
                now = time.monotonic()
                lost_since = lost_since or now
                stored = await self._tx.run(lambda s: tasks.get_target(s, task.id, machine))
                after = stored.last_sequence
                if now - lost_since > self._settings.agent_lost_after:
                    await self._finish_target(
                        task.id,
                        machine,
                        "result_unknown",
                        -1,
                        f"lost contact with {machine} for "
                        f"{self._settings.agent_lost_after:g}s: {exc}",
                    )
                    return
                delay = backoff.next_delay()
                bound.warning("target_retrying", error=str(exc), delay=round(delay, 2))
                await asyncio.sleep(delay)

    async def _follow(
        self,
        task_id: str,
        machine: str,
        client: TentacleClient,
        ticket: str,
        after: int,
        masker: ValueMasker,
    ) -> tuple[ScriptStatus, int]:
        last: ScriptStatus | None = None
        async for status in client.watch_script(ticket, after):
            last = status
            if status.lines:
                records = [
                    LogLineRecord(
                        line.sequence,
                        line.time_unix_ms,
                        line.source,
                        line.level,
                        masker.mask(line.text) if masker else line.text,
                    )
                    for line in status.lines
                ]
                await self._tx.run(partial(_append, task_id, machine, records))
                after = status.lines[-1].sequence
                self._signals.notify(task_id)
            if status.finished and not status.more_lines:
                break
        if last is None or not last.finished:
            # The watch ended early (agent restarted or stream closed): ask directly.
            last = await client.get_status(ticket, after)
            while last.lines:
                records = [
                    LogLineRecord(
                        line.sequence,
                        line.time_unix_ms,
                        line.source,
                        line.level,
                        masker.mask(line.text),
                    )
                    for line in last.lines
                ]
                await self._tx.run(partial(_append, task_id, machine, records))
                after = last.lines[-1].sequence
                self._signals.notify(task_id)
                if not last.more_lines:
                    break
                last = await client.get_status(ticket, after)
            if not last.finished:
                raise _StillRunning(machine)
        return last, after

    async def _conclude(
        self,
        task_id: str,
        machine: str,
        client: TentacleClient,
        status: ScriptStatus,
        masker: ValueMasker,
    ) -> None:
        stored_artifacts: list[ArtifactRef] = []
        for artifact in status.artifacts:
            content = await client.download(
                status.ticket, artifact.path, self._settings.max_artifact_bytes
            )
            await self._tx.run(partial(_put_artifact, task_id, machine, artifact.name, content))
            stored_artifacts.append(
                ArtifactRef(artifact.name, artifact.path, artifact.size, artifact.sha256)
            )
        outputs = [
            OutputVariable(v.name, MASK if v.sensitive else v.value, v.sensitive)
            for v in status.output_variables
        ]
        message = status.failure_message or status.state_reason
        await self._finish_target(
            task_id,
            machine,
            status.state,
            status.exit_code,
            masker.mask(message.encode()).decode(errors="replace"),
            outputs,
            stored_artifacts,
        )
        try:
            await client.complete_script(status.ticket)
        except AgentError as exc:
            # The result is stored; the agent's cleaner removes the ticket later anyway.
            log.warning("complete_script_failed", machine=machine, error=str(exc))

    async def _finish_target(
        self,
        task_id: str,
        machine: str,
        state: str,
        exit_code: int,
        message: str,
        outputs: Sequence[OutputVariable] = (),
        stored_artifacts: Sequence[ArtifactRef] = (),
    ) -> None:
        await self._tx.run(
            lambda s: tasks.update_target(
                s,
                task_id,
                machine,
                state=state,  # type: ignore[arg-type]
                exit_code=exit_code,
                message=message,
                output_variables=outputs,
                artifacts=stored_artifacts,
                at_ms=int(time.time() * 1000),
            )
        )
        self._signals.notify(task_id)
        log.info("target_finished", machine=machine, state=state, exit_code=exit_code)


def _append(task_id: str, machine: str, records: Sequence[LogLineRecord], session: Session) -> None:
    task_log.append_lines(session, task_id, machine, records)


def _put_artifact(task_id: str, machine: str, name: str, content: bytes, session: Session) -> None:
    artifact_store.put(session, task_id, machine, name, content)


class _StillRunning(AgentError):
    def __init__(self, machine: str) -> None:
        super().__init__(f"{machine}: the watch ended while the script still runs")
