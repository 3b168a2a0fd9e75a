"""The Tentacle's script execution engine: tickets in, journaled output and results out.

``ScriptManager`` is the one entry point the gRPC servicer uses. Each ticket lives in
``home/tickets/<ticket>/`` (see tickets.py); its run is supervised by a ``TicketRun``
(runner.py). Everything the server can ask about survives a Tentacle restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import structlog

from cuttle.tentacle.execution import proctree
from cuttle.tentacle.execution.errors import ExecutionError, InvalidScript, UnknownTicket
from cuttle.tentacle.execution.helpers import HelperFiles, check_files, remove_variables_file
from cuttle.tentacle.execution.isolation import MutexMap
from cuttle.tentacle.execution.journal import Journal
from cuttle.tentacle.execution.model import (
    TERMINAL_STATES,
    Artifact,
    LogLevel,
    LogRun,
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
from cuttle.tentacle.execution.record_sync import RecordSyncer
from cuttle.tentacle.execution.runner import RunSettings, Started, TicketRun, launch
from cuttle.tentacle.execution.script_user import ScriptUser, open_beneath, workspaces_root
from cuttle.tentacle.execution.tickets import (
    TicketPaths,
    TicketRecord,
    claim,
    load_record,
    remove_ticket,
    sync_claim,
)
from cuttle.tentacle.packages.deploy import DeploySettings

__all__ = [
    "Artifact",
    "ExecutionError",
    "InvalidScript",
    "LogLevel",
    "LogRun",
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
# A completed ticket's directory is renamed to this prefix before it is deleted, so a crash in
# the middle of the deletion cannot leave a half ticket that a restart would load again.
_DELETING = ".deleting-"


def _delete_all(paths: list[Path]) -> None:
    for path in paths:
        remove_ticket(path)


def _tidy_workspaces(workspaces: Path) -> None:
    """Remove a workspaces directory that holds no ticket (only the shared helpers)."""
    try:
        if any(entry.name != "helpers" for entry in workspaces.iterdir()):
            return
        shutil.rmtree(workspaces / "helpers", ignore_errors=True)
        workspaces.rmdir()
    except OSError:
        pass  # a ticket arrived meanwhile, or it is gone already: nothing to tidy


def _has_news(run: TicketRun, after: int) -> bool:
    return run.deleted or run.finished or run.journal.last_sequence > after


class ScriptManager:
    """Starts scripts under tickets and answers for them, across restarts."""

    def __init__(
        self,
        home: Path,
        *,
        max_lines_per_reply: int = 100_000,
        cancel_grace: float = 3.0,
        python_executable: str = sys.executable,
        eof_grace: float = 2.0,
        use_cgroups: bool = True,
        running_record_delay: float = 0.5,
        record_sync_delay: float = 0.2,
        script_user: ScriptUser | None = None,
        workspaces: Path | None = None,
        packages: DeploySettings | None = None,
    ) -> None:
        # Scripts run with their workspace as cwd, so every path handed to them is absolute.
        home = home.resolve()
        self._home = home
        # Lines travel in runs, so a big reply costs little per line; the journal's byte bound
        # (max_bytes) usually ends a reply long before this many lines.
        self._max_lines = max_lines_per_reply
        self._runs: dict[str, TicketRun] = {}
        self._creating: dict[str, asyncio.Event] = {}
        self._closed = False
        self._cgroups_wanted = use_cgroups
        # Scripts run as another user get their workspaces (and the shared helpers they read)
        # outside the home, which they cannot enter (see script_user.py).
        self._workspaces: Path | None = None
        helpers = HelperFiles(home / "helpers")
        if script_user is not None:
            self._workspaces = workspaces or workspaces_root(home, "")
            # /var/lib/cuttle-tentacle-workspaces too, when it is made here: not listable.
            self._workspaces.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
            self._workspaces.mkdir(mode=0o711, exist_ok=True)
            # Traversable, not listable: a script reaches its own workspace, never lists others.
            os.chmod(self._workspaces, 0o711)  # noqa: S103
            helpers = HelperFiles(self._workspaces / "helpers", shared=True)
        self._settings = RunSettings(
            python=python_executable,
            cancel_grace=cancel_grace,
            eof_grace=eof_grace,
            mutexes=MutexMap(home / "mutex"),
            cgroups=None,
            helpers=helpers,
            running_record_delay=running_record_delay,
            user=script_user,
            packages=packages,
        )
        self._syncer = RecordSyncer(record_sync_delay)
        self._tickets_dir = home / "tickets"
        self._tickets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Completed tickets are renamed away at once and deleted by one task off the request
        # path (see _forget); recover() starts it, close() stops it.
        self._doomed: asyncio.Queue[Path] = asyncio.Queue()
        self._deleter: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def recover(self) -> None:
        """Load every ticket on disk; scripts we no longer supervise become RESULT_UNKNOWN."""
        if self._cgroups_wanted:
            # One cgroup subtree per home, so two Tentacles on a host never share ticket cgroups.
            digest = hashlib.sha256(str(self._home.resolve()).encode()).hexdigest()[:12]
            cgroups = await asyncio.to_thread(proctree.CgroupRoot.detect, f"cuttle-{digest}")
            self._settings = dataclasses.replace(self._settings, cgroups=cgroups)
        if self._settings.user is not None and self._settings.cgroups is None:
            # Process group and ticket marker still find the tree, but a script that leaves
            # both (setsid env -i) can no longer be found by a cancel.
            log.warning(
                "scripts_not_confined",
                user=self._settings.user.name,
                reason="no writable cgroup v2 (systemd: Delegate=yes)",
            )
        for entry in sorted(self._tickets_dir.iterdir()):
            if entry.name in self._runs or not entry.is_dir():
                continue
            if entry.name.startswith(_DELETING):
                await asyncio.to_thread(remove_ticket, entry)
                continue
            try:
                check_ticket(entry.name)
                await self._load(entry.name)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # A half-deleted or corrupt ticket must not stop the Tentacle from starting.
                log.warning("ticket_unreadable", ticket=entry.name, error=str(exc))
        if self._deleter is None:
            self._deleter = asyncio.create_task(self._delete_doomed(), name="ticket-deleter")

    async def _delete_doomed(self) -> None:
        """Delete the renamed directories of completed tickets, all that wait in one go."""
        while True:
            doomed = [await self._doomed.get()]
            while not self._doomed.empty():
                doomed.append(self._doomed.get_nowait())
            # One thread hop for a batch: completions come in batches (CompleteScripts).
            await asyncio.to_thread(_delete_all, doomed)

    async def _load(self, ticket: str) -> TicketRun:
        paths = await asyncio.to_thread(TicketPaths.found, self._home, ticket)
        on_disk = True
        try:
            record = await asyncio.to_thread(load_record, paths)
        except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
            # The directory is the durable claim; its record may be missing (a crash before the
            # first write) or lost with a power cut (records of live scripts are not fsynced).
            # The script may have run: never start it again, report the result as unknown.
            log.warning("ticket_record_lost", ticket=ticket, error=str(exc))
            record = TicketRecord(ticket=ticket, state=ScriptState.PENDING)
            on_disk = not isinstance(exc, FileNotFoundError)
        journal = await asyncio.to_thread(Journal, paths.journal)
        run = TicketRun(
            paths=paths, record=record, journal=journal, on_disk=on_disk, syncer=self._syncer
        )
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
        if cgroup is None and self._settings.cgroups is not None:
            # A record lost or written before the start still has its cgroup at the usual place.
            cgroup = self._settings.cgroups.path / record.ticket
        killed = await asyncio.to_thread(
            proctree.kill_tree,
            record.ticket,
            record.pid if alive else None,
            cgroup,
            self._settings.cancel_grace,
        )
        await asyncio.to_thread(proctree.reap_zombies, killed)
        proctree.remove_cgroup(cgroup)
        # Tentacles before the variables file moved beside the workspace kept it (secrets and
        # all) inside; set_state removes only the new one.
        remove_variables_file(run.paths.workspace / ".cuttle" / "variables.json")
        log.warning("script_result_lost", ticket=record.ticket, was_alive=alive)
        await run.say(RESTART_REASON, LogLevel.WARNING)
        await run.set_state(ScriptState.RESULT_UNKNOWN, RESTART_REASON)  # removes the variables

    async def close(self) -> None:
        """Stop accepting work and stop supervising; running scripts are not killed."""
        self._closed = True
        tasks = [run.task for run in self._runs.values() if run.task and not run.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for run in self._runs.values():
            # Scripts go on running: the next Tentacle finds them by the pid in their record.
            await run.write_running_record()
        await self._syncer.flush()
        if self._deleter is not None:
            # What is still queued stays renamed on disk; the next recover() deletes it.
            self._deleter.cancel()
            await asyncio.gather(self._deleter, return_exceptions=True)
        for run in self._runs.values():
            run.journal.close()
        if self._settings.cgroups is not None:
            # Only succeeds when no ticket cgroup is left; a live script keeps it.
            proctree.remove_cgroup(self._settings.cgroups.path)
        if self._workspaces is not None:
            await asyncio.to_thread(_tidy_workspaces, self._workspaces)

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
        if run is None and (self._tickets_dir / ticket).exists():
            run = await self._load(ticket)
        if run is not None:
            await run.started.wait()
            return await self.status(ticket)
        check_files(cmd)
        paths = TicketPaths.of(self._home, ticket, self._workspaces)
        record = TicketRecord(ticket=ticket, state=ScriptState.PENDING)
        # Claim the ticket before the first await: a concurrent start must find it taken.
        claimed = self._creating[ticket] = asyncio.Event()
        try:
            launched: Started | str | None = None
            if cmd.full_isolation or cmd.package is not None:
                # Answered PENDING while it waits for the mutex or its package is extracted:
                # the claim is durable at once.
                journal = await asyncio.to_thread(self._create_ticket, paths, True, self._owner)
            else:
                # One thread hop from nothing to a running script.
                journal, launched = await asyncio.to_thread(
                    self._create_and_launch, paths, record, cmd
                )
            run = TicketRun(
                paths=paths, record=record, journal=journal, command=cmd, syncer=self._syncer
            )
            self._runs[ticket] = run
            run.task = asyncio.create_task(
                run.run(self._settings, launched), name=f"script-{ticket}"
            )
        finally:
            del self._creating[ticket]
            claimed.set()
        await run.started.wait()
        return await self.status(ticket)

    @property
    def _owner(self) -> tuple[int, int] | None:
        user = self._settings.user
        return (user.uid, user.gid) if user is not None else None

    @staticmethod
    def _create_ticket(
        paths: TicketPaths, durable: bool, owner: tuple[int, int] | None = None
    ) -> Journal:
        # The directory is the whole claim: no PENDING record is written (a ticket without one
        # loads as "result unknown"). It is made durable here only when the answer may be
        # PENDING (waiting for a mutex); otherwise runner.launch does it while the interpreter
        # starts up, before the script may run.
        claim(paths, owner)
        try:
            if durable:
                sync_claim(paths)
            return Journal(paths.journal, new=True)
        except BaseException:
            remove_ticket(paths.root)  # nothing ran: no trace of the ticket
            raise

    def _create_and_launch(
        self, paths: TicketPaths, record: TicketRecord, cmd: StartCommand
    ) -> tuple[Journal, Started | str]:
        claim(paths, self._owner)
        try:
            # launch() closes the gate of a process it started when it fails: nothing ran.
            started = launch(paths, record, cmd, self._settings)
        except BaseException:
            remove_ticket(paths.root)
            raise
        return Journal(paths.journal, new=True), started

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
        if after_sequence >= run.journal.last_sequence:
            # Nothing new to read: no disk and no thread hop (most status calls of short
            # scripts, and every complete()).
            runs: list[LogRun] = []
            more = False
        else:
            runs, more = await asyncio.to_thread(run.journal.read_after, after_sequence, limit)
        last = max(run.journal.last_sequence, runs[-1].last_sequence if runs else 0)
        return ScriptSnapshot(
            ticket=ticket,
            state=state,
            exit_code=exit_code,
            runs=tuple(runs),
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
            if snapshot.runs:
                after = snapshot.runs[-1].last_sequence
            if snapshot.state in TERMINAL_STATES and not snapshot.more_lines:
                yield snapshot
                return
            if snapshot.runs:
                yield snapshot

    async def cancel(self, ticket: str, reason: str) -> ScriptSnapshot:
        """Kill the ticket's whole process tree; return once it is dead (state CANCELLED)."""
        run = self._get(ticket)
        if not run.finished:
            if run.request_stop(reason or "Cancelled"):
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
        # Housekeeping after the server has stored the result: debug, not one line per script.
        log.debug("script_completed", ticket=ticket)
        return snapshot

    async def _forget(self, run: TicketRun) -> None:
        task = run.task
        if task is not None and not task.done() and not run.final_written:
            # A terminal state is readable a moment before the run has written it: deleting
            # under that write would leave the directory, and a state.json that a restarted
            # Tentacle would load again, behind.
            await asyncio.wait({task})
        run.deleted = True
        self._syncer.discard(run.ticket)  # the server has the result: no fsync for a file to go
        # Renamed before it leaves _runs: a start of the same ticket never finds it half gone,
        # and the deletion itself (several unlinks, slow on a busy disk) need not be waited for.
        doomed = self._tickets_dir / f"{_DELETING}{run.ticket}-{uuid.uuid4().hex[:8]}"
        try:
            # One rename is quicker than the hop to a thread it would take to move it off the loop.
            os.rename(run.paths.root, doomed)
        except OSError:
            doomed = run.paths.root
        self._runs.pop(run.ticket, None)
        async with run.changed:
            run.changed.notify_all()
        run.journal.close()
        if doomed != run.paths.root and self._deleter is not None and not self._deleter.done():
            self._doomed.put_nowait(doomed)
        else:
            await asyncio.to_thread(remove_ticket, doomed)

    def open_workspace_file(self, ticket: str, relative_path: str) -> BinaryIO:
        """Open a file of the ticket's workspace for a download; OSError when there is none.

        A workspace that belongs to another user (run_scripts_as) is read without following
        any symlink: its user could otherwise swap the file for a link to one only root reads.
        """
        run = self._get(ticket)
        if run.paths.work is None:
            return open(self.workspace_file(ticket, relative_path), "rb")  # noqa: SIM115
        fd = open_beneath(run.paths.script_workspace, check_relative_name(relative_path))
        return os.fdopen(fd, "rb")

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
