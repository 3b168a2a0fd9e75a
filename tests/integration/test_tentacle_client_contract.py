"""The TentacleClient contract: one suite, run against a listening, a polling and an in-memory
Tentacle.

For the two real transports the server side is the product's comms code in this process
(`Connections` builds the client; for polling, the real `PollingHub` on a real grpc.aio port
with pinned mTLS) and the agent is a real `tentacle` process. The third is the test double the
engine's unit tests use (tests/fakes/memory_tentacle.py): the agent's real handlers and script
manager in this process, reached without gRPC; passing this same suite is what makes it a
faithful stand-in. Every test below must pass unchanged for all three: nothing above `comms/`
may know which one a machine uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from cuttle.protocol import channel, pki
from cuttle.protocol.v1 import tentacle_pb2
from cuttle.server.comms.client import CHUNK_BYTES, INLINE_FILE_BYTES, TentacleClient
from cuttle.server.domain.scripts import LogRun, ScriptFile, ScriptRequest, ScriptStatus
from cuttle.server.errors import AgentRejected, InvalidArgument, UnknownTicket
from tests.fakes.memory_tentacle import MemoryTentacle
from tests.integration.harness.clients import LoopThread, tentacle_link
from tests.integration.harness.cluster import wait_for
from tests.integration.harness.tasks import processes_with

pytestmark = pytest.mark.integration

STDOUT = tentacle_pb2.LOG_SOURCE_STDOUT

T = TypeVar("T")


@dataclass
class Link:
    """An agent of one kind and the server-side client that reaches it."""

    style: str
    client: TentacleClient
    # The agent's home: its identity, uploads and tickets.
    home: Path
    loop: LoopThread
    # Whether the agent still serves (a request must never bring it down).
    alive: Callable[[], bool]
    # What the agent logged, shown when a test fails.
    log_tail: Callable[[], str]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the loop the client lives on."""
        return self.loop.run(coro, timeout)

    @property
    def tickets_dir(self) -> Path:
        """Where the agent keeps each ticket's workspace and journal."""
        return self.home / "tickets"


@contextmanager
def _memory_link(root: Path) -> Iterator[Link]:
    loop = LoopThread()
    tentacle = MemoryTentacle(root / "memory-01", "memory-01")
    try:
        loop.run(tentacle.start())
        yield Link(
            "memory",
            tentacle.client(),
            tentacle.home,
            loop,
            lambda: tentacle.serving,
            lambda: "calls: " + " ".join(tentacle.calls[-50:]),
        )
    finally:
        with suppress(AssertionError):
            loop.run(tentacle.stop(), timeout=30)
        loop.close()


@pytest.fixture(scope="module", params=["listening", "polling", "memory"])
def link(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Link]:
    """A real Tentacle of each comms style, or the in-memory one, and the client that reaches it."""
    style: str = request.param
    if style == "memory":
        with _memory_link(tmp_path_factory.mktemp(style)) as memory:
            yield memory
        return
    with tentacle_link(tmp_path_factory.mktemp(style), style) as linked:
        process = linked.tentacle.process
        assert process is not None
        yield Link(
            style, linked.client, linked.tentacle.home, linked.loop, process.alive, process.tail
        )


@pytest.fixture(autouse=True)
def _tentacle_log_on_failure(request: pytest.FixtureRequest, link: Link) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- tentacle ({link.style}) ---\n{link.log_tail()}")


def _ticket() -> str:
    return f"contract-{uuid.uuid4().hex}"


def _bash(body: str, *, files: tuple[ScriptFile, ...] = (), timeout: float = 0.0) -> ScriptRequest:
    return ScriptRequest(
        ticket=_ticket(), body=body, syntax="bash", files=files, timeout_seconds=timeout
    )


class Line(NamedTuple):
    """One line of a run, with the sequence the run implies for it."""

    sequence: int
    source: int
    level: int
    text: bytes


def _lines(runs: tuple[LogRun, ...]) -> list[Line]:
    """The runs a reply carried, line by line; checks each run's count against its text."""
    lines: list[Line] = []
    for run in runs:
        texts = run.text.split(b"\n")
        assert len(texts) == run.count, run
        lines.extend(
            Line(run.sequence + i, run.source, run.level, text) for i, text in enumerate(texts)
        )
    return lines


