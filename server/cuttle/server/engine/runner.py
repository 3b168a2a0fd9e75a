"""The task runner: owns every task this node works on, supervised, resumable.

Each task is worked on by one asyncio task that this component owns (started, cancelled and
awaited by it, never fire-and-forget). Whatever the work raises is caught here: a database that
stayed locked or unreachable past the store's retry window resumes the task after a backoff (its
scripts keep running on the agents and are re-attached by ticket); anything else is logged with
the task id and ends the task `failed` with the reason. A full server disk ends it `failed` with
"server disk full". The final write is itself retried until the database takes it, so no task
is ever left `running` with nobody working on it; and a watchdog adopts any unfinished task
that no runner holds (e.g. one whose runner died in a way nothing here foresaw).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from sqlalchemy.orm import Session

from cuttle.protocol.backoff import Backoff
from cuttle.server.comms.registry import Connections
from cuttle.server.domain.plan import NO_WORKER, Worker
from cuttle.server.domain.task_states import (
    FINISHED_NODE_STATES,
    FINISHED_RUN_STATES,
    FINISHED_TASK_STATES,
    NodeKind,
    NodeState,
    RunState,
    TaskKind,
    TaskState,
)
from cuttle.server.encryption import Encryptor
from cuttle.server.engine import adhoc, deployment
from cuttle.server.engine.clock import SYSTEM_CLOCK, Clock
from cuttle.server.engine.completions import TicketCompletions
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.script_run import CancelSignal, RunContext, RunSettings
from cuttle.server.errors import AgentError, UnknownTicket
from cuttle.server.errors import NotFound as ServerNotFound
from cuttle.server.packages.feed import PackageFeed
from cuttle.server.store import task_log, task_queue, tasks
from cuttle.server.store.disk_reserve import DiskReserve
from cuttle.server.store.errors import Conflict, ServerDiskFull, StoreUnavailable
from cuttle.server.store.records import TaskRecord, now_ms
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunnerSettings:
    """Supervision intervals of the task runner; all configurable."""

    # How long the engine's transactions are retried while the database is locked or gone.
    store_retry_seconds: float = 300.0
    # How often the watchdog looks for unfinished tasks that nobody works on.
    watchdog_interval: float = 30.0
    # First and longest wait before a task whose runner hit an unavailable store is resumed.
    resume_delay: float = 1.0
    resume_max_delay: float = 30.0
    # This node's name in the store (its claims and heartbeat row).
    node_id: str = "node"
    # Tasks this node runs at once; beyond it they queue, oldest first. Waiting for a person
    # does not take a slot.
    task_cap: int = 5
    # A claim lasts this long unless renewed; then any node may adopt the task.
    lease_seconds: float = 30.0
    # How often the node renews its claims and looks for queued or orphaned tasks when
    # nothing woke it sooner.
    heartbeat_interval: float = 10.0
    # A deployment running longer than this is cancelled and ends timed_out (0: no limit).
    deployment_timeout: float = 0.0
    # A task queued longer than this ends cancelled, saying so (0: no limit).
    queue_wait_limit: float = 0.0
    # How long a task failed by a full disk waits for each agent to confirm its cancel.
    cancel_timeout: float = 30.0


@dataclass(frozen=True)
class _Outcome:
    """What became of one script run when its task ended early."""

    ticket: str
    state: RunState
    message: str


@dataclass
class _Held:
    task: asyncio.Task[None]
    cancel: CancelSignal = field(default_factory=CancelSignal)
    # Claimed from the queue just now: nothing of it was started anywhere before.
    fresh: bool = False


class TaskRunner:
    """Runs, resumes, supervises and cancels tasks on this node."""

    def __init__(
        self,
        tx: Transactions,
        connections: Connections,
        signals: TaskSignals,
        settings: RunSettings,
        completions: TicketCompletions | None = None,
        runner_settings: RunnerSettings | None = None,
        encryptor: Encryptor | None = None,
        reserve: DiskReserve | None = None,
    ) -> None:
        self._runner_settings = runner_settings or RunnerSettings()
        # The engine waits out a locked database; the admin API answers "busy" instead.
        self._tx = tx.with_retry(self._runner_settings.store_retry_seconds)
        self._signals = signals
        self._settings = settings
        self._connections = connections
        # Not started (as in unit tests): each completion is then awaited in place.
        self._completions = completions or TicketCompletions()
        self.encryptor = encryptor
        self.worker: Callable[[], Worker] = lambda: NO_WORKER
        self.packages: PackageFeed | None = None
        # What the engine's timed waits ask (tests replace it with virtual time).
        self.clock: Clock = SYSTEM_CLOCK
        self._reserve = reserve
        self._held: dict[str, _Held] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._queue: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._backoffs: dict[str, Backoff] = {}
        self._started_ms = now_ms()

    def _context(self) -> RunContext:
        return RunContext(
            self._tx,
            self._connections,
            self._signals,
            self._completions,
            self._settings,
            self.encryptor,
            self.worker,
            self.packages,
            self.clock,
        )

    async def start(self) -> int:
        """Resume this node's tasks, claim what waits, start the queue and the watchdog."""
        await self._hold_reserve()
        resumed = await self.resume()
        self._queue = asyncio.create_task(self._run_queue(), name="task-queue")
        self._watchdog = asyncio.create_task(self._watch(), name="task-watchdog")
        return resumed

    async def resume(self) -> int:
        """Take up this node's unfinished tasks nobody here holds, and claim others; how many."""
        settings = self._runner_settings
        node = settings.node_id
        own = await self._tx.read(lambda s: tasks.unfinished_tasks(s, owner_node=node))
        count = 0
        for task in own:
            if task.id not in self._held and task.state != TaskState.QUEUED:
                log.info("task_resumed", task_id=task.id, state=task.state.value)
                self._spawn(task.id)
                count += 1
        return count + await self._claim()

    async def _claim(self) -> int:
        """Renew this node's leases, adopt orphaned tasks and start queued ones; how many."""
        settings = self._runner_settings
        node, cap = settings.node_id, settings.task_cap
        lease_ms = int(settings.lease_seconds * 1000)

        def work(
            session: Session,
        ) -> tuple[list[str], task_queue.Claimed, list[tuple[str, str]]]:
            at = now_ms()
            owned = task_queue.heartbeat(
                session,
                node,
                now_ms=at,
                lease_ms=lease_ms,
                task_cap=cap,
                started_ms=self._started_ms,
            )
            claimed = task_queue.claim(
                session,
                node,
                now_ms=at,
                lease_ms=lease_ms,
                task_cap=cap,
                queue_limit_ms=int(settings.queue_wait_limit * 1000),
            )
            held = list(self._held)
            cancelled = tasks.cancel_requested_among(session, held) if held else []
            return owned, claimed, cancelled

        owned, claimed, cancelled = await self._tx.run(work)
        mine = set(owned) | set(claimed.started) | set(claimed.adopted)
        for task_id, held in list(self._held.items()):
            if task_id not in mine and not held.task.done():
                # Another node adopted it (this one stalled past its lease): let go; the
                # scripts go on and the new owner re-attaches to them.
                log.warning("task_lease_lost", task_id=task_id)
                held.task.cancel()
        for task_id, reason in cancelled:
            cancelling = self._held.get(task_id)
            if cancelling is not None:
                cancelling.cancel.set(reason)
        for task_id in claimed.adopted:
            log.info("task_adopted", task_id=task_id)
            self._spawn(task_id)
        for task_id in claimed.started:
            self._spawn(task_id, fresh=True)
        return len(claimed.adopted) + len(claimed.started)

    async def _run_queue(self) -> None:
        interval = self._runner_settings.heartbeat_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._claim()
            except (StoreUnavailable, ServerDiskFull) as exc:
                log.warning("task_claim_failed", error=str(exc))
            except Exception:
                log.exception("task_claim_crashed")

    def wake(self) -> None:
        """Look at the queue now (a task was stored, or one ended and freed a slot)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop working here; scripts go on on their agents and are resumed on the next start."""
        self._stopping = True
        pending = [h.task for h in self._held.values()]
        for loop in (self._watchdog, self._queue):
            if loop is not None:
                pending.append(loop)
        for work in pending:
            work.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._held.clear()
        self._watchdog = self._queue = None

    def holds(self, task_id: str) -> bool:
        """Whether a runner on this node works on the task now."""
        return task_id in self._held

    async def submit_script(
        self,
        spec: adhoc.ScriptSpec,
        *,
        started_by: str = "",
        admit: adhoc.Admit | None = None,
        created: adhoc.Created | None = None,
    ) -> TaskRecord:
        """Validate, pick the machines, store the task and start running it.

        `admit` may refuse the chosen machines and `created` records the task's audit event,
        both in the transaction that stores the task.
        """
        adhoc.validate(spec)
        stored = adhoc.task_spec(spec, self.encryptor)
        # The API's own store (no long retries): the caller hears "busy" rather than waits.
        task = await self._tx.with_retry(0).run(
            lambda s: adhoc.create(
                s, spec, stored, started_by=started_by, admit=admit, created=created
            )
        )
        log.info("task_submitted", task_id=task.id, machines=len(task.targets))
        self.wake()
        return task

    def start_task(self, task_id: str) -> None:
        """A task was queued by someone else (the deployment service): claim it soon."""
        self.wake()

    async def cancel(
        self,
        task_id: str,
        reason: str,
        *,
        admit: Callable[[Session, TaskRecord], None] | None = None,
    ) -> TaskRecord:
        """Cancel a task: answered at once; its scripts are killed, confirmed by the agents.

        `admit` sees the task first, in the same transaction: it may refuse (permissions) and
        records the audit event, so the event exists exactly when the cancel does.
        """

        def work(session: Session) -> TaskRecord:
            if admit is not None:
                admit(session, tasks.get(session, task_id))
            return tasks.request_cancel(session, task_id, reason)

        record = await self._tx.with_retry(0).run(work)
        held = self._held.get(task_id)
        if held is not None:
            held.cancel.set(reason)
        self._signals.notify(task_id)
        return record

    def _spawn(self, task_id: str, *, fresh: bool = False) -> None:
        if task_id in self._held or self._stopping:
            return
        work = asyncio.create_task(self._supervise(task_id), name=f"task-{task_id}")
        self._held[task_id] = _Held(work, fresh=fresh)

    async def _supervise(self, task_id: str) -> None:
        structlog.contextvars.bind_contextvars(task_id=task_id)
        try:
            resume_after = await self._attempt(task_id)
            while resume_after is not None:
                # A backoff between attempts, not a poll: each attempt runs the task to its end.
                await asyncio.sleep(resume_after)
                resume_after = await self._attempt(task_id)
        finally:
            self._held.pop(task_id, None)
            self._backoffs.pop(task_id, None)
            # A slot is free, or a deployment behind this one may go now.
            self.wake()

    async def _attempt(self, task_id: str) -> float | None:
        """Work on the task once; the delay before resuming it, or None when it is done."""
        delay: float | None = None
        try:
            await self._execute(task_id)
        except* StoreUnavailable as group:
            # Nothing is lost: what is stored stays, the scripts run on; resume from the store.
            backoff = self._backoffs.setdefault(
                task_id,
                Backoff(
                    initial=self._runner_settings.resume_delay,
                    maximum=self._runner_settings.resume_max_delay,
                ),
            )
            delay = backoff.next_delay()
            log.warning(
                "task_runner_store_unavailable",
                error=str(group.exceptions[0]),
                resume_in=round(delay, 2),
            )
        except* ServerDiskFull as group:
            reason = f"server disk full: {group.exceptions[0]}"
            log.error("task_failed_disk_full", error=str(group.exceptions[0]))
            if self._reserve is not None:
                # Room for the writes that end the task: without it they wait for an operator.
                await asyncio.to_thread(self._reserve.release)
            # The task is over, so its scripts are stopped: output nobody can store would run
            # on unseen, and a script left behind keeps its machine's isolation mutex.
            outcomes = await self._cancel_scripts(task_id, reason)
            await self._end(task_id, reason, outcomes)
        except* Exception as group:
            error = group.exceptions[0]
            log.error("task_runner_crashed", exc_info=error)
            await self._end(task_id, f"internal error ({type(error).__name__}: {error})")
        return delay

    async def _execute(self, task_id: str) -> None:
        task = await self._tx.read(lambda s: tasks.get(s, task_id))
        if task.state in FINISHED_TASK_STATES:
            return
        held = self._held[task_id]
        # Only a task this runner claimed from the queue, on its first attempt, surely has
        # nothing running on any agent yet.
        resumed = not held.fresh and task.state != TaskState.QUEUED
        held.fresh = False
        if task.state == TaskState.QUEUED:
            try:
                task = await self._tx.run(
                    lambda s: tasks.set_state(
                        s, task_id, TaskState.RUNNING, expected=(TaskState.QUEUED,)
                    )
                )
            except Conflict:
                return  # cancelled while queued: nothing was sent anywhere
            self._signals.notify(task_id)
        if task.cancel_requested:
            held.cancel.set(task.cancel_reason)
        executor = _EXECUTORS.get(task.kind)
        if executor is None:
            # Only a task written by a newer server node can get here: it ends failed, saying so.
            raise RuntimeError(f"this server version cannot run {task.kind.value} tasks")
        limit = self._runner_settings.deployment_timeout
        timer: asyncio.TimerHandle | None = None
        if task.kind in (TaskKind.DEPLOYMENT, TaskKind.RUNBOOK) and limit > 0:
            # Measured from the task's stored start, so a resumed task keeps its clock.
            left = limit - (now_ms() - (task.started_ms or now_ms())) / 1000

            def expire() -> None:
                held.cancel.set(
                    f"the deployment's time limit of {limit:g}s ran out", timed_out=True
                )

            timer = asyncio.get_running_loop().call_later(max(left, 0.0), expire)
        try:
            state = await executor(self._context(), task, held.cancel, resumed=resumed)
        finally:
            if timer is not None:
                timer.cancel()
        if held.cancel.timed_out and state == TaskState.CANCELLED:
            state = TaskState.TIMED_OUT
        reason = held.cancel.reason if state in (TaskState.CANCELLED, TaskState.TIMED_OUT) else ""
        await self._tx.run(partial(self._close, task_id, state, reason))
        self._signals.notify(task_id)
        log.info("task_finished", state=state.value)

    def _close(
        self,
        task_id: str,
        state: TaskState,
        reason: str,
        session: Session,
        outcomes: Sequence[_Outcome] = (),
        *,
        early: bool = False,
    ) -> None:
        """End the task; its log says first what the size limit kept out of it."""
        for outcome in outcomes:
            if tasks.get_run(session, outcome.ticket).state not in FINISHED_RUN_STATES:
                tasks.update_run(
                    session,
                    outcome.ticket,
                    state=outcome.state,
                    exit_code=-1,
                    message=outcome.message,
                )
        if early:
            # Nothing will walk the rest of the tree: what was still open ended with the task.
            for node in tasks.get(session, task_id).nodes:
                if node.kind != NodeKind.MACHINE and node.state not in FINISHED_NODE_STATES:
                    tasks.set_node_state(session, node.id, NodeState.FAILED, reason=reason)
        task_log.note_dropped(session, task_id, self._settings.log_limits.max_bytes)
        tasks.set_state(session, task_id, state, reason=reason)

    async def _cancel_scripts(self, task_id: str, reason: str) -> list[_Outcome]:
        """Ask the agents to kill the task's unfinished scripts; what each one answered."""
        try:
            task = await self._tx.read(lambda s: tasks.get(s, task_id))
        except (StoreUnavailable, ServerDiskFull):
            return []
        runs = [
            run
            for node in task.machine_nodes
            if (run := node.latest_run) is not None and run.state not in FINISHED_RUN_STATES
        ]
        return list(
            await asyncio.gather(
                *(self._cancel_one(r.machine_name, r.ticket, reason) for r in runs)
            )
        )

    async def _cancel_one(self, machine: str, ticket: str, reason: str) -> _Outcome:
        try:
            client = await self._connections.client(machine)
            async with asyncio.timeout(self._runner_settings.cancel_timeout):
                await client.cancel_script(ticket, reason)
        except UnknownTicket:
            return _Outcome(ticket, RunState.CANCELLED, f"{reason}; {machine} no longer had it")
        except (AgentError, ServerNotFound, TimeoutError) as exc:
            # Nothing is stored while the disk is full, so the cancel cannot be kept for later.
            log.warning("disk_full_cancel_failed", machine=machine, ticket=ticket, error=str(exc))
            return _Outcome(
                ticket,
                RunState.RESULT_UNKNOWN,
                f"result unknown: {reason}; the cancel did not reach {machine} ({exc}), "
                "the script may still run",
            )
        return _Outcome(ticket, RunState.CANCELLED, f"cancelled: {reason}")

    async def _end(self, task_id: str, reason: str, outcomes: Sequence[_Outcome] = ()) -> None:
        """End a task failed with the reason; the write is retried until the store takes it."""
        backoff = Backoff(initial=0.2, maximum=self._runner_settings.resume_max_delay)
        while True:
            try:
                current = await self._tx.read(lambda s: tasks.get(s, task_id))
                if current.state in FINISHED_TASK_STATES:
                    return
                await self._tx.run(
                    partial(
                        self._close,
                        task_id,
                        TaskState.FAILED,
                        reason,
                        outcomes=outcomes,
                        early=True,
                    )
                )
                self._signals.notify(task_id)
                log.info("task_finished", state="failed", reason=reason)
                return
            except (StoreUnavailable, ServerDiskFull) as exc:
                # A full disk frees up, a lock is released: the task's end must land.
                delay = backoff.next_delay()
                log.warning("task_end_retrying", error=str(exc), delay=round(delay, 2))
                await asyncio.sleep(delay)

    async def _hold_reserve(self) -> None:
        if self._reserve is not None:
            await asyncio.to_thread(self._reserve.ensure)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._runner_settings.watchdog_interval)
            # Space came back after a full disk: keep room for the next one.
            await self._hold_reserve()
            with contextlib.suppress(StoreUnavailable, ServerDiskFull):
                try:
                    adopted = await self.resume()
                except (StoreUnavailable, ServerDiskFull):
                    raise
                except Exception:
                    log.exception("task_watchdog_failed")
                    continue
                if adopted:
                    log.warning("task_watchdog_adopted", tasks=adopted)


Executor = Callable[..., Coroutine[Any, Any, TaskState]]
_EXECUTORS: dict[TaskKind, Executor] = {
    TaskKind.SCRIPT: adhoc.execute,
    TaskKind.DEPLOYMENT: deployment.execute,
    TaskKind.RUNBOOK: deployment.execute,
}
