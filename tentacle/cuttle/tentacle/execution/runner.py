"""One ticket's run: wait for isolation, start the process, journal its output, end it.

Output flows pipe -> ``read()`` -> runs of whole lines -> service messages applied ->
secrets masked -> journal writer (group commit: one fsync for all that gathered meanwhile) ->
visible to status/watch. The journal is the store;
nothing keeps all lines in memory. Lines stay in runs (one bytes object per read, not one per
line) unless a run holds a service message, which is the only thing that needs a line on its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import fcntl
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import structlog

from cuttle.protocol import servicemessages
from cuttle.protocol.masking import Masker
from cuttle.tentacle.execution import proctree
from cuttle.tentacle.execution.helpers import (
    HelperFiles,
    Launch,
    plan_launch,
    release,
    remove_variables_file,
    write_workspace,
)
from cuttle.tentacle.execution.isolation import MutexMap
from cuttle.tentacle.execution.journal import Journal, PendingRun
from cuttle.tentacle.execution.journal_writer import JournalWriter
from cuttle.tentacle.execution.lines import Block, LineAssembler
from cuttle.tentacle.execution.model import (
    TERMINAL_STATES,
    Artifact,
    LogLevel,
    LogSource,
    ScriptState,
    StartCommand,
    Syntax,
    Variable,
)
from cuttle.tentacle.execution.record_sync import RecordSyncer
from cuttle.tentacle.execution.script_user import ScriptUser, open_beneath
from cuttle.tentacle.execution.tickets import (
    TicketPaths,
    TicketRecord,
    save_first_record,
    save_record,
    sync_claim,
)
from cuttle.tentacle.packages.deploy import DeploySettings, prepare
from cuttle.tentacle.packages.errors import PackageError

__all__ = ["RunSettings", "Started", "TicketRun", "launch"]

log = structlog.get_logger()

_READ_SIZE = 256 * 1024
_PIPE_SIZE = 1024 * 1024
_STDOUT_LEVELS = {
    "stdout-default": LogLevel.INFO,
    "stdout-verbose": LogLevel.VERBOSE,
    "stdout-highlight": LogLevel.HIGHLIGHT,
    "stdout-warning": LogLevel.WARNING,
    "stdout-error": LogLevel.ERROR,
    # Cuttle has no "wait" level; the line is ordinary progress output.
    "stdout-wait": LogLevel.INFO,
}
_STDERR_LEVELS = {
    "stderr-default": LogLevel.ERROR,
    "stderr-error": LogLevel.ERROR,
    "stderr-progress": LogLevel.VERBOSE,
}
_FAILURE_MESSAGES = {"resultmessage", "stepfailed"}
# servicemessages.parse needs this in a line, so a block without it holds no service message.
_MESSAGE_MARK = servicemessages.PREFIX.encode()
# Scripts outlive a Tentacle that stops (the next one finds them by their record). Their Popen
# objects are kept here so that dropping them does not warn about a child never waited for.
_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds, as journaled."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class RunSettings:
    """Knobs shared by every run of one manager."""

    python: str
    cancel_grace: float
    eof_grace: float
    mutexes: MutexMap
    cgroups: proctree.CgroupRoot | None
    helpers: HelperFiles
    running_record_delay: float = 0.5
    """A script still running after this long gets its RUNNING record (pid, start time,
    cgroup) on disk. Shorter ones never need one: their terminal record is the first."""
    user: ScriptUser | None = None
    """Who scripts run as (run_scripts_as); None: as the Tentacle itself."""
    packages: DeploySettings | None = None
    """Where packages are put in place (None: this manager deploys no packages)."""


@dataclass
class TicketRun:
    """In-memory state of one ticket, supervised or merely loaded from disk."""

    paths: TicketPaths
    record: TicketRecord
    journal: Journal
    command: StartCommand | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str = ""
    task: asyncio.Task[None] | None = None
    deleted: bool = False
    waiting_for_mutex: bool = False
    # The terminal record is in place (not yet fsynced, see set_state).
    final_written: bool = False
    # Whether state.json exists. Until it does, the next record is written in place
    # (tickets.save_first_record): most scripts end before their RUNNING record is due, and
    # then the terminal record is the only one they ever write.
    on_disk: bool = False
    masker: Masker = field(default_factory=Masker)
    # Makes the terminal record durable in a batch (record_sync.py); the manager shares one.
    syncer: RecordSyncer = field(default_factory=lambda: RecordSyncer(0.0))
    # Record writes go one at a time, so none lands after the terminal one.
    _record_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _running_timer: asyncio.TimerHandle | None = None
    # Holds the timer's write task: the loop keeps only a weak reference to a task.
    _running_write: asyncio.Task[None] | None = None
    # Resolved to wake the supervision of a running script (see _supervise).
    _wake: asyncio.Future[None] | None = None
    _writer: JournalWriter | None = None
    _stdout_level: LogLevel = LogLevel.INFO
    _stderr_level: LogLevel = LogLevel.ERROR
    _artifact_requests: list[tuple[str, str]] = field(default_factory=list)
    # The extracted package folder this ticket deploys, spared by retention until it ends.
    _held_folder: Path | None = None
    _dirty: bool = False

    @property
    def ticket(self) -> str:
        """The ticket id."""
        return self.record.ticket

    @property
    def finished(self) -> bool:
        """Whether the ticket is in a terminal state."""
        return self.record.state in TERMINAL_STATES

    # -- journal -----------------------------------------------------------------------------

    async def append(self, runs: list[PendingRun]) -> None:
        """Queue runs of lines for the journal; readers wake once they are durable."""
        if self._writer is None:
            self._writer = JournalWriter(self.journal, self._wake_readers)
        await self._writer.put(runs)

    async def flush(self) -> None:
        """Wait until every line appended so far is durable and visible."""
        if self._writer is not None:
            await self._writer.flush()

    async def _wake_readers(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def say(self, text: str, level: LogLevel = LogLevel.INFO) -> None:
        """Journal a line written by the Tentacle itself, durably (or log why it could not)."""
        lines = self.masker.mask(text.encode("utf-8", "replace")).split(b"\n")
        try:
            await self.append(
                [(now_ms(), LogSource.TENTACLE, level, b"\n".join(lines), len(lines))]
            )
            await self.flush()
        except OSError as exc:
            # A note that cannot be journaled (disk full) must not stop the supervision that
            # wanted to say it; the reason also travels in the ticket's state.
            log.error("journal_write_failed", ticket=self.ticket, error=str(exc), note=text)

    async def persist(self) -> None:
        """Write the state record, not fsynced (see tickets.py); never after the terminal one."""
        self._dirty = False
        async with self._record_lock:
            if self.final_written:
                return
            # A copy: the output handling goes on changing the record while the thread writes.
            record = _copy_record(self.record)
            await asyncio.to_thread(_save, self.paths, record, not self.on_disk)
            self.on_disk = True

    def keep_running_record(self, delay: float) -> None:
        """Have the RUNNING record written if the script is still running after ``delay``."""
        loop = asyncio.get_running_loop()
        self._running_timer = loop.call_later(delay, self._running_record_due)

    def _running_record_due(self) -> None:
        self._running_timer = None
        if not self.finished and not self.on_disk:
            self._running_write = asyncio.create_task(self.write_running_record())

    async def write_running_record(self) -> None:
        """Write the RUNNING record now unless a record is on disk; log why it could not be."""
        if self._running_timer is not None:
            self._running_timer.cancel()
            self._running_timer = None
        if self.finished or self.on_disk or self.record.state is not ScriptState.RUNNING:
            return
        try:
            await self.persist()
        except OSError as exc:
            # Not fatal: without the pid a restart still finds the tree by cgroup and marker.
            log.warning("ticket_record_unwritten", ticket=self.ticket, error=str(exc))

    async def set_state(self, state: ScriptState, reason: str = "", exit_code: int = -1) -> None:
        """Move to a terminal state, persist it, and wake every watcher."""
        # Every line first: a reader that sees the terminal state has all the output.
        try:
            await self.flush()
        except OSError as exc:
            log.error("journal_write_failed", ticket=self.ticket, error=str(exc))
        # The terminal record is written as a copy and becomes the ticket's state only once it
        # is in place: a reader (a status call, a watcher waking for any reason) that sees the
        # terminal state finds the directory settled (variables file gone, state.json final).
        if self._running_timer is not None:
            self._running_timer.cancel()
            self._running_timer = None
        async with self._record_lock:
            final = dataclasses.replace(
                self.record,
                state=state,
                state_reason=self.masker.mask_text(reason),
                exit_code=exit_code,
                finished_at=time.time(),
            )
            self._dirty = False
            # Written before anyone sees the terminal state; made durable by the syncer a
            # moment later (record_sync.py), or never if the server completes the ticket first.
            # On the loop: an unlink and a small write to the page cache cost less than the
            # two thread switches of a hop, and nothing here waits for the disk.
            try:
                _write_final(self.paths, final, not self.on_disk)
            except OSError as exc:
                # Disk full: the result is still answered from memory; after a restart the
                # ticket reads back as "result unknown", which is then the truth.
                log.error("ticket_record_write_failed", ticket=self.ticket, error=str(exc))
            else:
                self.final_written = self.on_disk = True
                self.syncer.add(self.ticket, self.paths)
            self.record = final
        self.started.set()
        async with self.changed:
            self.changed.notify_all()

    # -- the run -----------------------------------------------------------------------------

    async def run(self, settings: RunSettings, launched: Started | str | None = None) -> None:
        """Supervise the ticket from PENDING (or ``launched`` already) to a terminal state."""
        cmd = self.command
        assert cmd is not None  # noqa: S101 - only started runs have a command
        for v in cmd.variables:
            if v.sensitive:
                self.masker.add(v.value)
        try:
            if launched is not None:
                await self._run_launched(cmd, settings, launched)
            elif cmd.full_isolation:
                await self._run_isolated(cmd, settings)
            else:
                await self._run_process(cmd, settings)
        except asyncio.CancelledError:
            if self.stop.is_set() and not self.finished:
                await self.set_state(ScriptState.CANCELLED, self.stop_reason)
                return
            raise  # the manager is closing: leave the state for recover() to judge
        except Exception as exc:
            log.exception("script_supervision_failed", ticket=self.ticket)
            if not self.finished:
                was_running = self.record.state is ScriptState.RUNNING
                await self.say(f"The Tentacle failed while supervising the script: {exc}")
                state = ScriptState.RESULT_UNKNOWN if was_running else ScriptState.FAILED_TO_START
                await self.set_state(state, f"Tentacle error: {exc}")
        finally:
            self.started.set()
            if self._held_folder is not None and settings.packages is not None:
                settings.packages.in_use.release(self._held_folder)
                self._held_folder = None

    async def _run_isolated(self, cmd: StartCommand, settings: RunSettings) -> None:
        name = cmd.mutex_name
        self.waiting_for_mutex = True
        if settings.mutexes.locked(name):
            await self.say(f"Waiting for the mutex '{name}' held by another script...")
            self.started.set()  # start() answers PENDING while we wait
        holder = settings.mutexes.hold(name)
        try:
            async with asyncio.timeout(cmd.isolation_timeout):
                await holder.__aenter__()
        except TimeoutError:
            reason = f"Timed out after {cmd.isolation_timeout:g}s waiting for the mutex '{name}'"
            await self.say(reason, LogLevel.ERROR)
            await self.set_state(ScriptState.FAILED_TO_START, reason)
            return
        finally:
            self.waiting_for_mutex = False
        try:
            await self._run_process(cmd, settings)
        finally:
            await holder.__aexit__(None, None, None)

    async def _run_process(self, cmd: StartCommand, settings: RunSettings) -> None:
        if self.stop.is_set():
            await self.set_state(ScriptState.CANCELLED, self.stop_reason)
            return
        if cmd.package is not None:
            prepared = await self._prepare_package(cmd, settings)
            if prepared is None:
                return
            cmd = self.command = prepared
        started = await asyncio.to_thread(launch, self.paths, self.record, cmd, settings)
        await self._run_launched(cmd, settings, started)

    async def _prepare_package(
        self, cmd: StartCommand, settings: RunSettings
    ) -> StartCommand | None:
        """Put the command's package in place; the command that runs its scripts, or None.

        None means the ticket ended (failed to start, cancelled, timed out) and says why.
        """
        package = cmd.package
        assert package is not None  # noqa: S101 - only called for a package
        # start() answers PENDING while the package is extracted (it may take a while).
        self.started.set()
        if settings.packages is None:
            reason = "this Tentacle is not set up to deploy packages"
            await self.set_state(ScriptState.FAILED_TO_START, reason)
            return None
        loop = asyncio.get_running_loop()

        def say(text: str, warning: bool) -> None:
            level = LogLevel.WARNING if warning else LogLevel.INFO
            asyncio.run_coroutine_threadsafe(self.say(text, level), loop).result()

        user = settings.user
        began = time.monotonic()
        try:
            # Not asyncio.to_thread: `say` holds this thread until the loop has journaled the
            # line, which takes a default-executor thread; preparations holding every default
            # thread (as many deployments at once) would wait for each other forever.
            prepared = await _on_own_thread(
                functools.partial(
                    prepare,
                    package,
                    cmd.variables,
                    self.paths.script_workspace,
                    settings.packages,
                    syntax=cmd.syntax,
                    owner=(user.uid, user.gid) if user is not None else None,
                    say=say,
                )
            )
        except (PackageError, OSError) as exc:
            reason = f"{package.package_id} {package.version}: {exc}"
            await self.say(reason, LogLevel.ERROR)
            await self.set_state(ScriptState.FAILED_TO_START, reason)
            return None
        self._held_folder = prepared.extracted
        for variable in prepared.outputs:
            self.record.set_output(variable)
        if self.stop.is_set():
            await self.say(f"The script was cancelled: {self.stop_reason}", LogLevel.WARNING)
            await self.set_state(ScriptState.CANCELLED, self.stop_reason)
            return None
        timeout = cmd.timeout
        if timeout:
            timeout -= time.monotonic() - began
            if timeout <= 0:
                reason = (
                    f"Putting the package in place took longer than the time limit of "
                    f"{cmd.timeout:g}s"
                )
                await self.say(reason, LogLevel.ERROR)
                await self.set_state(ScriptState.TIMED_OUT, reason)
                return None
        return dataclasses.replace(
            cmd,
            body=prepared.body,
            syntax=Syntax.BASH,
            variables=(*cmd.variables, *prepared.variables),
            timeout=timeout,
            package=None,
        )

    async def _run_launched(
        self, cmd: StartCommand, settings: RunSettings, started: Started | str
    ) -> None:
        if isinstance(started, str):
            await self.say(started, LogLevel.ERROR)
            await self.set_state(ScriptState.FAILED_TO_START, started)
            return
        proc, cgroup = started.proc, started.cgroup
        self.record.pid = proc.pid
        self.record.pid_start_time = started.record.pid_start_time
        self.record.cgroup = started.record.cgroup
        self.record.state = ScriptState.RUNNING
        self.keep_running_record(settings.running_record_delay)
        log.info("script_started", ticket=self.ticket, pid=proc.pid, cgroup=cgroup is not None)
        self.started.set()
        await self._supervise(proc, cmd, settings, cgroup)

    async def _supervise(
        self,
        proc: subprocess.Popen[bytes],
        cmd: StartCommand,
        settings: RunSettings,
        cgroup: Path | None,
    ) -> None:
        assert proc.stdout is not None  # noqa: S101 - started with PIPE
        assert proc.stderr is not None  # noqa: S101 - started with PIPE
        loop = asyncio.get_running_loop()
        pumps = {
            asyncio.create_task(self._pump(proc.stdout, LogSource.STDOUT)),
            asyncio.create_task(self._pump(proc.stderr, LogSource.STDERR)),
        }
        # One future wakes the supervision for whatever comes first: the exit, a stop
        # (request_stop) or the time limit. Callbacks, not tasks: this runs for every script.
        exited: asyncio.Future[None] = loop.create_future()
        unwatch = _watch_exit(loop, proc, exited)
        wake = self._wake = loop.create_future()
        exited.add_done_callback(lambda _: _resolve(wake))
        if self.stop.is_set():
            _resolve(wake)
        limit = loop.call_later(cmd.timeout, _resolve, wake) if cmd.timeout else None
        try:
            await wake
            state, reason, kill = ScriptState.COMPLETE, "", False
            if exited.done():
                if not all(pump.done() for pump in pumps):
                    _, still_open = await asyncio.wait(pumps, timeout=settings.eof_grace)
                    if still_open:
                        # The script is done; only leftovers holding the pipe keep it open.
                        await self.say(
                            "The script exited but background processes kept its output open; "
                            "killing them",
                            LogLevel.WARNING,
                        )
                        kill = True
            elif self.stop.is_set():
                state, reason, kill = ScriptState.CANCELLED, self.stop_reason, True
            else:
                state, kill = ScriptState.TIMED_OUT, True
                reason = f"The script exceeded its time limit of {cmd.timeout:g}s and was killed"
                await self.say(reason, LogLevel.ERROR)
            killed: set[int] = set()
            if kill:
                killed = await asyncio.to_thread(
                    proctree.kill_tree,
                    self.ticket,
                    proc.pid,
                    cgroup,
                    settings.cancel_grace,
                    proc.pid,
                )
            await exited
            exit_code = proc.wait()  # exited: reaps without blocking
            if not all(pump.done() for pump in pumps):
                # Everything holding the pipes is dead now, so EOF is imminent; bound it anyway.
                _, stuck = await asyncio.wait(pumps, timeout=max(settings.eof_grace, 1.0))
                for task in stuck:
                    task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            # Orphans of the script were adopted by us (subreaper); the /proc scan that finds
            # them is only worth a thread when something was killed or a child is a zombie.
            if killed or proctree.has_zombie_children():
                await asyncio.to_thread(proctree.reap_zombies, killed, {proc.pid})
            if kill and state is not ScriptState.COMPLETE:
                # "Cancelled" (or "timed out, killed") is a promise that nothing of it runs on:
                # made only when every process of the tree was seen gone.
                left = await asyncio.to_thread(
                    proctree.survivors, self.ticket, proc.pid, cgroup, proc.pid
                )
                if left:
                    reason = (
                        f"{reason}; but processes {', '.join(map(str, sorted(left)))} of the "
                        "script survived SIGKILL and may still be running"
                    )
                    state = ScriptState.RESULT_UNKNOWN
                    await self.say(reason, LogLevel.ERROR)
                    log.error("process_tree_survived", ticket=self.ticket, pids=sorted(left))
            proctree.remove_cgroup(cgroup)
            if state is ScriptState.CANCELLED:
                await self.say(f"The script was cancelled: {reason}", LogLevel.WARNING)
            await self.set_state(state, reason, exit_code)
            log.info("script_finished", ticket=self.ticket, state=state.value, exit_code=exit_code)
        finally:
            if proc.returncode is None:
                _LEFT_RUNNING.append(proc)
            self._wake = None
            if limit is not None:
                limit.cancel()
            unwatch()
            for pump in pumps:
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pumps, return_exceptions=True)

    def request_stop(self, reason: str) -> bool:
        """Ask the supervision to kill the script; False when a stop was asked already."""
        if self.stop.is_set():
            return False
        self.stop_reason = reason
        self.stop.set()
        if self._wake is not None:
            _resolve(self._wake)
        return True

    # -- output ------------------------------------------------------------------------------

    async def _pump(self, pipe: IO[bytes], source: LogSource) -> None:
        # Straight from the pipe: no transport, protocol and stream buffer per pipe (two per
        # script); the next read waits only until what was read is handed to the journal.
        fd = pipe.fileno()
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):
            # A bigger pipe lets the script run ahead while we parse; 1 MiB is the default
            # limit an unprivileged process may ask for, and failing to get it is harmless.
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        loop = asyncio.get_running_loop()
        assembler = LineAssembler()
        try:
            failed: OSError | None = None
            while True:
                try:
                    chunk = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    await _readable(loop, fd)
                    continue
                if not chunk:
                    break
                if failed is None:
                    failed = await self._handle_or_stop(assembler.feed(chunk), source)
                # else: drained and dropped until the stopped script's pipe closes.
                if len(chunk) == _READ_SIZE:
                    # A script writing flat out keeps the pipe full, so the next read would not
                    # wait either: yield, or the loop (other requests, the journal writer, which
                    # would then get one batch of up to its memory bound) starves until the
                    # script stops. A shorter read emptied the pipe: the next one waits anyway.
                    await asyncio.sleep(0)
            if failed is None:
                await self._handle_or_stop(assembler.flush(), source)
        finally:
            pipe.close()
            # What was read is written even when the pump is stopped early; a failure to write
            # was already raised to whoever put the lines.
            with contextlib.suppress(OSError):
                await self.flush()

    async def _handle_or_stop(self, blocks: list[Block], source: LogSource) -> OSError | None:
        """Handle output; if it cannot be journaled, stop the script and say why."""
        try:
            await self._handle(blocks, source)
        except OSError as exc:
            # Running on with output nobody can keep would lose it silently, and a script
            # whose pipe is no longer read would block forever. What was journaled stays.
            log.error("journal_write_failed", ticket=self.ticket, error=str(exc))
            self.request_stop(f"The Tentacle could not journal the script's output: {exc}")
            return exc
        return None

    async def _handle(self, blocks: list[Block], source: LogSource) -> None:
        if not blocks:
            return
        batch: list[PendingRun] = []
        stamp = now_ms()
        for text, count in blocks:
            if source is LogSource.STDOUT:
                if _MESSAGE_MARK in text:
                    self._handle_messages(text, stamp, batch)
                else:
                    batch.append((stamp, source, self._stdout_level, self.masker.mask(text), count))
            else:
                batch.append((stamp, source, self._stderr_level, self.masker.mask(text), count))
        await self.append(batch)
        if self._artifact_requests:
            await self._collect_artifacts()
        if self._dirty:
            await self.persist()

    def _handle_messages(self, text: bytes, stamp: int, batch: list[PendingRun]) -> None:
        """Split a stdout block holding service messages into runs around them, acting on each."""
        plain: list[bytes] = []

        def flush() -> None:
            # Masked now, with the secrets known so far: a setVariable masks from then on.
            if plain:
                joined = self.masker.mask(b"\n".join(plain))
                batch.append((stamp, LogSource.STDOUT, self._stdout_level, joined, len(plain)))
                plain.clear()

        for raw in text.split(b"\n"):
            message = servicemessages.parse(raw)
            if message is None:
                plain.append(raw)
                continue
            flush()
            note = self._apply(message)
            if note is not None:
                note_level, note_text = note
                batch.append((stamp, LogSource.TENTACLE, note_level, note_text, 1))
        flush()

    def _apply(self, message: servicemessages.ServiceMessage) -> tuple[LogLevel, bytes] | None:
        """Act on a service message; return a note (level, line) when it had to be ignored."""
        name = message.name
        lowered = name.lower()
        if name in _STDOUT_LEVELS:
            self._stdout_level = _STDOUT_LEVELS[name]
        elif name in _STDERR_LEVELS:
            self._stderr_level = _STDERR_LEVELS[name]
        elif lowered == "setvariable":
            var_name = message.get("name")
            if not var_name:
                return LogLevel.WARNING, b"Ignored a setVariable service message without a name"
            sensitive = message.get("sensitive").strip().lower() == "true"
            value = message.get("value")
            if sensitive:
                self.masker.add(value)
            self.record.set_output(Variable(var_name, value, sensitive))
            self._dirty = True
        elif lowered == "createartifact":
            path = message.get("path")
            if not path:
                return LogLevel.WARNING, b"Ignored a createArtifact service message without a path"
            self._artifact_requests.append((path, message.get("name")))
        elif lowered in _FAILURE_MESSAGES:
            self.record.failure_message = self.masker.mask_text(message.get("message"))
            self._dirty = True
        else:
            # Ignored, as Octopus does: a newer script must not break an older agent. Said
            # quietly (verbose), so that what the script printed is never silently lost.
            note = f"Ignored the service message '{name}', which this Tentacle does not know"
            return LogLevel.VERBOSE, note.encode()
        return None

    async def _collect_artifacts(self) -> None:
        requests, self._artifact_requests = self._artifact_requests, []
        for path, name in requests:
            if self.paths.work is not None:
                result = await asyncio.to_thread(
                    _collect_confined_artifact, self.paths.script_workspace, path, name
                )
            else:
                result = await asyncio.to_thread(
                    _collect_artifact, self.paths.workspace, path, name
                )
            if isinstance(result, str):
                await self.say(result, LogLevel.WARNING)
                continue
            self.record.artifacts = [a for a in self.record.artifacts if a.path != result.path]
            self.record.artifacts.append(result)
            self._dirty = True
            await self.say(
                f"Collected artifact {result.name} ({result.size} bytes)", LogLevel.VERBOSE
            )


def _copy_record(record: TicketRecord) -> TicketRecord:
    return dataclasses.replace(
        record,
        output_variables=dict(record.output_variables),
        artifacts=list(record.artifacts),
    )


def _save(paths: TicketPaths, record: TicketRecord, first: bool) -> None:
    if first:
        save_first_record(paths, record)
    else:
        save_record(paths, record, durable=False)


def _write_final(paths: TicketPaths, record: TicketRecord, first: bool) -> None:
    """Drop the variables file (it holds secrets), then write the terminal record."""
    remove_variables_file(paths.variables)
    _save(paths, record, first)


@dataclass(frozen=True)
class Started:
    """A script that runs: what ``launch`` hands over for supervision."""

    proc: subprocess.Popen[bytes]
    cgroup: Path | None
    record: TicketRecord
    """The RUNNING record (a copy; the caller applies it to its own and writes it when due)."""


def launch(
    paths: TicketPaths,
    record: TicketRecord,
    cmd: StartCommand,
    settings: RunSettings,
) -> Started | str:
    """Start the script (blocking): workspace, process, RUNNING record; a str says why not.

    The interpreter is started first and waits at the bootstrap's gate: writing the workspace
    and making the ticket's claim durable overlap its start-up, and the script runs only after
    them, so a reboot can never forget a ticket whose script ran (see tickets.py).
    """
    ticket = record.ticket
    try:
        plan = plan_launch(
            paths.script_workspace,
            paths.variables,
            ticket,
            cmd,
            settings.python,
            settings.helpers,
            settings.user,
        )
    except OSError as exc:
        return f"could not prepare the workspace: {exc}"
    if isinstance(plan, str):
        return plan
    cgroup = settings.cgroups.create(ticket) if settings.cgroups else None
    if plan.user is not None and settings.cgroups is not None and cgroup is None:
        return "could not create the script's cgroup, which keeps a script run as another user"
    try:
        proc = _spawn(plan, cgroup, settings.python)
    except OSError as exc:
        proctree.remove_cgroup(cgroup)
        return f"could not start the script: {exc}"
    assert proc.stdin is not None  # noqa: S101 - started with PIPE: the bootstrap's gate
    try:
        failure = _join(proc, cgroup) if plan.user is not None else None
        failure = failure or _ready(paths, plan, cmd)
    except BaseException:
        _abandon(proc, cgroup, settings.cancel_grace)
        raise
    if failure is not None:
        _abandon(proc, cgroup, settings.cancel_grace)
        return failure
    release(proc.stdin, go=True)
    running = dataclasses.replace(
        record,
        state=ScriptState.RUNNING,
        pid=proc.pid,
        pid_start_time=proctree.process_start_time(proc.pid),
        cgroup=str(cgroup) if cgroup else None,
    )
    return Started(proc, cgroup, running)


def _join(proc: subprocess.Popen[bytes], cgroup: Path | None) -> str | None:
    """Move a script that runs as another user into its cgroup (it cannot do it itself)."""
    # It waits at the bootstrap's gate, so it has started nothing yet: everything it starts
    # from "go" on is born inside, and an unprivileged process cannot write any cgroup.procs
    # outside its own (root-owned) cgroup to leave it.
    if cgroup is None:
        return None
    try:
        (cgroup / "cgroup.procs").write_text(str(proc.pid))
    except OSError as exc:
        return f"could not move the script into its cgroup {cgroup}: {exc}"
    return None


def _ready(paths: TicketPaths, launch: Launch, cmd: StartCommand) -> str | None:
    """Write the workspace and make the claim durable; a str says what failed."""
    try:
        write_workspace(launch, cmd)
    except OSError as exc:
        return f"could not prepare the workspace: {exc}"
    try:
        sync_claim(paths)
    except OSError as exc:
        return f"could not record the start of the script: {exc}"
    return None


def _abandon(proc: subprocess.Popen[bytes], cgroup: Path | None, grace: float) -> None:
    """Close the gate without "go": the bootstrap exits without running the script."""
    assert proc.stdin is not None  # noqa: S101 - started with PIPE
    release(proc.stdin, go=False)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        # Stuck before the gate (say, in a BASH_ENV file): nothing of the script ran yet.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    proctree.remove_cgroup(cgroup)


def _spawn(launch: Launch, cgroup: Path | None, python: str) -> subprocess.Popen[bytes]:
    # The bootstrap joins the cgroup itself before the script runs (see helpers.py): no joiner
    # process is exec'd first, and no preexec_fn (which would force fork() in a threaded process).
    # A script run as another user is started through the privilege dropper instead (Popen's
    # user=/group= would fork() too), and the Tentacle moves it into its cgroup (_join).
    argv = launch.argv(cgroup) if launch.user is None else launch.argv_as_user(python)
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=launch.cwd,
        env=launch.env,
        start_new_session=True,
        close_fds=True,
    )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until ``fd`` can be read (or has reached its end)."""
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _resolve, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


