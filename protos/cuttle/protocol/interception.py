"""Running checks around a gRPC method handler's behaviour, for server interceptors.

A grpc.aio interceptor changes a call only by returning another RpcMethodHandler, and a handler
has four behaviour slots. How a wrapper must look depends on the behaviour it wraps: grpc.aio
treats a coroutine function as the reader/writer API (it writes with `context.write` and returns
once) and an async generator function as a stream written by `yield`. Getting that wrong fails
the call with UNKNOWN. This module matches the shape once; an interceptor only says what runs
around the behaviour, as an async context manager.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
Deserializer = Callable[[bytes], Any]
# Entered before the behaviour runs, exited after it finished (or failed, or was cancelled).
# It gets the request (the request iterator for client-streaming methods) and the context;
# aborting the call on entry means the behaviour never runs.
Around = Callable[[Any, Context], AbstractAsyncContextManager[object]]
Behaviour = Callable[[Any, Context], Any]


def _unchanged(deserialize: Deserializer | None) -> Deserializer | None:
    return deserialize


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    around: Around,
    *,
    adapt_deserializer: Callable[[Deserializer | None], Deserializer | None] = _unchanged,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same method handler with its behaviour run inside `around(request, context)`."""
    h = cast(Any, handler)
    deserialize = adapt_deserializer(h.request_deserializer)
    serialize = h.response_serializer
    if h.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _single_response(h.unary_unary, around), deserialize, serialize
        )
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streamed_response(h.unary_stream, around), deserialize, serialize
        )
    if h.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _single_response(h.stream_unary, around), deserialize, serialize
        )
    return grpc.stream_stream_rpc_method_handler(
        _streamed_response(h.stream_stream, around), deserialize, serialize
    )


def _single_response(behaviour: Behaviour, around: Around) -> Behaviour:
    async def wrapped(request: Any, context: Context) -> Any:
        async with around(request, context):
            return await behaviour(request, context)

    return wrapped


def _streamed_response(behaviour: Behaviour, around: Around) -> Behaviour:
    if not inspect.isasyncgenfunction(behaviour):
        # The reader/writer API: the wrapper must be a coroutine function too.
        return _single_response(behaviour, around)

    async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
        async with around(request, context):
            async for response in behaviour(request, context):
                yield response

    return wrapped
