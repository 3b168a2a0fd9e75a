"""Admin API edge: API-key authentication, permission checks, and typed error mapping.

Every call (except standard health checking and reflection) must carry `x-api-key`. The key's
permissions decide what it may call: `admin` may do everything; `machine:register` only lets a
new Tentacle register itself. Server and store errors become gRPC statuses here, once, with the
error kind in trailing metadata so the client can raise the same typed error.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog

from cuttle.protocol.errors import (
    ERROR_KIND_METADATA,
    MalformedRequest,
    code_for_kind,
    lenient_deserializer,
)
from cuttle.server.engine.transactions import Transactions
from cuttle.server.errors import ServerError
from cuttle.server.store import api_keys
from cuttle.server.store import errors as store_errors
from cuttle.server.store.records import ApiKeyRecord

log = structlog.get_logger(__name__)

# The stubs make ServerInterceptor generic; at runtime it is a plain class.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
REGISTER_METHODS = frozenset(
    {
        "/cuttle.protocol.v1.AdminService/RegisterMachine",
        "/cuttle.protocol.v1.AdminService/GetServerInfo",
    }
)
# A verified key is trusted for this long before it is looked up again (revocation delay).
KEY_CACHE_SECONDS = 5.0

_STORE_KINDS: dict[type[Exception], str] = {
    store_errors.NotFound: "not_found",
    store_errors.Conflict: "conflict",
    store_errors.InvalidArgument: "invalid_argument",
}


def error_kind(exc: BaseException) -> tuple[str, str]:
    """The wire kind and message of an exception raised by a handler."""
    if isinstance(exc, ServerError):
        return exc.kind, str(exc)
    for cls, kind in _STORE_KINDS.items():
        if isinstance(exc, cls):
            return kind, str(exc)
    return "internal", f"internal error ({type(exc).__name__}); see the server log"


def allowed(key: ApiKeyRecord, method: str) -> bool:
    """Whether a key's permissions allow calling a method."""
    permissions = set(key.permissions)
    if "admin" in permissions:
        return True
    return method in REGISTER_METHODS and "machine:register" in permissions


class AdminInterceptor(_ServerInterceptor):
    """Authenticates, authorizes and maps errors for every admin call."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx
        self._cache: dict[str, tuple[float, ApiKeyRecord]] = {}

    async def _verify(self, plaintext: str) -> ApiKeyRecord | None:
        cached = self._cache.get(plaintext)
        now = time.monotonic()
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        record = await self._tx.run(lambda s: api_keys.verify(s, plaintext))
        if record is not None:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[plaintext] = (now, record)
        return record

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        metadata = dict(cast(Any, details.invocation_metadata) or ())
        key = metadata.get("x-api-key", "")
        record = await self._verify(key) if key else None
        if record is None:
            message = "missing API key (x-api-key)" if not key else "invalid or revoked API key"
            return _refusal(handler, "unauthenticated", message)
        if not allowed(record, method):
            return _refusal(
                handler,
                "permission_denied",
                f"API key {record.name!r} may not call {method.rsplit('/', 1)[-1]}",
            )
        return _with_error_mapping(handler)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], kind: str, message: str) -> None:
    context.set_trailing_metadata(((ERROR_KIND_METADATA, kind),))
    await context.abort(code_for_kind(kind), message)


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], kind: str, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    h = cast(Any, handler)

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _abort(context, kind, message)

    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await _abort(context, kind, message)
        yield None  # pragma: no cover - abort raised

    # The refusal must not depend on the request parsing: it is never looked at.
    deserialize = lenient_deserializer(h.request_deserializer)
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, deserialize, h.response_serializer)
    return grpc.unary_unary_rpc_method_handler(unary, deserialize, h.response_serializer)


def _with_error_mapping(
    handler: grpc.RpcMethodHandler[Any, Any],
) -> grpc.RpcMethodHandler[Any, Any]:
    h = cast(Any, handler)
    # Garbage request bytes reach the handler as a MalformedRequest: INVALID_ARGUMENT, not UNKNOWN.
    deserialize = lenient_deserializer(h.request_deserializer)
    if h.unary_unary is not None:
        inner = h.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, MalformedRequest):
                await _abort(context, "invalid_argument", request.message)
            try:
                return await inner(request, context)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a typed status
                await _fail(context, exc)

        return grpc.unary_unary_rpc_method_handler(unary, deserialize, h.response_serializer)
    if h.unary_stream is not None:
        inner_stream = h.unary_stream

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if isinstance(request, MalformedRequest):
                await _abort(context, "invalid_argument", request.message)
            try:
                async for item in inner_stream(request, context):
                    yield item
            except Exception as exc:  # noqa: BLE001 - every failure becomes a typed status
                await _fail(context, exc)

        return grpc.unary_stream_rpc_method_handler(stream, deserialize, h.response_serializer)
    return handler


async def _fail(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    kind, message = error_kind(exc)
    if kind == "internal":
        log.error("request_failed", exc_info=exc)
    await _abort(context, kind, message)
