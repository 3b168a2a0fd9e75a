"""One script run: a ticket's whole life on one agent, from start to a stored outcome.

Start the script (idempotent per ticket), watch its journal from the last sequence stored, store
each batch and the new last sequence in one transaction, and when the script ends record its
result, fetch its artifacts, and only then tell the agent to forget the ticket. A server that
dies anywhere in between resumes from the stored sequence: no line is stored twice, none is
lost, and the script is never started a second time.

What the outcome says is what is known: "not delivered" only when the agent provably never had
the script (nobody picked the request up, and nothing was sent before); once it may have run,
losing the agent is "result unknown", never an invitation to run it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import structlog
from sqlalchemy.orm import Session

from cuttle.protocol.backoff import Backoff
from cuttle.protocol.masking import Masker
from cuttle.server.comms.client import TentacleClient
from cuttle.server.comms.registry import Connections, MachineUnavailable
from cuttle.server.domain.plan import NO_WORKER, Worker
from cuttle.server.domain.scripts import (
    Artifact,
    LogChunk,
    LogRun,
    RemoteVariable,
    ScriptRequest,
    ScriptStatus,
)
from cuttle.server.domain.task_states import FINISHED_RUN_STATES, RunState
from cuttle.server.encryption import Encryptor
from cuttle.server.engine.clock import SYSTEM_CLOCK, Clock
from cuttle.server.engine.completions import TicketCompletions
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.errors import (
    AgentError,
    AgentRejected,
    NotDelivered,
    NotFound,
    UnknownTicket,
)
from cuttle.server.packages.feed import PackageFeed
from cuttle.server.store import artifacts as artifact_store
from cuttle.server.store import pending_cancels, task_log, tasks
from cuttle.server.store.records import ScriptRunRecord
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

# LogLevel.WARNING on the wire (write_warning, ##octopus[stdWarning]).
WARNING_LEVEL = 4
# Agent errors that say the request itself is wrong (not that the agent is away or busy).
PERMANENT_REJECTIONS = frozenset({"invalid_argument"})


@dataclass(frozen=True)
class RunSettings:
    """Limits of one script run; all configurable."""

    # How long a run keeps trying to reach its agent before the result counts as unknown.
    agent_lost_after: float = 600.0
    # When a cancel left pending for an away agent is first tried again (engine/cancel_delivery).
    cancel_retry_interval: float = 15.0
    max_artifact_bytes: int = 64 * 1024 * 1024
    reconnect_max_delay: float = 10.0
    log_limits: task_log.LogLimits = task_log.LogLimits()


@dataclass
class CancelSignal:
    """Set once when the task is cancelled; every run of the task watches the same one."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    # Set by the deployment's own time limit: the task ends timed_out, not cancelled.
    timed_out: bool = False

    def set(self, reason: str, *, timed_out: bool = False) -> None:
        """Cancel, keeping the first reason."""
        if not self.event.is_set():
            self.reason = reason or "cancelled"
            self.timed_out = timed_out
            self.event.set()

    @property
    def is_set(self) -> bool:
        """Whether the cancel was asked for."""
        return self.event.is_set()


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, as stored."""

    state: RunState
    exit_code: int
    message: str
    # The cancel could not reach the agent and is kept for delivery when it is back.
    cancel_pending: bool = False


@dataclass(frozen=True)
class RunContext:
    """What every run of a node needs from the engine."""

    tx: Transactions
    connections: Connections
    signals: TaskSignals
    completions: TicketCompletions
    settings: RunSettings
    encryptor: Encryptor | None
    # Whether this node offers the built-in worker (for deployments a lifecycle queues).
    worker: Callable[[], Worker] = lambda: NO_WORKER
    # The package feed deployments acquire from (None: this engine deploys no packages).
    packages: PackageFeed | None = None
    # Every wait the engine times (retry pauses, a lost agent, answer polls) asks this.
    clock: Clock = SYSTEM_CLOCK


class ScriptRun:
    """Owns one ticket until its outcome is stored; `execute()` returns that outcome."""

    def __init__(
        self,
        context: RunContext,
        run: ScriptRunRecord,
        request: ScriptRequest,
        masker: Masker,
        cancel: CancelSignal,
        *,
        resumed: bool,
    ) -> None:
        self._ctx = context
        self._run = run
        self._request = request
        self._masker = masker
        self._cancel = cancel
        self._machine = run.machine_name
        self._ticket = run.ticket
        self._task_id = run.task_id
        self._log = log.bind(task_id=run.task_id, machine=run.machine_name, ticket=run.ticket)
        # Whether the agent may have the script: a run that was started by an earlier server
        # process may be running there even if nothing was sent from here.
        self._may_have_started = resumed or run.state == RunState.RUNNING or run.last_sequence > 0
        self._started = run.last_sequence > 0
        self._warned = False
        self._last_sequence = run.last_sequence
        # Since when the agent has been out of reach without a break (None: reachable). Reset by
        # every answer, so two short outages hours apart never add up to a lost agent.
        self._lost_since: float | None = None
        self._unreachable_noted = False
        # The run and its node as this run's outcome stored them (None until then, and when
        # the run had ended before): the engine goes on from them without reading them again.
        self.stored: tasks.RunUpdate | None = None

    async def execute(self) -> RunOutcome:
        """Drive the run to a stored outcome; an agent that is away is retried, not failed."""
        if self._run.state in FINISHED_RUN_STATES:
            return RunOutcome(self._run.state, self._run.exit_code or -1, self._run.message)
        backoff = Backoff(initial=0.2, maximum=self._ctx.settings.reconnect_max_delay)
        cancel_sent = False
        while True:
            if self._cancel.is_set and not self._may_have_started:
                return await self._finish(
                    RunState.CANCELLED, -1, f"cancelled before it was sent to {self._machine}"
                )
            # Set once the agent answered the start: it has the script from then on.
            answered = asyncio.Event()
            try:
                client = await self._ctx.connections.client(self._machine)
                if self._cancel.is_set and not cancel_sent:
                    try:
                        await client.cancel_script(self._ticket, self._cancel.reason)
                    except UnknownTicket as exc:
                        # Nothing runs under the ticket there, and starting it now would run
                        # a cancelled script. If it ran before, what became of it is unknown.
                        state = RunState.RESULT_UNKNOWN if self._started else RunState.CANCELLED
                        return await self._finish(
                            state, -1, f"cancelled; {self._machine} does not know the script: {exc}"
                        )
                    cancel_sent = True
                status = await self._watch_until_done(client, answered)
                return await self._conclude(client, status)
            except (AgentError, NotFound) as exc:
                # NotFound: this node does not know the machine (yet, or any more); the store
                # decides when it is gone, so it is retried like an agent that is away.
                if answered.is_set():
                    self._started = self._may_have_started = True
                elif not isinstance(exc, NotDelivered | NotFound):
                    # Only a request nobody picked up surely did not start it; one lost on
                    # the way back may have.
                    self._may_have_started = True
                if isinstance(exc, NotDelivered) and not self._may_have_started:
                    if self._cancel.is_set:
                        continue  # cancelled before the agent had it: see the top of the loop
                    return await self._finish(
                        RunState.NOT_DELIVERED,
                        -1,
                        f"not delivered, safe to retry: {self._machine} never received the "
                        f"script ({exc})",
                    )
                if isinstance(exc, MachineUnavailable) and not self._may_have_started:
                    return await self._finish(RunState.FAILED_TO_START, -1, str(exc))
                if isinstance(exc, AgentRejected) and exc.kind in PERMANENT_REJECTIONS:
                    # Asking again cannot help: the agent refuses the same request every time.
                    state = RunState.RESULT_UNKNOWN if self._started else RunState.FAILED_TO_START
                    return await self._finish(state, -1, f"the agent refused the request: {exc}")
                if self._cancel.is_set:
                    # The one rule of cancel: an agent that cannot be reached right now gets
                    # its cancel recorded for when it is back; nobody waits agent_lost_after.
                    return await self._leave_cancel_pending(
                        f"result unknown: could not reach {self._machine} to cancel the script"
                        f" ({getattr(exc, 'reason', '') or exc})"
                    )
                now = self._ctx.clock.now()
                self._lost_since = self._lost_since or now
                stored = await self._ctx.tx.read(lambda s: tasks.get_run(s, self._ticket))
                self._last_sequence = stored.last_sequence
                lost_for = self._ctx.settings.agent_lost_after
                if now - self._lost_since > lost_for:
                    lost = self._lost_message(lost_for, exc)
                    return await self._finish(RunState.RESULT_UNKNOWN, -1, lost)
                if not self._unreachable_noted:
                    await self._note_unreachable(exc, lost_for - (now - self._lost_since))
                delay = backoff.next_delay()
                self._log.warning("run_retrying", error=str(exc), delay=round(delay, 2))
                await self._ctx.clock.sleep(delay)

    async def _note_unreachable(self, exc: AgentError | NotFound, left: float) -> None:
        """Say in the task's tree and live log that the agent is out of reach, and for how long
        the server keeps trying (issue 15: never a silent 'pending')."""
        since = time.strftime("%H:%M:%S", time.gmtime(self._ctx.clock.wall_ms() / 1000))
        reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
        note = (
            f"waiting for {self._machine} since {since} UTC: {reason}; retrying for "
            f"{_duration(left)} more"
        )
        node_id, task_id = self._run.node_id, self._task_id

        def store(session: Session) -> None:
            tasks.note_node_reason(session, node_id, note)
            task_log.append_server_line(session, task_id, note)

        await self._ctx.tx.run(store)
        self._ctx.signals.notify(task_id)
        self._unreachable_noted = True

    async def _note_reachable(self) -> None:
        self._lost_since = None
        if not self._unreachable_noted:
            return
        self._unreachable_noted = False
        note = f"reached {self._machine} again"
        node_id, task_id = self._run.node_id, self._task_id

        def store(session: Session) -> None:
            tasks.note_node_reason(session, node_id, "")
            task_log.append_server_line(session, task_id, note)

        await self._ctx.tx.run(store)
        self._ctx.signals.notify(task_id)

    def _lost_message(self, lost_for: float, exc: AgentError | NotFound) -> str:
        seen = (
            f"the last line stored is number {self._last_sequence}"
            if self._last_sequence
            else "no output was seen"
        )
        reason = getattr(exc, "reason", "") or type(exc).__name__
        return (
            f"result unknown: the script may have run on {self._machine}; lost contact for "
            f"{lost_for:g}s ({reason}); {seen}"
        )

    async def _watch_until_done(
        self, client: TentacleClient, answered: asyncio.Event
    ) -> ScriptStatus:
        """Start (idempotently) and follow the script until it ends or the cancel is sent."""
        watcher = asyncio.create_task(self._follow(client, answered))
        canceller = asyncio.create_task(self._cancel.event.wait())
        try:
            done, _ = await asyncio.wait({watcher, canceller}, return_when=asyncio.FIRST_COMPLETED)
            if watcher not in done:
                await client.cancel_script(self._ticket, self._cancel.reason)
                await asyncio.wait({watcher})
        finally:
            # Neither outlives this attempt, whatever ended it (an unreachable agent).
            canceller.cancel()
            watcher.cancel()
            await asyncio.wait({watcher, canceller})
            if not watcher.cancelled():
                # Seen here, so a failure that lost to the cancel's is not reported as never
                # retrieved; result() below raises it when it is ours.
                watcher.exception()
        return watcher.result()

    async def _follow(self, client: TentacleClient, answered: asyncio.Event) -> ScriptStatus:
        last: ScriptStatus | None = None
        # The watch starts the script (idempotently) and follows it: one round trip.
        async for status in client.watch_script(
            self._ticket, self._last_sequence, start=self._request
        ):
            last = status
            if self._lost_since is not None:
                await self._note_reachable()
            if not answered.is_set():
                answered.set()
                self._started = self._may_have_started = True
                if not status.finished:
                    # Shown as running from now on; a no-op script that ended within the first
                    # answer skips this write.
                    await self._store(status.runs, running=True)
                    continue
            if status.runs:
                await self._store(status.runs)
            if status.finished and not status.more_lines:
                break
        if last is None or not last.finished:
            # The watch ended early (agent restarted or stream closed): ask directly.
            last = await client.get_status(self._ticket, self._last_sequence)
            while last.runs:
                await self._store(last.runs)
                if not last.more_lines:
                    break
                last = await client.get_status(self._ticket, self._last_sequence)
            if not last.finished:
                raise _StillRunning(self._machine)
        return last

    async def _store(self, runs: Sequence[LogRun], *, running: bool = False) -> None:
        # Runs go to the store as they came, one chunk per batch: no per-line work here, and
        # no new run unless masking changed its text (a batch holds thousands of runs).
        records = list(runs) if not self._masker else [self._masked(r) for r in runs]
        ticket = self._ticket

        limits = self._ctx.settings.log_limits

        warned = not self._warned and any(r.level == WARNING_LEVEL for r in records)

        def store(session: Session) -> LogChunk | None:
            stored = task_log.append_chunk(session, ticket, records, limits) if records else None
            if warned:
                # "Success with warnings", as Octopus shows it: once per run is enough.
                tasks.mark_warnings(session, self._task_id)
            if running and tasks.get_run(session, ticket).state == RunState.PENDING:
                tasks.update_run(session, ticket, state=RunState.RUNNING)
            return stored

        stored = await self._ctx.tx.run(store) if records or running else None
        self._warned = self._warned or warned
        if runs:
            self._last_sequence = max(self._last_sequence, runs[-1].last_sequence)
        # Committed: followers on this node get the lines from memory (engine/follow.py).
        self._ctx.signals.notify(self._task_id, stored)

    def _masked(self, run: LogRun) -> LogRun:
        text = self._masker.mask(run.text)
        if text == run.text:
            return run
        return LogRun(run.sequence, run.time_ms, run.source, run.level, text, run.count)

    async def _conclude(self, client: TentacleClient, status: ScriptStatus) -> RunOutcome:
        stored_artifacts: list[Artifact] = []
        for artifact in status.artifacts:
            content = await client.download(
                status.ticket, artifact.path, self._ctx.settings.max_artifact_bytes
            )
            await self._ctx.tx.run(
                partial(_put_artifact, self._task_id, self._machine, artifact.name, content)
            )
            stored_artifacts.append(artifact)
        message = status.failure_message or status.state_reason
        outcome = await self._finish(
            RunState(status.state),
            status.exit_code,
            self._masker.mask_text(message),
            self._outputs(status.output_variables),
            stored_artifacts,
        )
        # Stored: the agent may delete the ticket. Nothing after this waits for its answer.
        await self._ctx.completions.submit(client, status.ticket)
        return outcome

    def _outputs(self, variables: Sequence[RemoteVariable]) -> list[RemoteVariable]:
        """Output variables as stored: a sensitive one, or one holding a secret, encrypted."""
        stored: list[RemoteVariable] = []
        for variable in variables:
            leaks = self._masker.mask_text(variable.value) != variable.value
            if not (variable.sensitive or leaks):
                stored.append(variable)
                continue
            if leaks and not variable.sensitive:
                self._log.warning("output_variable_masked", name=variable.name)
            value = (
                self._ctx.encryptor.encrypt(variable.value, variable.name)
                if self._ctx.encryptor is not None
                else ""
            )
            stored.append(RemoteVariable(variable.name, value, sensitive=True))
        return stored

    async def _finish(
        self,
        state: RunState,
        exit_code: int,
        message: str,
        outputs: Sequence[RemoteVariable] = (),
        stored_artifacts: Sequence[Artifact] = (),
    ) -> RunOutcome:
        ticket = self._ticket
        self.stored = await self._ctx.tx.run(
            lambda s: tasks.update_run_and_node(
                s,
                ticket,
                state=state,
                exit_code=exit_code,
                message=message,
                output_variables=outputs,
                artifacts=stored_artifacts,
            )
        )
        self._ctx.signals.notify(self._task_id)
        self._log.info("run_finished", state=state.value, exit_code=exit_code)
        return RunOutcome(state, exit_code, message)

    async def _leave_cancel_pending(self, lost: str) -> RunOutcome:
        """Finish a run whose cancel could not reach its agent; keep the cancel for later.

        The run becomes result_unknown, not cancelled: until the agent confirms, nobody knows
        whether the script was killed, ended by itself, or still runs, and `cancelled` would
        tell the person reading `cuttle task show` that it was killed. The message says the
        cancel is pending; delivery (engine/cancel_delivery.py) rewrites it with what the
        agent answered.
        """
        machine, ticket, task_id = self._machine, self._ticket, self._task_id
        at = self._ctx.clock.wall_ms()
        retry_ms = int(self._ctx.settings.cancel_retry_interval * 1000)
        reason = self._cancel.reason

        def finish(session: Session) -> tuple[str, tasks.RunUpdate]:
            # One transaction: a run never ends result_unknown with its cancel forgotten.
            kept = pending_cancels.add(
                session,
                ticket=ticket,
                machine_name=machine,
                task_id=task_id,
                reason=reason,
                # Not at once: the agent was lost a moment ago.
                next_attempt_ms=at + retry_ms,
            )
            if kept is None:
                message = f"{lost}; cancel pending: it cannot be delivered, {machine} was removed"
            else:
                message = f"{lost}; cancel pending: it will be delivered when {machine} is back"
            stored = tasks.update_run_and_node(
                session,
                ticket,
                state=RunState.RESULT_UNKNOWN,
                exit_code=-1,
                message=message,
                at_ms=at,
            )
            return message, stored

        message, self.stored = await self._ctx.tx.run(finish)
        self._ctx.signals.notify(task_id)
        self._log.info("run_finished", state="result_unknown", exit_code=-1, cancel_pending=True)
        return RunOutcome(RunState.RESULT_UNKNOWN, -1, message, cancel_pending=True)


def _put_artifact(task_id: str, machine: str, name: str, content: bytes, session: Session) -> None:
    artifact_store.put(session, task_id, machine, name, content)


class _StillRunning(AgentError):
    def __init__(self, machine: str) -> None:
        super().__init__(f"{machine}: the watch ended while the script still runs")


def _duration(seconds: float) -> str:
    """Seconds as an operator reads them: "45s", "8 minutes"."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f} minutes"
