"""What the server knows of a script on an agent, independent of any transport."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

FINISHED_STATES = frozenset(
    {"complete", "cancelled", "timed_out", "result_unknown", "failed_to_start"}
)


@dataclass(frozen=True, slots=True)
class LogRun:
    """Consecutive journal lines sharing one time, source and level: the unit of a log.

    ``text`` is the raw bytes of ``count`` lines joined by "\\n"; they have the sequences
    ``sequence`` to ``last_sequence``. The agent journals, sends and the store keeps runs, so a
    burst of output costs per run, not per line. Declared once: the wire, the engine and the
    store all use this type.
    """

    sequence: int
    time_ms: int
    source: int
    level: int
    text: bytes
    count: int = 1

    @property
    def last_sequence(self) -> int:
        """The sequence of the run's last line."""
        return self.sequence + self.count - 1


# No slots: count and size are computed once, on first use (a chunk may hold thousands of runs).
@dataclass(frozen=True)
class LogChunk:
    """Runs of one machine's lines as stored in a task's log, from `first_position` on.

    Positions number all of a task's lines across its machines; a chunk's lines have the
    consecutive positions first_position .. last_position, run after run.
    """

    first_position: int
    machine_name: str
    runs: tuple[LogRun, ...]

    @cached_property
    def count(self) -> int:
        """How many lines the chunk holds."""
        return sum(run.count for run in self.runs)

    @property
    def last_position(self) -> int:
        """The position of the chunk's last line."""
        return self.first_position + self.count - 1

    @cached_property
    def size(self) -> int:
        """Bytes of text the chunk holds."""
        return sum(len(run.text) for run in self.runs)


@dataclass(frozen=True, slots=True)
class RemoteVariable:
    """An input or output variable of a script run (an output marked sensitive is stored
    encrypted, see engine/script_run.py)."""

    name: str
    value: str
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file a script published: where it was on the agent, its size and SHA-256."""

    name: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ScriptStatus:
    """A ticket's state and a batch of its journal."""

    ticket: str
    state: str
    exit_code: int
    runs: tuple[LogRun, ...]
    last_sequence: int
    more_lines: bool
    output_variables: tuple[RemoteVariable, ...]
    artifacts: tuple[Artifact, ...]
    failure_message: str
    state_reason: str

    @property
    def finished(self) -> bool:
        """Whether the script will not change state again."""
        return self.state in FINISHED_STATES

    @property
    def succeeded(self) -> bool:
        """Whether the script ran to completion with exit code 0."""
        return self.state == "complete" and self.exit_code == 0


@dataclass(frozen=True, slots=True)
class ScriptFile:
    """A file sent with a script."""

    name: str
    content: bytes


@dataclass(frozen=True, slots=True)
class ScriptRequest:
    """What to run under a ticket."""

    ticket: str
    body: str
    syntax: str
    files: tuple[ScriptFile, ...] = ()
    variables: tuple[RemoteVariable, ...] = ()
    timeout_seconds: float = 0.0
    full_isolation: bool = False
    mutex_name: str = ""
    isolation_timeout_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What an agent says about itself."""

    version: str
    os: str
    hostname: str
    free_disk_bytes: int
    thumbprint: str
