"""One ticket's run: wait for isolation, start the process, journal its output, end it.

Output flows pipe -> ``read(65536)`` -> whole lines -> service messages applied -> secrets masked
-> journal batch (fsynced) -> visible to status/watch. The journal is the store; nothing keeps
all lines in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from cuttle.protocol import servicemessages
from cuttle.tentacle.execution import proctree
from cuttle.tentacle.execution.helpers import Launch, prepare_workspace, remove_variables_file
from cuttle.tentacle.execution.isolation import MutexMap
from cuttle.tentacle.execution.journal import Journal, PendingLine
from cuttle.tentacle.execution.masking import LineAssembler, Masker
from cuttle.tentacle.execution.model import (
    TERMINAL_STATES,
    Artifact,
    LogLevel,
    LogSource,
    ScriptState,
    StartCommand,
    Variable,
)
from cuttle.tentacle.execution.tickets import TicketPaths, TicketRecord, save_record

__all__ = ["RunSettings", "TicketRun"]

log = structlog.get_logger()

_READ_SIZE = 65536
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
    masker: Masker = field(default_factory=Masker)
    _append_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stdout_level: LogLevel = LogLevel.INFO
    _stderr_level: LogLevel = LogLevel.ERROR
    _artifact_requests: list[tuple[str, str]] = field(default_factory=list)
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

    async def append(self, lines: list[PendingLine]) -> None:
        """Journal lines durably, then wake status/watch readers."""
        if not lines:
            return
        async with self._append_lock:
            await asyncio.to_thread(self.journal.append, lines)
        async with self.changed:
            self.changed.notify_all()

    async def say(self, text: str, level: LogLevel = LogLevel.INFO) -> None:
        """Journal a line written by the Tentacle itself."""
        line = self.masker.mask(text.encode("utf-8", "replace"))
        await self.append([(now_ms(), LogSource.TENTACLE, level, line)])

    async def persist(self) -> None:
        """Write the state record atomically."""
        self._dirty = False
        await asyncio.to_thread(save_record, self.paths, self.record)

    async def set_state(self, state: ScriptState, reason: str = "", exit_code: int = -1) -> None:
        """Move to a terminal state, persist it, and wake every watcher."""
        self.record.state = state
        self.record.state_reason = self.masker.mask_text(reason)
        self.record.exit_code = exit_code
        self.record.finished_at = time.time()
        await asyncio.to_thread(remove_variables_file, self.paths.workspace)
        await self.persist()
        self.started.set()
        async with self.changed:
            self.changed.notify_all()

    # -- the run -----------------------------------------------------------------------------

    async def run(self, settings: RunSettings) -> None:
        """Supervise the ticket from PENDING to a terminal state."""
        cmd = self.command
        assert cmd is not None  # noqa: S101 - only started runs have a command
        try:
            if cmd.full_isolation:
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
        for v in cmd.variables:
            if v.sensitive:
                self.masker.add(v.value)
        try:
            launch = await asyncio.to_thread(
                prepare_workspace, self.paths.workspace, self.ticket, cmd, settings.python
            )
        except OSError as exc:
            launch = f"could not prepare the workspace: {exc}"
        if isinstance(launch, str):
            await self.say(launch, LogLevel.ERROR)
            await self.set_state(ScriptState.FAILED_TO_START, launch)
            return
        cgroup = settings.cgroups.create(self.ticket) if settings.cgroups else None
        try:
            proc = await asyncio.to_thread(_spawn, launch, cgroup)
        except OSError as exc:
            reason = f"could not start the script: {exc}"
            await self.say(reason, LogLevel.ERROR)
            proctree.remove_cgroup(cgroup)
            await self.set_state(ScriptState.FAILED_TO_START, reason)
            return
        self.record.pid = proc.pid
        self.record.pid_start_time = proctree.process_start_time(proc.pid)
        self.record.cgroup = str(cgroup) if cgroup else None
        self.record.state = ScriptState.RUNNING
        await self.persist()
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
        pumps = {
            asyncio.create_task(self._pump(proc.stdout, LogSource.STDOUT)),
            asyncio.create_task(self._pump(proc.stderr, LogSource.STDERR)),
        }
        exited = asyncio.create_task(_wait_exit(proc))
        stopped = asyncio.create_task(self.stop.wait())
        watched: set[asyncio.Task[int] | asyncio.Task[bool]] = {exited, stopped}
        try:
            done, _ = await asyncio.wait(
                watched, timeout=cmd.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            state, reason, kill = ScriptState.COMPLETE, "", False
            if exited in done:
                _, still_open = await asyncio.wait(pumps, timeout=settings.eof_grace)
                if still_open:
                    # The script is done; only leftovers holding the pipe keep it open.
                    await self.say(
                        "The script exited but background processes kept its output open; "
                        "killing them",
                        LogLevel.WARNING,
                    )
                    kill = True
            elif stopped in done:
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
            exit_code = await exited
            # Everything holding the pipes is dead now, so EOF is imminent; bound it anyway.
            _, stuck = await asyncio.wait(pumps, timeout=max(settings.eof_grace, 1.0))
            for task in stuck:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await asyncio.to_thread(proctree.reap_zombies, killed, {proc.pid})
            proctree.remove_cgroup(cgroup)
            if state is ScriptState.CANCELLED:
                await self.say(f"The script was cancelled: {reason}", LogLevel.WARNING)
            await self.set_state(state, reason, exit_code)
            log.info("script_finished", ticket=self.ticket, state=state.value, exit_code=exit_code)
        finally:
            helpers: list[asyncio.Future[Any]] = [*pumps, exited, stopped]
            for helper in helpers:
                helper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pumps, exited, stopped, return_exceptions=True)

    # -- output ------------------------------------------------------------------------------

    async def _pump(self, pipe: IO[bytes], source: LogSource) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READ_SIZE * 4)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        assembler = LineAssembler()
        try:
            while chunk := await reader.read(_READ_SIZE):
                await self._handle(assembler.feed(chunk), source)
            await self._handle(assembler.flush(), source)
        finally:
            transport.close()

    async def _handle(self, lines: list[bytes], source: LogSource) -> None:
        batch: list[PendingLine] = []
        stamp = now_ms()
        for raw in lines:
            if source is LogSource.STDOUT:
                message = servicemessages.parse(raw)
                if message is not None:
                    note = self._apply(message)
                    if note is not None:
                        note_level, note_text = note
                        batch.append((stamp, LogSource.TENTACLE, note_level, note_text))
                    continue
                level = self._stdout_level
            else:
                level = self._stderr_level
            batch.append((stamp, source, level, self.masker.mask(raw)))
        await self.append(batch)
        if self._artifact_requests:
            await self._collect_artifacts()
        if self._dirty:
            await self.persist()

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
            result = await asyncio.to_thread(_collect_artifact, self.paths.workspace, path, name)
            if isinstance(result, str):
                await self.say(result, LogLevel.WARNING)
                continue
            self.record.artifacts = [a for a in self.record.artifacts if a.path != result.path]
            self.record.artifacts.append(result)
            self._dirty = True
            await self.say(
                f"Collected artifact {result.name} ({result.size} bytes)", LogLevel.VERBOSE
            )


def _spawn(launch: Launch, cgroup: Path | None) -> subprocess.Popen[bytes]:
    argv = launch.argv
    if cgroup is not None:
        # Join the cgroup *before* exec'ing the script so no early fork can escape it. sh is the
        # smallest thing that can write its own pid and then exec in place.
        shell = shutil.which("sh") or "/bin/sh"
        join = '{ echo $$ > "$0"; } 2>/dev/null; exec "$@"'
        argv = [shell, "-c", join, str(cgroup / "cgroup.procs"), *argv]
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=launch.cwd,
        env=launch.env,
        start_new_session=True,
        close_fds=True,
    )


async def _wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the process to exit without a thread: a pidfd becomes readable on exit."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        return await asyncio.to_thread(proc.wait)
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()  # already exited: reaps without blocking


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
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return Artifact(label, source.relative_to(root).as_posix(), size, digest.hexdigest())
