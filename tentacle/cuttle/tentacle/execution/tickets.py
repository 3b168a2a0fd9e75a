"""A ticket's on-disk layout and its persisted state record.

``home/tickets/<ticket>/`` holds::

    state.json    state, pid + start time, exit code, reason, output variables, artifacts
    secrets.json  values of sensitive output variables (0600; state.json never holds them)
    journal       the log (see journal.py); created with the first line
    variables.json  the script's variables while it runs (0600; deleted when it ends)
    workspace/    the script's working directory

A script run as another user (run_scripts_as) has its workspace/ and variables.json in
``<workspaces>/<ticket>/`` outside the home instead, and ``workspace`` here is a symlink to it.

A record replacing another is written atomically (temp file, rename), so readers, a Tentacle
restarted after its process died included, see the old or the new version, never half of one.
The first record is written in place: half of it reads back like none at all (see below), so
the rename would buy nothing. That first record is the RUNNING one only for a script still
running half a second after its start (RunSettings.running_record_delay); a shorter one writes
only its terminal record. fsync is paid only for what must survive a crash of the *machine*:

* the ticket directory (``claim``, then ``sync_claim``) before its script may run (the runner
  overlaps the fsync with the interpreter's start-up, see runner.launch) or a start is answered
  PENDING: it is what makes a start of the same ticket after a reboot find the ticket instead of
  running the script a second time.
* the terminal record, so that a result the server has not yet stored is still there after a
  reboot. The runner writes it before making the state visible; ``sync_record`` runs a moment
  later, batched with other tickets, and not at all for a ticket the server completes first
  (see record_sync.py).

Records of a live script (RUNNING with pid + start time, output variables so far) are not
fsynced: only a Tentacle restarted on the same boot uses them, and it sees the page cache; after
a reboot the script is dead anyway. A power cut may leave such a record old, missing or even
empty, and a Tentacle that dies in a script's first half second leaves none; a claimed
directory whose record cannot be read loads as "result unknown", never as a ticket to start
again, and the ticket's cgroup and CUTTLE_TICKET marker still find what is left of its tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cuttle.tentacle.execution.model import Artifact, ScriptState, Variable

__all__ = [
    "TicketPaths",
    "TicketRecord",
    "atomic_write",
    "claim",
    "load_record",
    "remove_ticket",
    "save_first_record",
    "save_record",
    "sync_claim",
    "sync_record",
]


@dataclass(frozen=True)
class TicketPaths:
    """Where one ticket's files live.

    ``work`` is set for a script that runs as another user (see script_user.py): its workspace
    and variables file then live in ``work`` (``<workspaces>/<ticket>/``, outside the home),
    and ``root/workspace`` is a symlink to that workspace, so the Tentacle finds it after a
    restart and everything that reads the workspace through ``root`` works unchanged.
    """

    root: Path
    work: Path | None = None

    @classmethod
    def of(cls, home: Path, ticket: str, workspaces: Path | None = None) -> TicketPaths:
        """Paths for a new ``ticket`` under a manager home (its workspace in ``workspaces``)."""
        return cls(home / "tickets" / ticket, workspaces / ticket if workspaces else None)

    @classmethod
    def found(cls, home: Path, ticket: str) -> TicketPaths:
        """Paths of a ticket already on disk, wherever its workspace was put."""
        return cls.at(home / "tickets" / ticket)

    @classmethod
    def at(cls, root: Path) -> TicketPaths:
        """Paths of the ticket directory ``root`` (perhaps renamed for deletion)."""
        link = root / "workspace"
        if link.is_symlink():
            return cls(root, Path(os.readlink(link)).parent)
        return cls(root)

    @property
    def state(self) -> Path:
        """The JSON state record."""
        return self.root / "state.json"

    @property
    def secrets(self) -> Path:
        """The owner-only file of sensitive output values."""
        return self.root / "secrets.json"

    @property
    def journal(self) -> Path:
        """The log journal."""
        return self.root / "journal"

    @property
    def variables(self) -> Path:
        """The script's variables file (it holds secrets; deleted when the script ends)."""
        return (self.work or self.root) / "variables.json"

    @property
    def workspace(self) -> Path:
        """The script's working directory, as the Tentacle reaches it."""
        return self.root / "workspace"

    @property
    def script_workspace(self) -> Path:
        """The script's working directory, as the script sees it (no symlink on the way)."""
        return (self.work or self.root) / "workspace"


@dataclass
class TicketRecord:
    """The persisted, mutable state of one ticket."""

    ticket: str
    state: ScriptState
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    pid: int | None = None
    pid_start_time: int | None = None
    cgroup: str | None = None
    exit_code: int = -1
    state_reason: str = ""
    failure_message: str = ""
    # Keyed by lower-cased name: Octopus variable names are case-insensitive; last write wins.
    output_variables: dict[str, Variable] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)

    def set_output(self, variable: Variable) -> None:
        """Record an output variable; the last write wins and keeps its casing."""
        key = variable.name.lower()
        self.output_variables.pop(key, None)
        self.output_variables[key] = variable


