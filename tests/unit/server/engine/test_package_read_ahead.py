"""Package chunks are read and hashed one ahead of the one being sent, and never read late."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from cuttle.protocol.backoff import Backoff
from cuttle.server.domain.package_transfer import TransferBegin, TransferState
from cuttle.server.engine.package_acquisition import _Chunk, _Sender
from cuttle.server.errors import AgentRejected

BEGIN = TransferBegin(
    sha256="a" * 64, package_id="web", version="1.0.0", size=4 * 8, transfer_size=4 * 8
)


def _data(index: int) -> bytes:
    return bytes([index]) * 8


class _Reads:
    """A chunk source that records when each read starts and ends."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []
        self.events: dict[int, asyncio.Event] = {}

    def started_event(self, index: int) -> asyncio.Event:
        return self.events.setdefault(index, asyncio.Event())

    async def read(self, index: int) -> _Chunk:
        self.started.append(index)
        self.started_event(index).set()
        await asyncio.sleep(0)
        self.finished.append(index)
        data = _data(index)
        return _Chunk(data, hashlib.sha256(data).hexdigest())


class _Client:
    """The TentacleClient calls a transfer makes, answered in memory."""

    machine = "web-01"

    def __init__(self, reads: _Reads, *, refuse: int = -1, fail_at: int = -1) -> None:
        self.reads = reads
        self.sent: list[tuple[int, bytes, str]] = []
        self.refuse = refuse
        self.fail_at = fail_at

    async def begin_package_transfer(self, begin: TransferBegin) -> TransferState:
        return TransferState("t", 0, 0)

    async def send_package_chunk(
        self, transfer_id: str, index: int, data: bytes, sha256: str | None = None
    ) -> TransferState:
        assert sha256 == hashlib.sha256(data).hexdigest()
        self.sent.append((index, data, sha256))
        if index == self.fail_at:
            raise AgentRejected("web-01", "internal", "the agent broke")
        if index == self.refuse:
            self.refuse = -1
            return TransferState("t", index, index * 8, f"chunk {index} arrived corrupt")
        if index + 1 < 4:
            # The next chunk is being read while this one is with the Tentacle.
            async with asyncio.timeout(5):
                await self.reads.started_event(index + 1).wait()
        return TransferState("t", index + 1, (index + 1) * 8)

    async def commit_package_transfer(self, transfer_id: str) -> str:
        return ""


async def _quiet(_line: str) -> None:
    return None


def _send(client: _Client, reads: _Reads) -> str:
    sender = _Sender(client, _quiet, Backoff(initial=0.01, maximum=0.01))  # type: ignore[arg-type]

    async def run() -> str:
        return await sender.send(BEGIN, 4, reads.read)

    return asyncio.run(run())


def test_the_next_chunk_is_read_while_one_is_sent_and_each_goes_with_its_hash() -> None:
    reads = _Reads()
    client = _Client(reads)
    assert _send(client, reads) == ""
    assert [index for index, _, _ in client.sent] == [0, 1, 2, 3]
    assert [data for _, data, _ in client.sent] == [_data(i) for i in range(4)]
    assert reads.started == [0, 1, 2, 3]


def test_a_refused_chunk_is_read_again_and_the_one_read_ahead_is_dropped() -> None:
    reads = _Reads()
    client = _Client(reads, refuse=1)
    assert _send(client, reads) == ""
    assert [index for index, _, _ in client.sent] == [0, 1, 1, 2, 3]
    assert [data for _, data, _ in client.sent] == [_data(i) for i in (0, 1, 1, 2, 3)]
    # Chunk 2 was read ahead, dropped when chunk 1 was asked for again, and read again.
    assert reads.started == [0, 1, 2, 1, 2, 3]


def test_no_read_is_left_running_when_the_transfer_fails() -> None:
    # The caller closes the file as soon as send() ends: a read still running would use it.
    reads = _Reads()
    client = _Client(reads, fail_at=1)
    with pytest.raises(AgentRejected, match="the agent broke"):
        _send(client, reads)
    assert reads.started == [0, 1, 2]
    assert sorted(reads.finished) == sorted(reads.started)
