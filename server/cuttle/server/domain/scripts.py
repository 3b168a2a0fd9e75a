"""What the server knows of a script on an agent, independent of any transport."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from cuttle.protocol.package_deployment import PackageDeployment

FINISHED_STATES = frozenset(
    {"complete", "cancelled", "timed_out", "result_unknown", "failed_to_start"}
)


# Not frozen, though nothing changes a run once made: a frozen dataclass costs four times as
# much to build, and the write path builds one per run received (tens of thousands a second).
@dataclass(slots=True)
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


@dataclass(frozen=True, slots=True)
class RunColumns:
    """Runs by column: every line's text in one bytes, and what each run says of its lines.

    Run i holds counts[i] lines (lengths[i] bytes of text), the first with sequences[i], all
    with times_ms[i], sources[i] and levels[i]. Reading back or printing a log then costs per
    chunk, not per run or line: the text goes out as it is, the columns as whole arrays.
    """

    # The lines of all runs joined by "\n" (no trailing newline).
    text: bytes
    counts: Sequence[int]
    lengths: Sequence[int]
    sequences: Sequence[int]
    times_ms: Sequence[int]
    sources: Sequence[int]
    levels: Sequence[int]

    @classmethod
    def of_runs(cls, runs: Iterable[LogRun]) -> RunColumns:
        """The columns of these runs (a run of no lines has nothing to give and is left out)."""
        kept = [run for run in runs if run.count]
        return cls(
            text=b"\n".join([run.text for run in kept]),
            counts=[run.count for run in kept],
            lengths=[len(run.text) for run in kept],
            sequences=[run.sequence for run in kept],
            times_ms=[run.time_ms for run in kept],
            sources=[run.source for run in kept],
            levels=[run.level for run in kept],
        )

    def runs(self) -> Iterator[LogRun]:
        """The runs, one by one (for callers that need them: a copy of each run's text)."""
        offset = 0
        text = self.text
        for count, length, sequence, time_ms, source, level in zip(
            self.counts,
            self.lengths,
            self.sequences,
            self.times_ms,
            self.sources,
            self.levels,
            strict=True,
        ):
            yield LogRun(sequence, time_ms, source, level, text[offset : offset + length], count)
            offset += length + 1


# No slots: count is computed once, on first use (a chunk may hold thousands of runs).
@dataclass(frozen=True)
class LogChunk:
    """Lines of one machine as stored in a task's log, from `first_position` on, by column.

    Positions number all of a task's lines across its machines; a chunk's lines have the
    consecutive positions first_position .. last_position, run after run.
    """

    first_position: int
    machine_name: str
    columns: RunColumns

    @classmethod
    def of_runs(cls, first_position: int, machine_name: str, runs: Iterable[LogRun]) -> LogChunk:
        """A chunk of these runs."""
        return cls(first_position, machine_name, RunColumns.of_runs(runs))

    @property
    def runs(self) -> tuple[LogRun, ...]:
        """The chunk's runs (built on each call: for tests and line-by-line readers)."""
        return tuple(self.columns.runs())

    @cached_property
    def count(self) -> int:
        """How many lines the chunk holds."""
        return sum(self.columns.counts)

    @property
    def last_position(self) -> int:
        """The position of the chunk's last line."""
        return self.first_position + self.count - 1

    @property
    def size(self) -> int:
        """Bytes of text the chunk holds."""
        return len(self.columns.text)


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
    arguments: tuple[str, ...] = ()
    package: PackageDeployment | None = None


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What an agent says about itself."""

    version: str
    os: str
    hostname: str
    free_disk_bytes: int
    thumbprint: str
