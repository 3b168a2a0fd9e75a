"""A Poll stream that ends fails its callers at once, even when its writer does not stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cuttle.protocol.v1 import polling_pb2 as pb
from cuttle.server.comms import polling
from cuttle.server.comms.polling import HubSettings, PollingHub
from cuttle.server.errors import Unreachable


class _StuckWriter:
    """A servicer context whose writes after the first never end, cancelled or not."""

    def __init__(self) -> None:
        self.written = 0
        self.release = asyncio.Event()

    async def write(self, frame: Any) -> None:
        self.written += 1
        if self.written == 1:
            return  # the welcome
        cancelled = False
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                cancelled = True  # not yet: as a send to a peer that died mid-write can be
        if cancelled:
            raise asyncio.CancelledError

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {details}")


def test_callers_learn_the_stream_is_gone_while_its_writer_is_still_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(polling, "peer_thumbprint", lambda context: "T")
    monkeypatch.setattr(polling, "_TASK_STOP_SECONDS", 0.2, raising=False)

    async def scenario() -> None:
        hub = PollingHub(HubSettings(heartbeat_interval=60.0), lambda thumbprint: "web-01")
        context = _StuckWriter()
        peer_gone = asyncio.Event()

        async def frames() -> AsyncIterator[pb.TentacleFrame]:
            await peer_gone.wait()
            return
            yield  # an async generator that ends when the peer goes

        served = asyncio.create_task(hub.serve(frames(), context))  # type: ignore[arg-type]

        async def watch() -> list[bytes]:
            return [p async for p in hub.request("web-01", "Watch", b"x", streaming=True)]

        caller = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(5):
                while context.written < 2:  # noqa: ASYNC110 - the stuck write is the setup
                    await asyncio.sleep(0.01)
            peer_gone.set()
            with pytest.raises(Unreachable, match="closed before the answer"):
                async with asyncio.timeout(2):
                    await caller
            assert not hub.connected("web-01")
            async with asyncio.timeout(2):
                await served  # bounded: the stuck writer is left behind, not waited for
        finally:
            context.release.set()  # whatever failed above, nothing is left running
            caller.cancel()
            await asyncio.gather(caller, served, return_exceptions=True)

    asyncio.run(scenario())
