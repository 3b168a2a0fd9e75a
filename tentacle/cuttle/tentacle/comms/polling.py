"""The polling transport: the Tentacle dials the server and serves its requests (RPC in reverse).

Each connection is one long-lived bidirectional stream. Requests arrive as frames naming a
TentacleService method; each runs in its own task so a long download never blocks a script start,
and its answers go back as Response frames. Both sides send heartbeats; silence past the timeout
means the peer is gone (a black-holed network sends no RST), and the stream is rebuilt after a
capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from cuttle.protocol import channel, pki
from cuttle.protocol.backoff import Backoff
from cuttle.protocol.errors import code_for_kind
from cuttle.protocol.v1 import polling_pb2 as pb
from cuttle.tentacle.services.handlers import (
    METHODS,
    TentacleHandlers,
    describe_error,
    tentacle_version,
)

log = structlog.get_logger(__name__)

POLL_METHOD = "/cuttle.protocol.v1.PollingService/Poll"
# Room for a Response frame's own fields around its payload (id varint, flags, tags).
_FRAME_OVERHEAD = 64
# Bounded so a fast producer (a 100,000-line watch) waits for the network instead of eating RAM.
OUTBOX_FRAMES = 64


@dataclass(frozen=True)
class PollingTarget:
    """Where to poll and which server certificates to accept there."""

    address: str
    trusted_certificates_pem: bytes


@dataclass(frozen=True)
class PollingSettings:
    """Timing of the polling connections; every number is configurable."""

    connections: int = 1
    heartbeat_interval: float = 10.0
    # Silence is noticed on the first tick past the timeout: interval + timeout <= 30 s, the
    # bound the issue sets for a black-holed server.
    heartbeat_timeout: float = 20.0
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 30.0


def silence_limit(heartbeat_timeout: float, server_heartbeat_interval: float) -> float:
    """How long a stream may hear nothing from the server before it is given up."""
    # Never before two of the server's beats went missing, whatever our own timeout says.
    return max(heartbeat_timeout, 2 * server_heartbeat_interval)


class _StreamLost(Exception):
    """The stream stopped hearing from the server."""


class PollingClient:
    """Keeps `connections` polling streams open to the server and serves requests on them."""

    def __init__(
        self,
        handlers: TentacleHandlers,
        identity: pki.Identity,
        target: Callable[[], PollingTarget],
        settings: PollingSettings,
    ) -> None:
        self._handlers = handlers
        self._identity = identity
        self._target = target
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: set[Any] = set()
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Open the connections in the background."""
        for index in range(max(1, self._settings.connections)):
            self._tasks.append(
                asyncio.create_task(self._run_connection(index), name=f"polling-{index}")
            )

    async def stop(self) -> None:
        """Close every stream and wait for the connection loops to end."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def reconnect(self) -> None:
        """Drop the current streams so they are rebuilt with the current trust (after a change)."""
        for call in list(self._calls):
            call.cancel()

    async def _run_connection(self, index: int) -> None:
        backoff = Backoff(
            initial=self._settings.reconnect_initial_delay,
            maximum=self._settings.reconnect_max_delay,
        )
        while True:
            target = self._target()
            try:
                await self._serve_stream(index, target, backoff)
            except asyncio.CancelledError:
                raise
            except _StreamLost as exc:
                log.warning("polling_stream_lost", connection=index, reason=str(exc))
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "polling_stream_failed",
                    connection=index,
                    code=exc.code().name,
                    details=exc.details(),
                )
            except Exception:
                log.exception("polling_stream_crashed", connection=index)
            delay = backoff.next_delay()
            log.info("polling_reconnect_scheduled", connection=index, delay=round(delay, 3))
            await asyncio.sleep(delay)

    async def _serve_stream(self, index: int, target: PollingTarget, backoff: Backoff) -> None:
        if not target.trusted_certificates_pem:
            raise _StreamLost("no trusted server certificate is configured")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=target.trusted_certificates_pem,
            private_key=self._identity.key_pem,
            certificate_chain=self._identity.certificate_pem,
        )
        outbox: asyncio.Queue[pb.TentacleFrame] = asyncio.Queue(OUTBOX_FRAMES)
        await outbox.put(
            pb.TentacleFrame(hello=pb.Hello(version=tentacle_version(), stream_index=index))
        )

        async def frames() -> AsyncIterator[pb.TentacleFrame]:
            while True:
                yield await outbox.get()

        async with grpc.aio.secure_channel(
            target.address, credentials, options=channel.client_options(pki.SERVER_NAME)
        ) as chan:
            poll = chan.stream_stream(
                POLL_METHOD,
                request_serializer=pb.TentacleFrame.SerializeToString,
                response_deserializer=pb.ServerFrame.FromString,
            )
            call = poll(frames())
            self._calls.add(call)
            inflight: dict[int, asyncio.Task[None]] = {}
            last_heard = time.monotonic()
            timeout = self._settings.heartbeat_timeout

            async def heartbeats() -> None:
                nonce = 0
                while True:
                    await asyncio.sleep(self._settings.heartbeat_interval)
                    if time.monotonic() - last_heard > timeout:
                        call.cancel()
                        return
                    nonce += 1
                    # Never wait for room: a dead peer is exactly what leaves the outbox full
                    # (nothing drains it), and waiting would stop the silence check above. A
                    # live peer that is merely slow hears the frames already queued.
                    with contextlib.suppress(asyncio.QueueFull):
                        outbox.put_nowait(pb.TentacleFrame(heartbeat=pb.Heartbeat(nonce=nonce)))

            beat = asyncio.create_task(heartbeats())
            try:
                async for frame in call:
                    last_heard = time.monotonic()
                    kind = frame.WhichOneof("kind")
                    if kind == "request":
                        request = frame.request
                        task = asyncio.create_task(self._serve_request(request, outbox))
                        inflight[request.request_id] = task
                        task.add_done_callback(_forget(inflight, request.request_id))
                    elif kind == "cancel":
                        running = inflight.pop(frame.cancel.request_id, None)
                        if running is not None:
                            running.cancel()
                    elif kind == "welcome":
                        backoff.reset()
                        timeout = silence_limit(
                            self._settings.heartbeat_timeout,
                            frame.welcome.heartbeat_interval_seconds,
                        )
                        self.connected.set()
                        log.info(
                            "polling_connected",
                            connection=index,
                            machine=frame.welcome.machine_name,
                            address=target.address,
                        )
                if beat.done():
                    raise _StreamLost(f"no frame from the server for {timeout:.0f}s")
                raise _StreamLost("the server closed the stream")
            except asyncio.CancelledError:
                if beat.done() and not beat.cancelled():
                    raise _StreamLost(f"no frame from the server for {timeout:.0f}s") from None
                raise
            finally:
                self._calls.discard(call)
                self.connected.clear()
                beat.cancel()
                for task in inflight.values():
                    task.cancel()
                await asyncio.gather(beat, *inflight.values(), return_exceptions=True)

    async def _serve_request(
        self, request: pb.Request, outbox: asyncio.Queue[pb.TentacleFrame]
    ) -> None:
        rid = request.request_id
        method = METHODS.get(request.method)
        if method is None:
            await outbox.put(_error(rid, "invalid_argument", f"unknown method {request.method!r}"))
            return
        try:
            message = method.request_type.FromString(request.payload)
            call = method.bind(self._handlers)
            if method.streaming:
                async for item in call(message):
                    frame = _answer(rid, request.method, item.SerializeToString(), False)
                    await outbox.put(frame)
                    if frame.response.error_kind:
                        return
                await outbox.put(pb.TentacleFrame(response=pb.Response(request_id=rid, end=True)))
            else:
                reply = await call(message)
                await outbox.put(_answer(rid, request.method, reply.SerializeToString(), True))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure goes back as a typed error
            kind, message_text = describe_error(exc)
            if kind == "internal":
                log.exception("request_failed", method=request.method)
            await outbox.put(_error(rid, kind, message_text))


def _forget(
    inflight: dict[int, asyncio.Task[None]], request_id: int
) -> Callable[[asyncio.Task[None]], None]:
    def done(_task: asyncio.Task[None]) -> None:
        inflight.pop(request_id, None)

    return done


def _answer(request_id: int, method: str, payload: bytes, end: bool) -> pb.TentacleFrame:
    if len(payload) + _FRAME_OVERHEAD > channel.MAX_MESSAGE_BYTES:
        # Sent, it would fail this stream and every request on it; as an error it fails only
        # this request, as a listening Tentacle's oversize reply does.
        return _error(
            request_id,
            "invalid_argument",
            f"the {method} answer of {len(payload)} bytes exceeds the "
            f"{channel.MAX_MESSAGE_BYTES}-byte message limit",
        )
    return pb.TentacleFrame(response=pb.Response(request_id=request_id, payload=payload, end=end))


def _error(request_id: int, kind: str, message: str) -> pb.TentacleFrame:
    return pb.TentacleFrame(
        response=pb.Response(
            request_id=request_id,
            end=True,
            status_code=code_for_kind(kind).value[0],
            status_message=message,
            error_kind=kind,
        )
    )