async def _watch_to_end(
    client: TentacleClient, ticket: str, after: int = 0
) -> tuple[list[Line], ScriptStatus]:
    """Every line the watch delivers, and the final status it ends with."""
    lines: list[Line] = []
    last: ScriptStatus | None = None
    async for status in client.watch_script(ticket, after):
        lines.extend(_lines(status.runs))
        last = status
    assert last is not None, "the watch ended without a status"
    return lines, last


async def _run(client: TentacleClient, request: ScriptRequest) -> tuple[list[Line], ScriptStatus]:
    await client.start_script(request)
    return await _watch_to_end(client, request.ticket)


async def _read_after(client: TentacleClient, ticket: str, after: int) -> list[Line]:
    """Every journaled line after a sequence, through get_status paging."""
    lines: list[Line] = []
    while True:
        status = await client.get_status(ticket, after)
        lines.extend(_lines(status.runs))
        if not status.more_lines:
            return lines
        after = status.runs[-1].last_sequence


def _stdout(lines: list[Line]) -> list[bytes]:
    return [line.text for line in lines if line.source == STDOUT]


def test_get_info_describes_the_agent(link: Link) -> None:
    info = link.run(link.client.get_info())
    certificate = (link.home / "certificate.pem").read_bytes()
    assert info.thumbprint == pki.thumbprint_of_pem(certificate)
    assert info.version
    assert info.os
    assert info.free_disk_bytes > 0


def test_start_and_watch_deliver_every_line_in_order(link: Link) -> None:
    request = _bash('for i in $(seq 1 300); do echo "line $i"; done')
    lines, final = link.run(_run(link.client, request))

    assert final.state == "complete"
    assert final.exit_code == 0
    assert final.succeeded
    assert _stdout(lines) == [f"line {i}".encode() for i in range(1, 301)]
    assert [line.sequence for line in lines] == list(range(1, len(lines) + 1))
    assert final.last_sequence == lines[-1].sequence


def test_get_status_after_sequence_returns_exactly_the_rest(link: Link) -> None:
    pad = "x" * 1500
    request = _bash(f'for i in $(seq 1 2500); do echo "row $i {pad}"; done')
    _, final = link.run(_run(link.client, request))
    assert final.succeeded
    # 2,500 lines of 1.5 KiB do not fit one reply (the agent pages them by bytes)...
    first = link.run(link.client.get_status(request.ticket, 0))
    assert first.more_lines
    assert 0 < first.runs[-1].last_sequence < final.last_sequence
    # ...and paging must lose nothing.
    everything = link.run(_read_after(link.client, request.ticket, 0))
    assert _stdout(everything) == [f"row {i} {pad}".encode() for i in range(1, 2501)]
    total = len(everything)
    assert total == final.last_sequence

    for after in (1, 137, 2001, total - 1, total):
        rest = link.run(_read_after(link.client, request.ticket, after))
        assert rest == everything[after:], f"after_sequence={after}"
        resumed, end = link.run(_watch_to_end(link.client, request.ticket, after))
        assert resumed == everything[after:], f"watch from {after}"
        assert end.state == "complete"


def test_duplicate_start_of_a_ticket_runs_one_process(link: Link, tmp_path: Path) -> None:
    side_effect = tmp_path / "runs.txt"
    request = _bash(f"echo ran >> '{side_effect}'; sleep 0.5; echo done")

    async def start_three_times_then_once_more() -> list[ScriptStatus]:
        first = await asyncio.gather(*(link.client.start_script(request) for _ in range(3)))
        _, final = await _watch_to_end(link.client, request.ticket)
        again = await link.client.start_script(request)
        return [*first, final, again]

    statuses = link.run(start_three_times_then_once_more())
    assert {s.ticket for s in statuses} == {request.ticket}
    assert statuses[-2].state == statuses[-1].state == "complete"
    assert side_effect.read_text() == "ran\n"


