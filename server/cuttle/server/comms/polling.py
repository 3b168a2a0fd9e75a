"""The polling transport: requests wait in a per-machine queue until one of its streams takes them.

A polling Tentacle keeps one or more Poll streams open to this server. Each stream runs a
dispatcher that takes the next pending request of its machine, writes it as a Request frame and
routes the Response frames back to the caller. A request nobody picks up within the pickup
timeout fails with NotDelivered (safe to retry); once written to a stream it has no pickup
timeout, and if that stream dies before the answer the caller gets Unreachable ("lost").
Heartbeats go both ways; a stream silent past the timeout is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog

from cuttle.protocol import channel
from cuttle.protocol.pinning import PinnedPeers, peer_thumbprint
from cuttle.protocol.v1 import polling_pb2 as pb
from cuttle.server.comms.errors_wire import from_frame
from cuttle.server.errors import AgentRejected, NotDelivered, Unreachable

log = structlog.get_logger(__name__)

_END = object()
# Room for a Request frame's own fields around its payload (id varint, method name, tags).
_FRAME_OVERHEAD = 64
# How long a closing stream waits for its reader, writer, dispatcher and heartbeat to end.
_TASK_STOP_SECONDS = 5.0


@dataclass(frozen=True)
class HubSettings:
    """Timing of polling; every number is configurable."""

    pickup_timeout: float = 120.0
    heartbeat_interval: float = 10.0
    # Silence is noticed on the first tick past the timeout: interval + timeout <= 30 s.
    heartbeat_timeout: float = 20.0


@dataclass(eq=False)
class _Pending:
    method: str
    payload: bytes
    streaming: bool
    answers: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    picked: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: bool = False
    request_id: int = 0
    stream: _Stream | None = None


@dataclass(eq=False)
class _Stream:
    machine: str
    outbox: asyncio.Queue[pb.ServerFrame] = field(default_factory=lambda: asyncio.Queue(64))
    inflight: dict[int, _Pending] = field(default_factory=dict)


class PollingHub:
    """Pending requests per machine and the streams that serve them."""

    def __init__(self, settings: HubSettings, resolve: Callable[[str], str | None]) -> None:
        self.settings = settings
        # thumbprint -> machine name of a registered polling machine, or None.
        self._resolve = resolve
        self._queues: dict[str, asyncio.Queue[_Pending]] = {}
        self._streams: dict[str, set[_Stream]] = {}
        self._ids = itertools.count(1)

    def _queue(self, machine: str) -> asyncio.Queue[_Pending]:
        return self._queues.setdefault(machine.lower(), asyncio.Queue())

    def connected(self, machine: str) -> bool:
        """Whether the machine has at least one open stream."""
        return bool(self._streams.get(machine.lower()))

    def stream_count(self) -> int:
        """Open streams over all machines."""
        return sum(len(s) for s in self._streams.values())

    async def request(
        self,
        machine: str,
        method: str,
        payload: bytes,
        *,
        streaming: bool,
        answer_timeout: float | None = None,
    ) -> AsyncIterator[bytes]:
        """Queue a request for a machine and yield the payloads it answers with."""
        if len(payload) + len(method) + _FRAME_OVERHEAD > channel.MAX_MESSAGE_BYTES:
            # Written to a stream, it would fail the stream itself and every request on it;
            # refused here it is the same typed error a listening channel gives.
            raise AgentRejected(
                machine,
                "invalid_argument",
                f"{method} request of {len(payload)} bytes exceeds the "
                f"{channel.MAX_MESSAGE_BYTES}-byte message limit",
            )
        pending = _Pending(method, payload, streaming)
        self._queue(machine).put_nowait(pending)
        try:
            async with asyncio.timeout(self.settings.pickup_timeout):
                await pending.picked.wait()
        except TimeoutError:
            pending.abandoned = True
            raise NotDelivered(
                f"{machine} did not pick up {method} within {self.settings.pickup_timeout:g}s "
                "(is its Tentacle running and connected?); it was not delivered and is safe "
                "to retry"
            ) from None
        finished = False
        try:
            while True:
                try:
                    async with asyncio.timeout(answer_timeout):
                        answer = await pending.answers.get()
                except TimeoutError:
                    raise Unreachable(
                        machine, "timed out", f"no answer to {method} in {answer_timeout:g}s"
                    ) from None
                if answer is _END:
                    finished = True
                    return
                if isinstance(answer, BaseException):
                    finished = True
                    raise answer
                yield answer
        finally:
            stream = pending.stream
            if stream is not None:
                stream.inflight.pop(pending.request_id, None)
                if not finished:
                    # The caller stopped listening (e.g. a watch it no longer needs).
                    with contextlib.suppress(asyncio.QueueFull):
                        stream.outbox.put_nowait(
                            pb.ServerFrame(cancel=pb.CancelRequest(request_id=pending.request_id))
                        )

    def end_machine(self, machine: str) -> None:
        """Fail everything queued for a machine (it was removed)."""
        queue = self._queues.pop(machine.lower(), None)
        while queue is not None and not queue.empty():
            pending = queue.get_nowait()
            pending.abandoned = True

    async def serve(
        self,
        requests: AsyncIterator[pb.TentacleFrame],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Run one Poll stream until the agent leaves, goes silent, or is removed."""
        thumbprint = peer_thumbprint(context)
        machine = self._resolve(thumbprint) if thumbprint else None
        if machine is None:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "this certificate is not registered as a polling machine",
            )
            return
        stream = _Stream(machine)
        key = machine.lower()
        self._streams.setdefault(key, set()).add(stream)
        last_heard = time.monotonic()
        log.info("polling_stream_opened", machine=machine, streams=len(self._streams[key]))

        async def read() -> None:
            nonlocal last_heard
            async for frame in requests:
                last_heard = time.monotonic()
                if frame.WhichOneof("kind") == "response":
                    self._route(stream, frame.response)

        async def write() -> None:
            await context.write(
                pb.ServerFrame(
                    welcome=pb.Welcome(
                        machine_name=machine,
                        heartbeat_interval_seconds=self.settings.heartbeat_interval,
                    )
                )
            )
            while True:
                frame = await stream.outbox.get()
                await context.write(frame)

        async def dispatch() -> None:
            queue = self._queue(machine)
            while True:
                pending = await queue.get()
                if pending.abandoned:
                    continue
                pending.request_id = next(self._ids)
                pending.stream = stream
                stream.inflight[pending.request_id] = pending
                await stream.outbox.put(
                    pb.ServerFrame(
                        request=pb.Request(
                            request_id=pending.request_id,
                            method=pending.method,
                            payload=pending.payload,
                        )
                    )
                )
                pending.picked.set()

        async def heartbeat() -> None:
            nonce = 0
            while True:
                await asyncio.sleep(self.settings.heartbeat_interval)
                if time.monotonic() - last_heard > self.settings.heartbeat_timeout:
                    log.warning(
                        "polling_stream_silent",
                        machine=machine,
                        seconds=round(time.monotonic() - last_heard, 1),
                    )
                    return
                nonce += 1
                # Never wait for room: a dead peer is exactly what leaves the outbox full
                # (nothing drains it), and waiting would stop the silence check above.
                with contextlib.suppress(asyncio.QueueFull):
                    stream.outbox.put_nowait(pb.ServerFrame(heartbeat=pb.Heartbeat(nonce=nonce)))

        tasks = [
            asyncio.create_task(read()),
            asyncio.create_task(write()),
            asyncio.create_task(dispatch()),
            asyncio.create_task(heartbeat()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            # The stream's callers learn first, before anything here is awaited: a task that
            # does not end at once (a write to a peer that died mid-send) must not keep a
            # deployment waiting on a stream that is gone, nor the stream counted as open.
            self._streams.get(key, set()).discard(stream)
            if not self._streams.get(key):
                self._streams.pop(key, None)
            lost = Unreachable(machine, "lost", "the polling stream closed before the answer")
            for pending in stream.inflight.values():
                pending.answers.put_nowait(lost)
            stream.inflight.clear()
            log.info("polling_stream_closed", machine=machine)
            done, stuck = await asyncio.wait(tasks, timeout=_TASK_STOP_SECONDS)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: how the stream ended was handled above
            if stuck:
                log.warning("polling_stream_tasks_stuck", machine=machine, tasks=len(stuck))

    def _route(self, stream: _Stream, response: pb.Response) -> None:
        pending = stream.inflight.get(response.request_id)
        if pending is None:
            return  # the caller gave up on it
        if response.status_code != 0 or response.error_kind:
            pending.answers.put_nowait(
                from_frame(
                    stream.machine,
                    response.status_code,
                    response.error_kind,
                    response.status_message,
                )
            )
            stream.inflight.pop(response.request_id, None)
            return
        # Streaming answers come as frames with end=False and a bare end=True; a unary answer
        # is one end=True frame whose payload may be empty (an all-default message).
        if not response.end or not pending.streaming:
            pending.answers.put_nowait(response.payload)
        if response.end:
            pending.answers.put_nowait(_END)
            stream.inflight.pop(response.request_id, None)


class PollingTransport:
    """Transport for one polling machine, over the hub."""

    def __init__(self, machine: str, hub: PollingHub) -> None:
        self.machine = machine
        self._hub = hub

    async def unary(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        """One call: the pickup timeout applies until delivery, `timeout` after it."""
        answers = [
            answer
            async for answer in self._hub.request(
                self.machine, method, payload, streaming=False, answer_timeout=timeout
            )
        ]
        if answers:
            return answers[0]
        raise Unreachable(self.machine, "lost", f"{method} ended without an answer")

    async def stream(self, method: str, payload: bytes) -> AsyncIterator[bytes]:
        """A server-streaming call relayed over the polling stream."""
        async for answer in self._hub.request(self.machine, method, payload, streaming=True):
            yield answer

    async def close(self) -> None:
        """Nothing to release: streams belong to the agent."""


def polling_server(hub: PollingHub, peers: PinnedPeers) -> grpc.aio.Server:
    """A gRPC server whose PollingService/Poll streams are served by the hub, pinned peers only.

    The caller binds it with `add_secure_port(address, peers.credentials())` and starts it.
    """
    server = grpc.aio.server(interceptors=[peers.interceptor()], options=channel.server_options())

    async def poll(
        requests: AsyncIterator[pb.TentacleFrame], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await hub.serve(requests, context)

    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "cuttle.protocol.v1.PollingService",
                {
                    "Poll": grpc.stream_stream_rpc_method_handler(
                        poll,
                        request_deserializer=pb.TentacleFrame.FromString,
                        response_serializer=pb.ServerFrame.SerializeToString,
                    )
                },
            )
        ]
    )
    return server
