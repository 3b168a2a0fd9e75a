"""Admin API edge: API-key authentication, permission checks, and typed error mapping.

Every call (except standard health checking and reflection) must carry `x-api-key`. The key
becomes a Principal (api/access.py), available to the handler for the call. Every service's
handlers authorize each call against what it touches (AdminService: api/fleet_access.py);
a `machine:register` key reaches only RegisterMachine and GetServerInfo. Server and store
errors become gRPC statuses here, once, with the error kind in trailing metadata so the client
can raise the same typed error, and validation failures carry google.rpc.BadRequest field
violations.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import OperationalError

from cuttle.protocol.errors import (
    ERROR_KIND_METADATA,
    MalformedRequest,
    code_for_kind,
    lenient_deserializer,
)
from cuttle.protocol.interception import wrap_handler
from cuttle.server.api import access
from cuttle.server.api.access import Principal
from cuttle.server.errors import ServerError, ValidationFailed
from cuttle.server.store import api_keys
from cuttle.server.store import errors as store_errors
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

# The stubs make ServerInterceptor generic; at runtime it is a plain class.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Handlers of these services check each call themselves (scoped roles).
SELF_AUTHORIZING_PREFIXES = (
    "/cuttle.protocol.v1.ModelService/",
    "/cuttle.protocol.v1.AccessService/",
    "/cuttle.protocol.v1.ReleaseService/",
    "/cuttle.protocol.v1.RunbookService/",
    "/cuttle.protocol.v1.DeploymentService/",
    "/cuttle.protocol.v1.InterruptionService/",
    "/cuttle.protocol.v1.DashboardService/",
    "/cuttle.protocol.v1.PackageService/",
    "/cuttle.protocol.v1.AdminService/",
)
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
    store_errors.FailedPrecondition: "failed_precondition",
    store_errors.InvalidArgument: "invalid_argument",
}


def error_kind(exc: BaseException) -> tuple[str, str]:
    """The wire kind and message of an exception raised by a handler."""
    if isinstance(exc, ServerError):
        return exc.kind, str(exc)
    if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
        # SQLite waited busy_timeout for another writer: nothing was done, a retry will do.
        return "busy", "the server's database is busy with other writes; retry shortly"
    if isinstance(exc, store_errors.ServerDiskFull):
        # Reads still work; a write waits for space, which the operator must make.
        return "disk_full", f"server disk full: nothing was written ({exc})"
    if isinstance(exc, store_errors.StoreUnavailable):
        return "busy", f"the server's database is unavailable; retry shortly ({exc})"
    for cls, kind in _STORE_KINDS.items():
        if isinstance(exc, cls):
            return kind, str(exc)
    return "internal", f"internal error ({type(exc).__name__}); see the server log"


def allowed(principal: Principal, method: str) -> bool:
    """Whether a caller may call a method at all (self-authorizing services decide later)."""
    if principal.is_system_admin:
        return True
    if principal.key_only_registers:
        # A Tentacle's bootstrap key: registering itself is all it is for.
        return method in REGISTER_METHODS
    if method.startswith(SELF_AUTHORIZING_PREFIXES):
        return True
    return principal.has_full_rights


class AdminInterceptor(_ServerInterceptor):
    """Authenticates, authorizes and maps errors for every admin call."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def _verify(self, plaintext: str) -> Principal | None:
        cached = self._cache.get(plaintext)
        now = time.monotonic()
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]

        def lookup(session: Any) -> Principal | None:
            record = api_keys.verify(session, plaintext)
            return None if record is None else access.principal_for(session, record)

        principal = await self._tx.read(lookup)
        if principal is not None:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[plaintext] = (now, principal)
        return principal

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
        try:
            principal = await self._verify(key) if key else None
        except ServerError as exc:
            return _refusal(handler, exc.kind, str(exc))
        if principal is None:
            message = "missing API key (x-api-key)" if not key else "invalid or revoked API key"
            return _refusal(handler, "unauthenticated", message)
        if not allowed(principal, method):
            needs = (
                "a machine:register key only registers machines"
                if principal.key_only_registers
                else "it needs full administrator rights"
            )
            return _refusal(
                handler,
                "permission_denied",
                f"{principal.name!r} may not call {method.rsplit('/', 1)[-1]}: {needs}",
            )
        return _with_error_mapping(handler, principal)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], kind: str, message: str) -> None:
    context.set_trailing_metadata(((ERROR_KIND_METADATA, kind),))
    await context.abort(code_for_kind(kind), message)


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], kind: str, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    @asynccontextmanager
    async def refuse(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        await _abort(context, kind, message)
        yield  # pragma: no cover - abort raised

    # The refusal must not depend on the request parsing: it is never looked at.
    return wrap_handler(handler, refuse, adapt_deserializer=lenient_deserializer)


def _with_error_mapping(
    handler: grpc.RpcMethodHandler[Any, Any], principal: Principal
) -> grpc.RpcMethodHandler[Any, Any]:
    @asynccontextmanager
    async def mapped(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        if isinstance(request, MalformedRequest):
            await _abort(context, "invalid_argument", request.message)
        access.CURRENT.set(principal)
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - every failure becomes a typed status
            await _fail(context, exc)

    # Garbage request bytes reach the handler as a MalformedRequest: INVALID_ARGUMENT, not UNKNOWN.
    return wrap_handler(handler, mapped, adapt_deserializer=lenient_deserializer)


async def _fail(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    kind, message = error_kind(exc)
    if kind == "internal":
        log.error("request_failed", exc_info=exc)
    if isinstance(exc, ValidationFailed):
        await _abort_with_violations(context, exc, message)
    await _abort(context, kind, message)


async def _abort_with_violations(
    context: grpc.aio.ServicerContext[Any, Any], exc: ValidationFailed, message: str
) -> None:
    # The standard rich error model: clients in any language find every field path and
    # message in google.rpc.BadRequest, not only the first one in the status text.
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
            for field, text in exc.violations
        ]
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message)
    status.details.add().Pack(detail)
    rich = rpc_status.to_status(status)
    context.set_trailing_metadata(
        (*rich.trailing_metadata, (ERROR_KIND_METADATA, "invalid_argument"))
    )
    await context.abort(rich.code, rich.details)