def test_a_watch_can_start_its_ticket_once(link: Link, tmp_path: Path) -> None:
    side_effect = tmp_path / "runs.txt"
    request = _bash(f"echo ran >> '{side_effect}'; echo 'line 1'; sleep 0.3; echo 'line 2'")

    async def watch_starting(after: int = 0) -> tuple[list[Line], ScriptStatus]:
        lines: list[Line] = []
        last: ScriptStatus | None = None
        async for status in link.client.watch_script(request.ticket, after, start=request):
            lines.extend(_lines(status.runs))
            last = status
        assert last is not None
        return lines, last

    async def twice_at_once_then_again() -> list[tuple[list[Line], ScriptStatus]]:
        both = await asyncio.gather(watch_starting(), watch_starting())
        return [*both, await watch_starting(1)]

    (first, end), (second, _), (rest, again) = link.run(twice_at_once_then_again())
    # One process, however many watches asked to start it; each saw every line.
    assert side_effect.read_text() == "ran\n"
    assert _stdout(first) == _stdout(second) == [b"line 1", b"line 2"]
    assert end.succeeded
    assert again.state == "complete"
    assert rest == first[1:]


def test_a_watch_starting_another_ticket_is_refused(link: Link) -> None:
    request = _bash("echo never")

    async def mismatched() -> None:
        async for _ in link.client.watch_script("some-other-ticket", start=request):
            pass

    with pytest.raises(AgentRejected, match="names ticket") as refused:
        link.run(mismatched())
    assert refused.value.kind == "invalid_argument"
    with pytest.raises(UnknownTicket):
        link.run(link.client.get_status(request.ticket))


def test_cancel_kills_the_process_tree_and_reports_cancelled(link: Link) -> None:
    marker = f"CONTRACT_MARK={uuid.uuid4().hex}".encode()
    request = _bash(f"export {marker.decode()}; sleep 60 & echo started; sleep 60")

    async def start_and_see_it_run() -> None:
        await link.client.start_script(request)
        watch = link.client.watch_script(request.ticket)
        try:
            async for status in watch:
                if b"started" in _stdout(_lines(status.runs)):
                    return
        finally:
            # Leaving the watch early must end the stream now, not when it is collected.
            await watch.aclose()  # type: ignore[attr-defined]

    link.run(start_and_see_it_run())
    wait_for(lambda: len(processes_with(marker)) == 2, 10, "both sleeps of the script")
    began = time.monotonic()
    status = link.run(link.client.cancel_script(request.ticket, "contract says stop"))
    assert status.state == "cancelled"
    assert "contract says stop" in status.state_reason
    assert time.monotonic() - began < 15
    # Confirmed means gone: no process of the tree is left once cancel has answered.
    assert processes_with(marker) == []


def test_complete_script_removes_the_ticket_and_its_workspace(link: Link) -> None:
    request = _bash("echo kept > result.txt; echo finished")
    _, final = link.run(_run(link.client, request))
    assert final.succeeded
    ticket_dir = link.tickets_dir / request.ticket
    assert (ticket_dir / "workspace" / "result.txt").read_text() == "kept\n"

    completed = link.run(link.client.complete_script(request.ticket))
    assert completed.state == "complete"
    assert not ticket_dir.exists()
    with pytest.raises(UnknownTicket):
        link.run(link.client.get_status(request.ticket))


def test_complete_scripts_removes_several_tickets_in_one_call(link: Link) -> None:
    requests = [_bash(f"echo batch {i}") for i in range(3)]

    async def run_all() -> None:
        for request in requests:
            _, final = await _run(link.client, request)
            assert final.succeeded

    link.run(run_all())
    tickets = [r.ticket for r in requests]
    assert all((link.tickets_dir / t).exists() for t in tickets)
    unknown = link.run(link.client.complete_scripts([*tickets, "never-started-here"]))
    assert unknown == ["never-started-here"]
    assert [t for t in tickets if (link.tickets_dir / t).exists()] == []
    # Completing again is harmless: they are simply unknown now.
    assert link.run(link.client.complete_scripts(tickets)) == tickets
    with pytest.raises(AgentRejected) as refused:
        link.run(link.client.complete_scripts(["../escape"]))
    assert refused.value.kind == "invalid_argument"


def test_complete_right_after_the_end_leaves_nothing_behind(link: Link) -> None:
    # As the engine does it: complete as soon as the watch reports the end, with no pause in
    # which the agent could finish writing the ticket's last state first.
    requests = [_bash(f"seq 1 20000; echo quick {i}") for i in range(12)]

    async def run_and_complete() -> None:
        for request in requests:
            _, final = await _run(link.client, request)
            assert final.succeeded
            await link.client.complete_script(request.ticket)

    link.run(run_and_complete())
    left = [r.ticket for r in requests if (link.tickets_dir / r.ticket).exists()]
    assert left == []


