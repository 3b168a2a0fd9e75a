"""wrap_handler: checks run around every kind of behaviour, in both response-stream styles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from cuttle.protocol.interception import wrap_handler

Context = grpc.aio.ServicerContext[Any, Any]


def _same(data: bytes) -> bytes:
    return data


def _upper(data: bytes) -> bytes:
    return data.upper()


async def _unary(request: bytes, context: Context) -> bytes:
    return request + b"!"


async def _generated(request: bytes, context: Context) -> AsyncIterator[bytes]:
    for part in request.split(b","):
        yield part


async def _written(request: bytes, context: Context) -> None:
    # The reader/writer style, as grpc_health's Watch and the polling stream use it.
    for part in request.split(b","):
        await context.write(part)


async def _joined(requests: AsyncIterator[bytes], context: Context) -> bytes:
    return b"+".join([r async for r in requests])


async def _echoed(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def _echoed_by_writing(requests: AsyncIterator[bytes], context: Context) -> None:
    async for request in requests:
        await context.write(request)


async def _failing(request: bytes, context: Context) -> bytes:
    raise ValueError("boom")


HANDLERS: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
    "Unary": grpc.unary_unary_rpc_method_handler(_unary, _same, _same),
    "Generated": grpc.unary_stream_rpc_method_handler(_generated, _same, _same),
    "Written": grpc.unary_stream_rpc_method_handler(_written, _same, _same),
    "Joined": grpc.stream_unary_rpc_method_handler(_joined, _same, _same),
    "Echoed": grpc.stream_stream_rpc_method_handler(_echoed, _same, _same),
    "EchoedByWriting": grpc.stream_stream_rpc_method_handler(_echoed_by_writing, _same, _same),
    "Failing": grpc.unary_unary_rpc_method_handler(_failing, _same, _same),
}


class Recorder:
    """An `around` that logs entry and exit, refuses b"deny", and maps ValueError."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @asynccontextmanager
    async def around(self, request: Any, context: Context) -> AsyncIterator[None]:
        if request == b"deny":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
        self.events.append("enter")
        try:
            yield
        except ValueError as exc:
            self.events.append("mapped")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        finally:
            self.events.append("exit")


Scenario = Callable[[grpc.aio.Channel], Awaitable[Any]]


def _serve(recorder: Recorder, scenario: Scenario, **wrap: Any) -> Any:
    async def run() -> Any:
        server = grpc.aio.server()
        wrapped = {name: wrap_handler(h, recorder.around, **wrap) for name, h in HANDLERS.items()}
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("test.Wrapped", wrapped)]
        )
        local = grpc.LocalConnectionType.LOCAL_TCP
        port = server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials(local))
        await server.start()
        try:
            credentials = grpc.local_channel_credentials(local)
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as chan:
                return await scenario(chan)
        finally:
            await server.stop(None)

    return asyncio.run(run())


async def _requests() -> AsyncIterator[bytes]:
    for item in (b"a", b"b"):
        yield item


async def _finish(call: Any, kind: str) -> Any:
    if kind.endswith("stream"):
        return [item async for item in call]
    return await call


@pytest.mark.parametrize(
    ("method", "kind", "expected"),
    [
        ("Unary", "unary_unary", b"x!"),
        ("Generated", "unary_stream", [b"a", b"b"]),
        ("Written", "unary_stream", [b"a", b"b"]),
        ("Joined", "stream_unary", b"a+b"),
        ("Echoed", "stream_stream", [b"a", b"b"]),
        ("EchoedByWriting", "stream_stream", [b"a", b"b"]),
    ],
)
def test_every_kind_runs_inside_around(method: str, kind: str, expected: Any) -> None:
    recorder = Recorder()

    async def scenario(chan: grpc.aio.Channel) -> Any:
        multicallable = getattr(chan, kind)(f"/test.Wrapped/{method}", _same, _same)
        request = {"unary_unary": b"x", "unary_stream": b"a,b"}.get(kind) or _requests()
        return await _finish(multicallable(request, timeout=5), kind)

    assert _serve(recorder, scenario) == expected
    assert recorder.events == ["enter", "exit"]


def test_aborting_on_entry_means_the_behaviour_never_runs() -> None:
    recorder = Recorder()

    async def scenario(chan: grpc.aio.Channel) -> tuple[grpc.StatusCode, grpc.StatusCode]:
        codes = []
        for method, kind in (("Unary", "unary_unary"), ("Written", "unary_stream")):
            multicallable = getattr(chan, kind)(f"/test.Wrapped/{method}", _same, _same)
            try:
                await _finish(multicallable(b"deny", timeout=5), kind)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
        return codes[0], codes[1]

    denied = grpc.StatusCode.PERMISSION_DENIED
    assert _serve(recorder, scenario) == (denied, denied)
    assert recorder.events == []


def test_a_failure_of_the_behaviour_reaches_around() -> None:
    recorder = Recorder()

    async def scenario(chan: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
        try:
            await chan.unary_unary("/test.Wrapped/Failing", _same, _same)(b"x", timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        raise AssertionError("the call succeeded")

    assert _serve(recorder, scenario) == (grpc.StatusCode.FAILED_PRECONDITION, "boom")
    assert recorder.events == ["enter", "mapped", "exit"]


def test_the_request_deserializer_can_be_adapted() -> None:
    recorder = Recorder()

    def adapt(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        assert deserialize is _same
        return _upper

    async def scenario(chan: grpc.aio.Channel) -> bytes:
        result: bytes = await chan.unary_unary("/test.Wrapped/Unary", _same, _same)(b"x", timeout=5)
        return result

    assert _serve(recorder, scenario, adapt_deserializer=adapt) == b"X!"