def _fsync_path(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write a file so that readers see the old or the new content, never a mix.

    ``durable`` also fsyncs the file and its directory, so the new content survives a power loss.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        _write_fd(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        _fsync_path(path.parent, os.O_RDONLY | os.O_DIRECTORY)


def claim(paths: TicketPaths, owner: tuple[int, int] | None = None) -> None:
    """Create the ticket's directory (and workspace); it must not exist yet. Not yet durable.

    ``owner`` (uid, gid) is the user the script runs as: its workspace, outside the home in
    ``paths.work``, is theirs; ``paths.work`` itself stays root's and only traversable.
    """
    paths.root.mkdir(mode=0o700)
    if paths.work is None:
        paths.workspace.mkdir(mode=0o700)
        return
    try:
        # A leftover of a claim that failed halfway (its ticket directory did not survive).
        shutil.rmtree(paths.work, ignore_errors=True)
        paths.work.mkdir(mode=0o711)
        # Whatever the umask: traversable (to the workspace), not listable, not writable.
        os.chmod(paths.work, 0o711)  # noqa: S103
        paths.script_workspace.mkdir(mode=0o700)
        if owner is not None:
            os.chown(paths.script_workspace, *owner)
        os.symlink(paths.script_workspace, paths.workspace)
    except BaseException:
        remove_ticket(paths.root)
        shutil.rmtree(paths.work, ignore_errors=True)
        raise


def remove_ticket(root: Path) -> None:
    """Delete a ticket directory and, when it is elsewhere, its workspace (blocking)."""
    with contextlib.suppress(OSError):
        work = TicketPaths.at(root).work
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def sync_claim(paths: TicketPaths) -> None:
    """Make the claim durable: required before the script may run or a PENDING is answered."""
    _fsync_path(paths.root.parent, os.O_RDONLY | os.O_DIRECTORY)


def sync_record(paths: TicketPaths) -> None:
    """Make the last ``save_record(durable=False)`` durable."""
    _fsync_path(paths.state)
    if paths.secrets.exists():
        _fsync_path(paths.secrets)
    _fsync_path(paths.root, os.O_RDONLY | os.O_DIRECTORY)


def save_first_record(paths: TicketPaths, record: TicketRecord) -> None:
    """Write the ticket's first record, not durably; in place when it is the first indeed.

    No temp file and rename for a first record: a crash halfway leaves a record that does not
    load, which a restart treats exactly like a missing one ("result unknown"), and there is no
    older one to keep. A ticket that already has a record gets the atomic replace.
    """
    if record.output_variables:
        save_record(paths, record, durable=False)  # a secrets file goes with it
        return
    try:
        fd = os.open(paths.state, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        save_record(paths, record, durable=False)
        return
    try:
        _write_fd(fd, _record_json(record))
    finally:
        os.close(fd)


def save_record(paths: TicketPaths, record: TicketRecord, *, durable: bool = True) -> None:
    """Persist the record; sensitive values go to the owner-only secrets file only."""
    secrets = {v.name: v.value for v in record.output_variables.values() if v.sensitive}
    if secrets or paths.secrets.exists():
        atomic_write(paths.secrets, json.dumps(secrets).encode(), 0o600, durable=durable)
    atomic_write(paths.state, _record_json(record), 0o600, durable=durable)


def _record_json(record: TicketRecord) -> bytes:
    doc: dict[str, Any] = {
        "ticket": record.ticket,
        "state": record.state.value,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "pid": record.pid,
        "pid_start_time": record.pid_start_time,
        "cgroup": record.cgroup,
        "exit_code": record.exit_code,
        "state_reason": record.state_reason,
        "failure_message": record.failure_message,
        "output_variables": [
            {"name": v.name, "value": "" if v.sensitive else v.value, "sensitive": v.sensitive}
            for v in record.output_variables.values()
        ],
        "artifacts": [
            {"name": a.name, "path": a.path, "size": a.size, "sha256": a.sha256}
            for a in record.artifacts
        ],
    }
    return json.dumps(doc).encode()


def load_record(paths: TicketPaths) -> TicketRecord:
    """Read a persisted record back, with sensitive values restored from the secrets file."""
    doc = json.loads(paths.state.read_bytes())
    secrets: dict[str, str] = {}
    if paths.secrets.exists():
        secrets = json.loads(paths.secrets.read_bytes())
    record = TicketRecord(
        ticket=doc["ticket"],
        state=ScriptState(doc["state"]),
        created_at=doc["created_at"],
        finished_at=doc["finished_at"],
        pid=doc["pid"],
        pid_start_time=doc["pid_start_time"],
        cgroup=doc["cgroup"],
        exit_code=doc["exit_code"],
        state_reason=doc["state_reason"],
        failure_message=doc["failure_message"],
        artifacts=[Artifact(**a) for a in doc["artifacts"]],
    )
    for v in doc["output_variables"]:
        value = secrets.get(v["name"], "") if v["sensitive"] else v["value"]
        record.set_output(Variable(v["name"], value, v["sensitive"]))
    return record