def test_unknown_ticket_is_a_typed_not_found(link: Link) -> None:
    ticket = "no-such-ticket"

    async def watch() -> None:
        await _watch_to_end(link.client, ticket)

    calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
        "get_status": lambda: link.client.get_status(ticket),
        "cancel": lambda: link.client.cancel_script(ticket, "why not"),
        "complete": lambda: link.client.complete_script(ticket),
        "watch": watch,
        "download": lambda: link.client.download(ticket, "file.txt", 1024),
    }
    for name, call in calls.items():
        with pytest.raises(UnknownTicket, match=ticket):
            link.run(call())
        assert link.alive(), name


def test_uploaded_file_is_used_by_the_script(link: Link) -> None:
    uploaded = os.urandom(INLINE_FILE_BYTES + 4321)  # above the inline limit: goes by upload
    inline = b"small file\n"
    request = _bash(
        "sha256sum uploaded.bin inline.txt",
        files=(ScriptFile("uploaded.bin", uploaded), ScriptFile("inline.txt", inline)),
    )
    lines, final = link.run(_run(link.client, request))
    assert final.succeeded, _stdout(lines)
    assert _stdout(lines) == [
        f"{hashlib.sha256(uploaded).hexdigest()}  uploaded.bin".encode(),
        f"{hashlib.sha256(inline).hexdigest()}  inline.txt".encode(),
    ]
    # An upload is consumed by the start that used it: nothing piles up on the agent.
    assert list((link.home / "uploads").iterdir()) == []

    # The upload primitive alone: a verified transfer id the agent accepts in a start.
    assert len(link.run(link.client.upload(b"x" * 10))) == 32


def test_file_larger_than_one_message_travels_both_ways(link: Link) -> None:
    # Larger than the biggest gRPC message either side accepts: only chunking can carry it.
    content = os.urandom(channel.MAX_MESSAGE_BYTES + CHUNK_BYTES // 2 + 12345)
    digest = hashlib.sha256(content).hexdigest()
    request = _bash(
        "sha256sum big.bin; cp big.bin copy.bin; new_octopusartifact copy.bin",
        files=(ScriptFile("big.bin", content),),
    )
    lines, final = link.run(_run(link.client, request), timeout=90)
    assert final.succeeded, _stdout(lines)
    assert _stdout(lines) == [f"{digest}  big.bin".encode()]
    (artifact,) = final.artifacts
    assert artifact.size == len(content)
    assert artifact.sha256 == digest

    downloaded = link.run(link.client.download(request.ticket, artifact.path, len(content)))
    assert downloaded == content


def test_artifact_download_is_verified_and_bounded(link: Link) -> None:
    report = "".join(f"check {i}: ok\n" for i in range(1000)).encode()
    request = _bash(
        'for i in $(seq 0 999); do echo "check $i: ok"; done > report.txt\n'
        "new_octopusartifact report.txt 'Health report'"
    )
    _, final = link.run(_run(link.client, request))
    assert final.succeeded
    (artifact,) = final.artifacts
    assert artifact.name == "Health report"
    assert artifact.size == len(report)
    assert artifact.sha256 == hashlib.sha256(report).hexdigest()

    assert link.run(link.client.download(request.ticket, artifact.path, 1 << 20)) == report
    with pytest.raises(InvalidArgument, match="limit"):
        link.run(link.client.download(request.ticket, artifact.path, len(report) - 1))
    with pytest.raises(UnknownTicket):
        link.run(link.client.download(request.ticket, "missing.txt", 1 << 20))
    with pytest.raises(AgentRejected) as escaped:
        link.run(link.client.download(request.ticket, "../state.json", 1 << 20))
    assert escaped.value.kind == "invalid_argument"


def test_script_past_its_time_limit_is_timed_out(link: Link) -> None:
    marker = uuid.uuid4().hex
    request = _bash(f"export CONTRACT_MARK={marker}; echo begin; sleep 60", timeout=1.0)
    began = time.monotonic()
    lines, final = link.run(_run(link.client, request))
    assert final.state == "timed_out"
    assert "time limit" in final.state_reason
    assert _stdout(lines) == [b"begin"]
    assert time.monotonic() - began < 15
    assert processes_with(f"CONTRACT_MARK={marker}".encode()) == []