_T = TypeVar("_T")


async def _on_own_thread(work: Callable[[], _T]) -> _T:
    """Run blocking work on a new thread of its own, outside the loop's default executor."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
    try:
        # The context goes along, as asyncio.to_thread takes it (structlog's bound values).
        call = functools.partial(contextvars.copy_context().run, work)
        return await asyncio.get_running_loop().run_in_executor(executor, call)
    finally:
        executor.shutdown(wait=False)


def _watch_exit(
    loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes], exited: asyncio.Future[None]
) -> Callable[[], None]:
    """Resolve ``exited`` when the process exits; returns what stops the watch.

    Without a thread: a pidfd becomes readable on exit. Where pidfds are missing, a thread waits.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        waiter = loop.run_in_executor(None, proc.wait)
        waiter.add_done_callback(lambda _: _resolve(exited))
        return lambda: None
    loop.add_reader(pidfd, _resolve, exited)

    def unwatch() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)

    return unwatch


def _collect_artifact(workspace: Path, path: str, name: str) -> Artifact | str:
    """Hash (and, if outside the workspace, copy in) a published file."""
    candidate = Path(path)
    source = candidate if candidate.is_absolute() else workspace / candidate
    try:
        source = source.resolve(strict=True)
    except OSError:
        return f"Artifact {path!r} was not found"
    if not source.is_file():
        return f"Artifact {path!r} is not a regular file"
    root = workspace.resolve()
    label = name or source.name
    if not source.is_relative_to(root):
        target_dir = root / "artifacts"
        target_dir.mkdir(exist_ok=True)
        safe = Path(label).name or "artifact"
        target = target_dir / safe
        counter = 1
        while target.exists():
            target = target_dir / f"{counter}-{safe}"
            counter += 1
        shutil.copyfile(source, target)
        source = target
    with open(source, "rb") as f:
        size, digest = _hash(f)
    return Artifact(label, source.relative_to(root).as_posix(), size, digest)


def _hash(f: IO[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while block := f.read(1024 * 1024):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


def _collect_confined_artifact(workspace: Path, path: str, name: str) -> Artifact | str:
    """Hash a file published by a script run as another user: only from its workspace.

    Root copying a file from elsewhere would hand the script (and the server) a file its user
    may not read; the file is opened without following symlinks for the same reason.
    """
    candidate = Path(os.path.normpath(workspace / path))
    if not candidate.is_relative_to(workspace) or candidate == workspace:
        return (
            f"Artifact {path!r} is outside the workspace: a script that runs as another user "
            "publishes files from its workspace (copy the file there first)"
        )
    relative = candidate.relative_to(workspace)
    try:
        fd = open_beneath(workspace, relative)
    except OSError:
        return f"Artifact {path!r} was not found as a regular file (symlinks are not followed)"
    with os.fdopen(fd, "rb") as f:
        size, digest = _hash(f)
    label = name or candidate.name
    return Artifact(label, relative.as_posix(), size, digest)
