"""A TCP forwarder between server and Tentacle that a test can cut, and that counts bytes.

`cut()` aborts every connection open through it (both sides see a reset, as when a link drops)
and `cut_at` does it once a number of bytes went through, in the middle of a request, while
new connections are still accepted: the client's channel, or the polling Tentacle,
reconnects as it would in the field. The byte counters give what crossed the wire, TLS
included.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target, on the running event loop."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.to_target = 0
        self.from_target = 0
        self.cuts = 0
        # Cut once `forwarded` reaches this (mid-request: gRPC cannot retry it transparently).
        self.cut_at: int | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1; returns it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def cut(self) -> None:
        """Reset every open connection (new ones are accepted)."""
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        """Stop listening and reset what is open."""
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(up_reader, writer, upstream=False)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for side in (writer, up_writer):
                self._writers.discard(side)
                side.transport.abort()

    @property
    def forwarded(self) -> int:
        """Bytes forwarded so far, both directions."""
        return self.to_target + self.from_target

    def _count(self, data: bytes, upstream: bool) -> None:
        if upstream:
            self.to_target += len(data)
        else:
            self.from_target += len(data)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(256 * 1024):
                if self.cut_at is not None and self.forwarded + len(data) >= self.cut_at:
                    data = data[: self.cut_at - self.forwarded]
                    self.cut_at = None
                    self._count(data, upstream)
                    writer.write(data)
                    self.cut()
                    return
                self._count(data, upstream)
                writer.write(data)
                await writer.drain()
