"""Deliver the cancels that were left pending while their agents were away.

When a task is cancelled and its agent cannot be reached for agent_lost_after, the script
engine finishes the target and keeps the cancel in the store (store/pending_cancels.py). This
component tries each kept cancel again, first after the retry interval, then after twice as long
each time up to a maximum: it asks the agent to kill the script's tree (which returns once the
tree is dead), stores the output the script wrote since the server stopped following it, tells
the agent to clean the workspace, and forgets the record. The records are in the
store, not in memory: they survive a restart, and any node may deliver them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import structlog
from sqlalchemy.orm import Session
from structlog.typing import FilteringBoundLogger

from cuttle.server.comms.client import TentacleClient
from cuttle.server.comms.registry import Connections
from cuttle.server.domain.scripts import LogRun, ScriptStatus
from cuttle.server.engine.clock import SYSTEM_CLOCK, Clock
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.errors import AgentError, NotFound, UnknownTicket
from cuttle.server.store import errors as store_errors
from cuttle.server.store import pending_cancels, task_log, tasks
from cuttle.server.store.pending_cancels import PendingCancelRecord
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

# A due record of a disconnected polling machine is looked at again after the retry interval;
# reading more than can be started at once keeps such records from crowding out the others.
_READ_AHEAD = 1000
_MIN_WAIT = 0.05


@dataclass(frozen=True)
class CancelDeliverySettings:
    """When pending cancels are tried again; all configurable."""

    retry_interval: float = 15.0
    max_retry_interval: float = 300.0
    # Deliveries in flight on one node at once (each may wait on a slow agent).
    max_in_flight: int = 32
    # The output a script wrote while its cancel was pending obeys the same bounds.
    log_limits: task_log.LogLimits = task_log.LogLimits()


def retry_delay_ms(settings: CancelDeliverySettings, attempt: int) -> int:
    """Milliseconds to wait after the given attempt (1 = the first) before the next one."""
    seconds = settings.retry_interval * (2.0 ** min(max(attempt - 1, 0), 32))
    return int(min(seconds, settings.max_retry_interval) * 1000)


class CancelDelivery:
    """Owns the loop that delivers pending cancels; start() and stop() with the server."""

    def __init__(
        self,
        tx: Transactions,
        connections: Connections,
        signals: TaskSignals,
        settings: CancelDeliverySettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._tx = tx
        self._clock = clock
        self._connections = connections
        self._signals = signals
        self._settings = settings
        self._in_flight: set[str] = set()
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start delivering what the store holds (kept across restarts); returns how many."""
        pending = await self._tx.read(pending_cancels.count)
        if pending:
            log.info("pending_cancels_loaded", count=pending)
        self._loop = asyncio.create_task(self._run(), name="cancel-delivery")
        return pending

    async def stop(self) -> None:
        """Stop trying; what is not delivered stays in the store for the next start."""
        if self._loop is None:
            return
        self._loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop
        self._loop = None

    async def deliver_due(self) -> float:
        """Try every record due now and wait for those attempts; seconds until the next is due."""
        async with asyncio.TaskGroup() as group:
            wait = await self._round(group)
        return wait

    async def _run(self) -> None:
        # The group owns every attempt: stopping the loop cancels and awaits them too.
        async with asyncio.TaskGroup() as group:
            while True:
                try:
                    wait = await self._round(group)
                except Exception:
                    log.exception("pending_cancel_round_failed")
                    wait = self._settings.retry_interval
                await self._clock.sleep(wait)

    async def _round(self, group: asyncio.TaskGroup) -> float:
        now = self._clock.wall_ms()
        busy = frozenset(self._in_flight)
        due = await self._tx.read(
            lambda s: pending_cancels.due(s, at_ms=now, limit=_READ_AHEAD, exclude=busy)
        )
        # A polling machine that is not connected cannot be asked anything: no attempt is
        # counted, the record is looked at again next round (checking costs nothing).
        waiting = {r.ticket for r in due if self._connections.connected(r.machine_name) is False}
        ready = [r for r in due if r.ticket not in waiting]
        room = max(0, self._settings.max_in_flight - len(busy))
        # Those beyond the room wait for a later round, not for a busy loop.
        waiting.update(r.ticket for r in ready[room:])
        ready = ready[:room]
        if ready:
            claimed = await self._tx.run(lambda s: self._claim(s, ready, now))
            for record in claimed:
                self._in_flight.add(record.ticket)
                group.create_task(self._attempt(record), name=f"cancel-{record.ticket}")
        skip = self._in_flight | waiting
        next_due = await self._tx.read(lambda s: pending_cancels.next_due_ms(s, exclude=skip))
        # Capped at the interval: records added by the script engine or other nodes are seen.
        wait = self._settings.retry_interval
        if next_due is not None:
            wait = min(wait, (next_due - self._clock.wall_ms()) / 1000)
        return max(_MIN_WAIT, wait)

    def _claim(
        self, session: Session, ready: Sequence[PendingCancelRecord], now: int
    ) -> list[PendingCancelRecord]:
        claimed = []
        for record in ready:
            # The next attempt is scheduled before this one starts: a node that dies mid-way
            # leaves the record due again after the backoff, not stuck.
            mine = pending_cancels.claim(
                session,
                record.ticket,
                expected_next_ms=record.next_attempt_ms,
                next_attempt_ms=now + retry_delay_ms(self._settings, record.attempts + 1),
                at_ms=now,
            )
            if mine is not None:
                claimed.append(mine)
        return claimed

    async def _attempt(self, record: PendingCancelRecord) -> None:
        try:
            await self._deliver(record)
        except Exception:
            # One record's surprise must not end the loop that serves all the others.
            log.exception(
                "pending_cancel_attempt_crashed", machine=record.machine_name, ticket=record.ticket
            )
        finally:
            self._in_flight.discard(record.ticket)

    async def _deliver(self, record: PendingCancelRecord) -> None:
        bound = log.bind(machine=record.machine_name, ticket=record.ticket, task_id=record.task_id)
        try:
            client = await self._connections.client(record.machine_name)
        except NotFound as exc:
            # Not a reason to drop it: the store decides when a machine is gone (removing it
            # removes its records), and this node may not have heard of a new machine yet.
            await self._retry_later(record, str(exc), bound)
            return
        try:
            status = await client.cancel_script(record.ticket, record.reason or "cancelled")
        except UnknownTicket as exc:
            # The agent no longer knows the ticket (reinstalled, or it was completed): nothing
            # of the script is left there to kill.
            message = (
                f"the cancel could not be delivered: {record.machine_name} no longer knew the "
                "script when it was back (its Tentacle lost it, e.g. reinstalled)"
            )
            if await self._forget(record, message):
                bound.warning("pending_cancel_dropped", reason="unknown ticket", error=str(exc))
            return
        except AgentError as exc:
            await self._retry_later(record, str(exc), bound)
            return
        if not status.finished:
            await self._retry_later(
                record, f"the agent reported {status.state} after cancel", bound
            )
            return
        try:
            # Before the agent may delete the journal: what the script wrote while the server
            # was not following it (and the agent's note on the kill) belongs in the task log.
            stored = await self._store_rest(client, record)
        except AgentError as exc:
            await self._retry_later(record, f"could not fetch the script's output: {exc}", bound)
            return
        try:
            await client.complete_script(record.ticket)
        except AgentError as exc:
            # The tree is dead, which is what mattered; the agent's cleaner removes the rest.
            bound.warning("complete_script_failed", error=str(exc))
        if await self._forget(record, _delivered_message(record.machine_name, status, stored)):
            bound.info(
                "pending_cancel_delivered",
                state=status.state,
                exit_code=status.exit_code,
                attempts=record.attempts,
                lines_stored=stored,
            )

    async def _store_rest(self, client: TentacleClient, record: PendingCancelRecord) -> int:
        """Store the journal lines after the last one the task log has; returns how many."""
        task_id = record.task_id
        try:
            target = await self._tx.read(lambda s: tasks.get_run(s, record.ticket))
        except store_errors.NotFound:
            return 0  # the task's history is gone: there is no log to add to
        after, stored = target.last_sequence, 0
        while True:
            status = await client.get_status(record.ticket, after)
            if not status.runs:
                return stored
            # Masked by the agent, which has the sensitive values; the server held them in
            # memory only while it followed the script, so it cannot mask a second time here.
            runs = [
                LogRun(r.sequence, r.time_ms, r.source, r.level, r.text, r.count)
                for r in status.runs
            ]
            # append_runs skips what is stored already: a second attempt adds nothing twice.
            limits = self._settings.log_limits
            stored += await self._tx.run(partial(_append, record.ticket, runs, limits))
            self._signals.notify(task_id)
            after = status.runs[-1].last_sequence
            if not status.more_lines:
                return stored

    async def _retry_later(
        self, record: PendingCancelRecord, error: str, bound: FilteringBoundLogger
    ) -> None:
        # The claim already scheduled the next attempt; keep it and say what went wrong.
        await self._tx.run(
            lambda s: pending_cancels.postpone(
                s, record.ticket, next_attempt_ms=record.next_attempt_ms, error=error
            )
        )
        bound.info(
            "pending_cancel_retrying",
            error=error,
            attempts=record.attempts,
            delay=round((record.next_attempt_ms - self._clock.wall_ms()) / 1000, 1),
        )

    async def _forget(self, record: PendingCancelRecord, message: str) -> bool:
        """Remove the record and tell the target what came of it; False if another node did."""
        done = await self._tx.run(lambda s: _remove_and_tell(s, record, message))
        if done:
            self._signals.notify(record.task_id)
        return done


def _remove_and_tell(session: Session, record: PendingCancelRecord, message: str) -> bool:
    if pending_cancels.remove(session, record.ticket) is None:
        return False
    try:
        run = tasks.get_run(session, record.ticket)
    except store_errors.NotFound:
        return True  # the task's history is gone; the cancel mattered to the agent only
    # The state stays (a finished run never changes state); the message tells the outcome.
    tasks.update_run(session, record.ticket, state=run.state, message=message)
    return True


def _append(
    ticket: str, runs: Sequence[LogRun], limits: task_log.LogLimits, session: Session
) -> int:
    return task_log.append_runs(session, ticket, runs, limits)


def _delivered_message(machine: str, status: ScriptStatus, lines: int) -> str:
    if status.state == "cancelled":
        outcome = "the script was killed"
    else:
        outcome = f"the script had already ended ({status.state}, exit code {status.exit_code})"
    more = f"; {lines} more line(s) of its output were added to the log" if lines else ""
    return f"the cancel was delivered when {machine} was back: {outcome}{more}"
