"""The Tentacle's script execution engine: tickets in, journaled output and results out.

``ScriptManager`` is the one entry point the gRPC servicer uses. Each ticket lives in
``home/tickets/<ticket>/`` (see tickets.py); its run is supervised by a ``TicketRun``
(runner.py). Everything the server can ask about survives a Tentacle restart.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from cuttle.tentacle.execution import proctree
from cuttle.tentacle.execution.errors import ExecutionError, InvalidScript, UnknownTicket
from cuttle.tentacle.execution.helpers import check_files, remove_variables_file
from cuttle.tentacle.execution.isolation import MutexMap
from cuttle.tentacle.execution.journal import Journal
from cuttle.tentacle.execution.model import (
    TERMINAL_STATES,
    Artifact,
    LogLevel,
    LogLine,
    LogSource,
    ScriptFile,
    ScriptSnapshot,
    ScriptState,
    StartCommand,
    Syntax,
    Variable,
    check_relative_name,
    check_ticket,
)
from cuttle.tentacle.execution.proctree import become_subreaper
from cuttle.tentacle.execution.runner import RunSettings, TicketRun
from cuttle.tentacle.execution.tickets import TicketPaths, TicketRecord, load_record, save_record

__all__ = [
    "Artifact",
    "ExecutionError",
    "InvalidScript",
    "LogLevel",
    "LogLine",
    "LogSource",
    "ScriptFile",
    "ScriptManager",
    "ScriptSnapshot",
    "ScriptState",
    "StartCommand",
    "Syntax",
    "UnknownTicket",
    "Variable",
    "become_subreaper",
]

log = structlog.get_logger()

RESTART_REASON = "Tentacle restarted while the script was running; its result is unknown"


def _has_news(run: TicketRun, after: int) -> bool:
    return run.deleted or run.finished or run.journal.last_sequence > after


class ScriptManager:
    """Starts scripts under tickets and answers for them, across restarts."""

    def __init__(
        self,
        home: Path,
        *,
        max_lines_per_reply: int = 2000,
        cancel_grace: float = 3.0,
        python_executable: str = sys.executable,
        eof_grace: float = 2.0,
        use_cgroups: bool = True,
    ) -> None:
        # Scripts run with their workspace as cwd, so every path handed to them is absolute.
        home = home.resolve()
        self._home = home
        self._max_lines = max_lines_per_reply
        self._runs: dict[str, TicketRun] = {}
        self._creating: dict[str, asyncio.Event] = {}
        self._closed = False
        self._cgroups_wanted = use_cgroups
        self._settings = RunSettings(
            python=python_executable,
            cancel_grace=cancel_grace,
            eof_grace=eof_grace,
            mutexes=MutexMap(home / "mutex"),
            cgroups=None,
        )
        self._tickets_dir = home / "tickets"
        self._tickets_dir.mkdir(parents=True, exist_ok=True)

    # -- lifecycle ---------------------------------------------------------------------------

    async def recover(self) -> None:
        """Load every ticket on disk; scripts we no longer supervise become RESULT_UNKNOWN."""
        if self._cgroups_wanted:
            # One cgroup subtree per home, so two Tentacles on a host never share ticket cgroups.
            digest = hashlib.sha256(str(self._home.resolve()).encode()).hexdigest()[:12]
            cgroups = await asyncio.to_thread(proctree.CgroupRoot.detect, f"cuttle-{digest}")
            self._settings = RunSettings(
                python=self._settings.python,
                cancel_grace=self._settings.cancel_grace,
                eof_grace=self._settings.eof_grace,
                mutexes=self._settings.mutexes,
                cgroups=cgroups,
            )
        for entry in sorted(self._tickets_dir.iterdir()):
            if entry.name in self._runs or not entry.is_dir():
                continue
            try:
                check_ticket(entry.name)
                await self._load(entry.name)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # A half-deleted or corrupt ticket must not stop the Tentacle from starting.
                log.warning("ticket_unreadable", ticket=entry.name, error=str(exc))

    async def _load(self, ticket: str) -> TicketRun:
        paths = TicketPaths.of(self._home, ticket)
        record = await asyncio.to_thread(load_record, paths)
        journal = await asyncio.to_thread(Journal, paths.journal)
        run = TicketRun(paths=paths, record=record, journal=journal)
        run.started.set()
        self._runs[ticket] = run
        if record.state not in TERMINAL_STATES:
            await self._orphaned(run)
        return run

    async def _orphaned(self, run: TicketRun) -> None:
        """A ticket left PENDING/RUNNING by a previous Tentacle: kill what is left, say so."""
        record = run.record
        alive = record.pid is not None and proctree.is_alive(record.pid, record.pid_start_time)
        cgroup = Path(record.cgroup) if record.cgroup else None
        killed = await asyncio.to_thread(
            proctree.kill_tree,
            record.ticket,
            record.pid if alive else None,
            cgroup,
            self._settings.cancel_grace,
        )
        await asyncio.to_thread(proctree.reap_zombies, killed)
        proctree.remove_cgroup(cgroup)
        log.warning("script_result_lost", ticket=record.ticket, was_alive=alive)
        await run.say(RESTART_REASON, LogLevel.WARNING)
        await asyncio.to_thread(remove_variables_file, run.paths.workspace)
        await run.set_state(ScriptState.RESULT_UNKNOWN, RESTART_REASON)

    async def close(self) -> None:
        """Stop accepting work and stop supervising; running scripts are not killed."""
        self._closed = True
        tasks = [run.task for run in self._runs.values() if run.task and not run.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for run in self._runs.values():
            run.journal.close()
        if self._settings.cgroups is not None:
            # Only succeeds when no ticket cgroup is left; a live script keeps it.
            proctree.remove_cgroup(self._settings.cgroups.path)

    # -- the contract ------------------------------------------------------------------------

    async def start(self, cmd: StartCommand) -> ScriptSnapshot:
        """Start a script under its ticket; a known ticket returns its snapshot, starts nothing."""
        if self._closed:
            raise ExecutionError("the script manager is closed")
        ticket = check_ticket(cmd.ticket)
        creating = self._creating.get(ticket)
        if creating is not None:
            await creating.wait()
        run = self._runs.get(ticket)
        if run is None and TicketPaths.of(self._home, ticket).state.exists():
            run = await self._load(ticket)
        if run is not None:
            await run.started.wait()
            return await self.status(ticket)
        check_files(cmd)
        paths = TicketPaths.of(self._home, ticket)
        record = TicketRecord(ticket=ticket, state=ScriptState.PENDING)
        # Claim the ticket before the first await: a concurrent start must find it taken.
        claimed = self._creating[ticket] = asyncio.Event()
        try:
            journal = await asyncio.to_thread(self._create_ticket, paths, record)
            run = TicketRun(paths=paths, record=record, journal=journal, command=cmd)
            self._runs[ticket] = run
            run.task = asyncio.create_task(run.run(self._settings), name=f"script-{ticket}")
        finally:
            del self._creating[ticket]
            claimed.set()
        await run.started.wait()
        return await self.status(ticket)

    @staticmethod
    def _create_ticket(paths: TicketPaths, record: TicketRecord) -> Journal:
        if paths.root.exists():
            # Left by a crash between mkdir and the first state write: nothing ran yet.
            shutil.rmtree(paths.root)
        paths.root.mkdir(mode=0o700)
        paths.workspace.mkdir(mode=0o700)
        save_record(paths, record)
        return Journal(paths.journal)

    def _get(self, ticket: str) -> TicketRun:
        run = self._runs.get(ticket)
        if run is None or run.deleted:
            raise UnknownTicket(f"unknown ticket {ticket!r}")
        return run

    async def status(
        self, ticket: str, after_sequence: int = 0, max_lines: int = 0
    ) -> ScriptSnapshot:
        """The ticket's state plus the journaled lines after ``after_sequence``."""
        creating = self._creating.get(ticket)
        if creating is not None:
            await creating.wait()
        run = self._get(ticket)
        # State before lines: a terminal state read first guarantees the lines are complete.
        record = run.record
        state, exit_code = record.state, record.exit_code
        limit = max_lines if max_lines > 0 else self._max_lines
        lines, more = await asyncio.to_thread(run.journal.read_after, after_sequence, limit)
        last = max(run.journal.last_sequence, lines[-1].sequence if lines else 0)
        return ScriptSnapshot(
            ticket=ticket,
            state=state,
            exit_code=exit_code,
            lines=tuple(lines),
            last_sequence=last,
            more_lines=more,
            output_variables=tuple(record.output_variables.values()),
            artifacts=tuple(record.artifacts),
            failure_message=record.failure_message,
            state_reason=record.state_reason,
        )

    async def watch(self, ticket: str, after_sequence: int = 0) -> AsyncIterator[ScriptSnapshot]:
        """Yield batches of new lines as they are journaled, then the final snapshot, then stop."""
        run = self._get(ticket)
        after = after_sequence
        while True:
            async with run.changed:
                await run.changed.wait_for(functools.partial(_has_news, run, after))
            snapshot = await self.status(ticket, after)
            if snapshot.lines:
                after = snapshot.lines[-1].sequence
            if snapshot.state in TERMINAL_STATES and not snapshot.more_lines:
                yield snapshot
                return
            if snapshot.lines:
                yield snapshot

    async def cancel(self, ticket: str, reason: str) -> ScriptSnapshot:
        """Kill the ticket's whole process tree; return once it is dead (state CANCELLED)."""
        run = self._get(ticket)
        if not run.finished:
            if not run.stop.is_set():
                run.stop_reason = reason or "Cancelled"
                run.stop.set()
                log.info("script_cancel_requested", ticket=ticket)
            task = run.task
            if task is not None:
                if run.waiting_for_mutex:
                    task.cancel()
                await asyncio.wait({task})
        return await self.status(ticket)

    async def complete(self, ticket: str) -> ScriptSnapshot:
        """The server has everything: delete the ticket's workspace and journal."""
        run = self._get(ticket)
        if not run.finished:
            await self.cancel(ticket, "Completed by the server while still running")
        snapshot = await self.status(ticket, after_sequence=run.journal.last_sequence)
        await self._forget(run)
        log.info("script_completed", ticket=ticket)
        return snapshot

    async def _forget(self, run: TicketRun) -> None:
        task = run.task
        if task is not None and not task.done():
            # A terminal state is readable a moment before the run has persisted it: deleting
            # under that write would leave the directory, and a state.json that a restarted
            # Tentacle would load again, behind.
            await asyncio.wait({task})
        run.deleted = True
        self._runs.pop(run.ticket, None)
        async with run.changed:
            run.changed.notify_all()
        run.journal.close()
        await asyncio.to_thread(shutil.rmtree, run.paths.root, True)

    def workspace_file(self, ticket: str, relative_path: str) -> Path:
        """Resolve a path inside the ticket's workspace (for downloads); refuse escapes."""
        run = self._get(ticket)
        root = run.paths.workspace.resolve()
        target = (root / check_relative_name(relative_path)).resolve()
        if not target.is_relative_to(root):
            raise InvalidScript(f"path {relative_path!r} escapes the workspace")
        return target

    async def clean_workspaces(self, older_than: float) -> int:
        """Remove finished tickets that ended more than ``older_than`` seconds ago."""
        cutoff = time.time() - older_than
        stale = [
            run
            for run in list(self._runs.values())
            if run.finished and (run.record.finished_at or run.record.created_at) <= cutoff
        ]
        for run in stale:
            await self._forget(run)
        if stale:
            log.info("workspaces_cleaned", count=len(stale))
        return len(stale)
