"""Value objects of the script execution engine: requests, log runs and snapshots.

Plain dataclasses on purpose: the gRPC servicer converts them to protobuf at the edge.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from cuttle.protocol.package_deployment import PackageDeployment
from cuttle.tentacle.execution.errors import InvalidScript

__all__ = [
    "TERMINAL_STATES",
    "Artifact",
    "LogLevel",
    "LogRun",
    "LogSource",
    "ScriptFile",
    "ScriptSnapshot",
    "ScriptState",
    "StartCommand",
    "Syntax",
    "Variable",
    "check_relative_name",
    "check_ticket",
]

_TICKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ScriptState(enum.Enum):
    """Where a ticket is in its life."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    RESULT_UNKNOWN = "RESULT_UNKNOWN"
    FAILED_TO_START = "FAILED_TO_START"


TERMINAL_STATES = frozenset(
    {
        ScriptState.COMPLETE,
        ScriptState.CANCELLED,
        ScriptState.TIMED_OUT,
        ScriptState.RESULT_UNKNOWN,
        ScriptState.FAILED_TO_START,
    }
)


class Syntax(enum.Enum):
    """The interpreter a script body is written for."""

    BASH = "BASH"
    PYTHON = "PYTHON"
    SH = "SH"


class LogSource(enum.Enum):
    """Who wrote a log line; the numeric value is the journal's on-disk code."""

    STDOUT = 1
    STDERR = 2
    TENTACLE = 3


class LogLevel(enum.Enum):
    """How a line should be shown; the numeric value is the journal's on-disk code."""

    INFO = 1
    VERBOSE = 2
    HIGHLIGHT = 3
    WARNING = 4
    ERROR = 5


def check_ticket(ticket: str) -> str:
    """Return the ticket if it is a safe directory name, else raise InvalidScript."""
    if not isinstance(ticket, str) or not _TICKET.fullmatch(ticket):
        raise InvalidScript(
            f"invalid ticket {ticket!r}: expected [A-Za-z0-9][A-Za-z0-9._-]{{,127}}"
        )
    return ticket


def check_relative_name(name: str) -> PurePosixPath:
    """Return a workspace-relative path, refusing absolute paths and ``..`` components."""
    if not name or "\0" in name or "\\" in name:
        raise InvalidScript(f"invalid file name {name!r}")
    path = PurePosixPath(name)
    if (
        path.is_absolute()
        or any(part in ("..", "") for part in path.parts)
        or path == PurePosixPath()
    ):
        raise InvalidScript(f"file name {name!r} escapes the workspace")
    if path.parts[0] == ".cuttle":
        raise InvalidScript(f"file name {name!r} is reserved for the Tentacle")
    return path


@dataclass(frozen=True)
class ScriptFile:
    """A file written into the workspace before the script starts."""

    name: str
    content: bytes

    def __post_init__(self) -> None:
        check_relative_name(self.name)


@dataclass(frozen=True)
class Variable:
    """A named value; sensitive ones never reach argv, the environment, logs or plain files."""

    name: str
    value: str
    sensitive: bool = False

    def __repr__(self) -> str:
        shown = "'********'" if self.sensitive else repr(self.value)
        return f"Variable(name={self.name!r}, value={shown}, sensitive={self.sensitive})"


@dataclass(frozen=True)
class StartCommand:
    """Everything needed to start one script under a server-chosen ticket."""

    ticket: str
    body: str
    syntax: Syntax
    files: tuple[ScriptFile, ...] = ()
    variables: tuple[Variable, ...] = ()
    arguments: tuple[str, ...] = ()
    full_isolation: bool = False
    mutex_name: str = "default"
    isolation_timeout: float | None = None
    timeout: float | None = None
    package: PackageDeployment | None = None


@dataclass(frozen=True)
class LogRun:
    """Consecutive journaled lines sharing time, source and level; ``text`` is raw bytes.

    The lines are ``text.split(b"\\n")`` and have the sequences ``sequence`` to
    ``last_sequence``. Output moves through the Tentacle in runs so that a burst of thousands of
    lines costs a handful of Python objects, not thousands.
    """

    sequence: int
    time_unix_ms: int
    source: LogSource
    level: LogLevel
    text: bytes
    count: int = 1

    @property
    def last_sequence(self) -> int:
        """The sequence of the run's last line."""
        return self.sequence + self.count - 1

    def lines(self) -> list[bytes]:
        """The run's lines, one by one (for readers that want them; the hot path does not)."""
        return self.text.split(b"\n")


@dataclass(frozen=True)
class Artifact:
    """A file the script published; ``path`` is relative to the workspace."""

    name: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ScriptSnapshot:
    """The state of a ticket plus a batch of its journal; ``exit_code`` is -1 when unknown."""

    ticket: str
    state: ScriptState
    exit_code: int
    runs: tuple[LogRun, ...]
    last_sequence: int
    more_lines: bool
    output_variables: tuple[Variable, ...]
    artifacts: tuple[Artifact, ...]
    failure_message: str
    state_reason: str
