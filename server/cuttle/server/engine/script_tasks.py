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
from cuttle.protocol.masking import Masker
from cuttle.server.comms.client import TentacleClient
from cuttle.server.comms.registry import Connections
from cuttle.server.domain.scripts import RemoteVariable, ScriptFile, ScriptRequest, ScriptStatus
from cuttle.server.engine.completions import TicketCompletions
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.transactions import Transactions
from cuttle.server.errors import (
    AgentError,
    AgentRejected,
    FailedPrecondition,
    InvalidArgument,
    NotDelivered,
    NotFound,
)
from cuttle.server.store import artifacts as artifact_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store import pending_cancels, task_log, tasks
from cuttle.server.store.records import (
    ArtifactRef,
    LogRunRecord,
    OutputVariable,
    TaskRecord,
    TaskTargetRecord,
    now_ms,
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
    # When a cancel left pending for an away agent is first tried again (engine/cancel_delivery).
    cancel_retry_interval: float = 15.0
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
    # On each machine, at most one fully isolated script holding the mutex runs at a time.
    full_isolation: bool = False
    mutex_name: str = ""
    isolation_timeout_seconds: float = 0.0


@dataclass
class _Running:
    task: asyncio.Task[None]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    secrets: tuple[RemoteVariable, ...] = ()
    # Whether the task was running before this server started: an earlier process may have
    # started its scripts, so the agent may have one even if nothing was sent from here.
    resumed: bool = False


class ScriptTasks:
    """Submits, runs, resumes and cancels script tasks."""

    def __init__(
        self,
        tx: Transactions,
        connections: Connections,
        signals: TaskSignals,
        settings: ScriptTaskSettings,
        completions: TicketCompletions | None = None,
    ) -> None:
        self._tx = tx
        # Not started (as in unit tests): each completion is then awaited in place.
        self._completions = completions or TicketCompletions()
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
            enabled = [m for m in matching if m.enabled]
            named = {n.lower() for n in spec.machines}
            missing = named - {m.name.lower() for m in enabled}
            if missing:
                raise NotFound(f"no enabled machine named {', '.join(sorted(missing))}")
            # As Octopus does: an unavailable machine is skipped, an unreachable one is still
            # tried (it may be back). One asked for by name is refused rather than silently
            # left out, and the person sees why.
            skipped = [m for m in enabled if m.health == "unavailable"]
            refused = [m for m in skipped if m.name.lower() in named]
            if refused:
                raise FailedPrecondition(
                    "; ".join(
                        f"{m.name} is unavailable ({m.health_message or 'health checks fail'})"
                        for m in refused
                    )
                    + ": check it again with `cuttle machine health-check --name NAME`"
                )
            chosen = [m for m in enabled if m.health != "unavailable"]
            if not chosen:
                raise NotFound(
                    f"no {'available ' if skipped else ''}machine matches "
                    + ", ".join(
                        f"{label} {', '.join(values)}"
                        for label, values in (
                            ("environment", spec.environments),
                            ("role", spec.roles),
                        )
                        if values
                    )
                    + (f" (unavailable: {', '.join(m.name for m in skipped)})" if skipped else "")
                )
            description = f"Run {spec.syntax} script on {len(chosen)} machine(s)"
            if skipped:
                description += f", skipped unavailable {', '.join(m.name for m in skipped)}"
            return tasks.create_script_task(
                session,
                description=description,
                spec={
                    "syntax": spec.syntax,
                    "body": spec.body,
                    "timeout_seconds": spec.timeout_seconds,
                    "full_isolation": spec.full_isolation,
                    "mutex_name": spec.mutex_name,
                    "isolation_timeout_seconds": spec.isolation_timeout_seconds,
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
        running = self._running[task_id]
        running.resumed = task.state != "queued"
        if task.state == "queued":
            task = await self._tx.run(
                lambda s: tasks.set_state(s, task_id, "running", expected=QUEUED)
            )
            self._signals.notify(task_id)
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
            full_isolation=bool(spec.get("full_isolation", False)),
            mutex_name=str(spec.get("mutex_name", "") or ""),
            isolation_timeout_seconds=float(
                spec.get("isolation_timeout_seconds", 0) or 0  # type: ignore[arg-type]
            ),
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
        masker = Masker(v.value for v in running.secrets)
        request = self._request(task, target, running)
        after = target.last_sequence
        backoff = Backoff(initial=0.2, maximum=self._settings.reconnect_max_delay)
        lost_since: float | None = None
        cancel_sent = False
        started = False
        # Whether the agent may have the script. While it cannot, a cancel needs nothing from
        # the agent, and failing to reach it means "not delivered" (safe to run again).
        may_have_started = running.resumed
        while True:
            if running.cancel.is_set() and not may_have_started:
                await self._finish_target(
                    task.id, machine, "cancelled", -1, f"cancelled before it was sent to {machine}"
                )
                return
            # Set once the agent answered the start: it has the script from then on.
            answered = asyncio.Event()
            try:
                client = self._connections.client(machine)
                if running.cancel.is_set() and not cancel_sent:
                    try:
                        await client.cancel_script(target.ticket, running.reason or "cancelled")
                    except NotFound as exc:
                        # Nothing runs under the ticket there, and starting it now would run
                        # a cancelled script. If it ran before, what became of it is unknown.
                        ran = started or target.last_sequence > 0
                        await self._finish_target(
                            task.id,
                            machine,
                            "result_unknown" if ran else "cancelled",
                            -1,
                            f"cancelled; {machine} does not know the script: {exc}",
                        )
                        return
                    cancel_sent = True
                # The watch starts the script (idempotently) and follows it: one round trip.
                watcher = asyncio.create_task(
                    self._follow(
                        task.id, machine, client, target.ticket, after, masker, request, answered
                    )
                )
                canceller = asyncio.create_task(running.cancel.wait())
                try:
                    done, _ = await asyncio.wait(
                        {watcher, canceller}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if watcher not in done:
                        await client.cancel_script(target.ticket, running.reason or "cancelled")
                        cancel_sent = True
                        await asyncio.wait({watcher})
                finally:
                    # Neither outlives this attempt, whatever ended it (an unreachable agent).
                    canceller.cancel()
                    watcher.cancel()
                    await asyncio.wait({watcher, canceller})
                    if not watcher.cancelled():
                        # Seen here, so a failure that lost to the cancel's is not reported
                        # as never retrieved; result() below raises it when it is ours.
                        watcher.exception()
                status, after = watcher.result()
                await self._conclude(task.id, machine, client, status, masker)
                return
            except (AgentError, NotFound) as exc:
                if answered.is_set():
                    started = may_have_started = True
                elif not isinstance(exc, NotDelivered):
                    # Only a request nobody picked up surely did not start it; one lost on
                    # the way back may have.
                    may_have_started = True
                if isinstance(exc, NotDelivered) and not may_have_started:
                    if running.cancel.is_set():
                        continue  # cancelled before the agent had it: see the top of the loop
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
                    lost = (
                        f"lost contact with {machine} for "
                        f"{self._settings.agent_lost_after:g}s: {exc}"
                    )
                    if running.cancel.is_set():
                        await self._leave_cancel_pending(task.id, target, running.reason, lost)
                    else:
                        await self._finish_target(task.id, machine, "result_unknown", -1, lost)
                    return
                delay = backoff.next_delay()
                bound.warning("target_retrying", error=str(exc), delay=round(delay, 2))
                await asyncio.sleep(delay)

    async def _leave_cancel_pending(
        self, task_id: str, target: TaskTargetRecord, reason: str, lost: str
    ) -> None:
        """Finish a target whose cancel could not reach its agent; keep the cancel for later.

        The target becomes result_unknown, not cancelled: until the agent confirms, nobody
        knows whether the script was killed, ended by itself, or still runs, and `cancelled`
        would tell the person reading `cuttle task show` that it was killed. The message says
        the cancel is pending; delivery (engine/cancel_delivery.py) rewrites it with what the
        agent answered. The task itself still ends cancelled: that is what was asked for.
        """
        machine = target.machine_name
        at = now_ms()

        def finish(session: Session) -> bool:
            # One transaction: a target never ends result_unknown with its cancel forgotten.
            kept = pending_cancels.add(
                session,
                ticket=target.ticket,
                machine_name=machine,
                task_id=task_id,
                reason=reason or "cancelled",
                # Not at once: the agent was lost a moment ago.
                next_attempt_ms=at + int(self._settings.cancel_retry_interval * 1000),
            )
            if kept is None:
                message = f"{lost}; the cancel cannot be delivered: {machine} was removed"
            else:
                message = f"{lost}; the cancel is kept and will be delivered when {machine} is back"
            tasks.update_target(
                session,
                task_id,
                machine,
                state="result_unknown",
                exit_code=-1,
                message=message,
                at_ms=at,
            )
            return kept is not None

        kept = await self._tx.run(finish)
        self._signals.notify(task_id)
        log.info(
            "target_finished",
            machine=machine,
            state="result_unknown",
            exit_code=-1,
            cancel_pending=kept,
        )
        if kept:
            log.info("pending_cancel_recorded", machine=machine, ticket=target.ticket)

    async def _follow(
        self,
        task_id: str,
        machine: str,
        client: TentacleClient,
        ticket: str,
        after: int,
        masker: Masker,
        start: ScriptRequest,
        answered: asyncio.Event,
    ) -> tuple[ScriptStatus, int]:
        last: ScriptStatus | None = None
        async for status in client.watch_script(ticket, after, start=start):
            answered.set()
            last = status
            if status.runs:
                await self._store_runs(task_id, machine, status, masker)
                after = status.runs[-1].last_sequence
            if status.finished and not status.more_lines:
                break
        if last is None or not last.finished:
            # The watch ended early (agent restarted or stream closed): ask directly.
            last = await client.get_status(ticket, after)
            while last.runs:
                await self._store_runs(task_id, machine, last, masker)
                after = last.runs[-1].last_sequence
                if not last.more_lines:
                    break
                last = await client.get_status(ticket, after)
            if not last.finished:
                raise _StillRunning(machine)
        return last, after

    async def _store_runs(
        self, task_id: str, machine: str, status: ScriptStatus, masker: Masker
    ) -> None:
        # Runs go to the store as they came, one chunk per batch: no per-line work here.
        records = [
            LogRunRecord(
                run.sequence,
                run.time_unix_ms,
                run.source,
                run.level,
                masker.mask(run.text) if masker else run.text,
                run.count,
            )
            for run in status.runs
        ]
        await self._tx.run(partial(_append, task_id, machine, records))
        self._signals.notify(task_id)

    async def _conclude(
        self,
        task_id: str,
        machine: str,
        client: TentacleClient,
        status: ScriptStatus,
        masker: Masker,
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
        # Stored: the agent may delete the ticket. Nothing after this waits for its answer.
        await self._completions.submit(client, status.ticket)

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


def _append(task_id: str, machine: str, records: Sequence[LogRunRecord], session: Session) -> None:
    task_log.append_runs(session, task_id, machine, records)


def _put_artifact(task_id: str, machine: str, name: str, content: bytes, session: Session) -> None:
    artifact_store.put(session, task_id, machine, name, content)


class _StillRunning(AgentError):
    def __init__(self, machine: str) -> None:
        super().__init__(f"{machine}: the watch ended while the script still runs")
