"""Error kinds that cross the wire between server, Tentacle and admin client.

A gRPC status code says how bad; the kind says what happened, so the receiving side can raise
the same typed error the sender meant. Listening transports carry it in trailing metadata,
polling transports in the Response frame.

    kind                 status code            meaning
    not_found            NOT_FOUND              the named thing does not exist
    conflict             ALREADY_EXISTS         it exists already
    failed_precondition  FAILED_PRECONDITION    its state forbids it (in use, stale revision)
    invalid_argument     INVALID_ARGUMENT       the request is malformed; nothing was done
    permission_denied    PERMISSION_DENIED      the caller may not do this
    unauthenticated      UNAUTHENTICATED        no or bad API key / certificate
    not_delivered        UNAVAILABLE            the request never reached the agent: safe to retry
    unreachable          UNAVAILABLE            the agent could not be reached (refused, timed out)
    busy                 UNAVAILABLE            the server's database is busy: retry shortly
    disk_full            RESOURCE_EXHAUSTED     the server's disk is full: nothing was written
    untrusted            UNAVAILABLE            the peer presented a certificate we do not trust
    internal             INTERNAL               a bug: the message says where
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

ERROR_KIND_METADATA = "cuttle-error-kind"

KIND_TO_CODE: dict[str, grpc.StatusCode] = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "conflict": grpc.StatusCode.ALREADY_EXISTS,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "not_delivered": grpc.StatusCode.UNAVAILABLE,
    "unreachable": grpc.StatusCode.UNAVAILABLE,
    "busy": grpc.StatusCode.UNAVAILABLE,
    "disk_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "untrusted": grpc.StatusCode.UNAVAILABLE,
    "cancelled": grpc.StatusCode.CANCELLED,
    "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "internal": grpc.StatusCode.INTERNAL,
}

_CODE_TO_DEFAULT_KIND: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ALREADY_EXISTS: "conflict",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.OUT_OF_RANGE: "invalid_argument",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "invalid_argument",
    # A method the peer does not have (an older version): not understood, nothing was done.
    grpc.StatusCode.UNIMPLEMENTED: "invalid_argument",
    grpc.StatusCode.PERMISSION_DENIED: "permission_denied",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.UNAVAILABLE: "unreachable",
    grpc.StatusCode.CANCELLED: "cancelled",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
}


def code_for_kind(kind: str) -> grpc.StatusCode:
    """The gRPC status code that carries an error kind."""
    return KIND_TO_CODE.get(kind, grpc.StatusCode.INTERNAL)


def kind_for_code(code: grpc.StatusCode, metadata_kind: str | None = None) -> str:
    """The error kind for a received status, preferring the sender's explicit kind."""
    if metadata_kind and metadata_kind in KIND_TO_CODE:
        return metadata_kind
    return _CODE_TO_DEFAULT_KIND.get(code, "internal")


def code_from_number(number: int) -> grpc.StatusCode:
    """Map a numeric status code (as carried in polling frames) back to the enum."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def explicit_kind(error: grpc.aio.AioRpcError) -> str | None:
    """The error kind the sender put in trailing metadata, if it did."""
    trailing = error.trailing_metadata()
    if not trailing:
        return None
    # The stubs type metadata loosely; at runtime it is a sequence of (key, value) pairs.
    pairs = cast("Iterable[tuple[str, str | bytes]]", trailing)
    for key, value in pairs:
        if key == ERROR_KIND_METADATA:
            return value if isinstance(value, str) else value.decode()
    return None


def kind_from_rpc_error(error: grpc.aio.AioRpcError) -> str:
    """The error kind of a failed call, from its trailing metadata or its status code."""
    return kind_for_code(error.code(), explicit_kind(error))


class MalformedRequest:
    """Stands in for a request whose bytes did not parse, so its handler can refuse it clearly."""

    def __init__(self, detail: str) -> None:
        self.message = f"malformed request: {detail}"


def lenient_deserializer(
    deserialize: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer: bytes that do not parse give a MalformedRequest.

    grpc.aio answers a deserializer's exception with UNKNOWN and logs a traceback; a peer
    sending garbage deserves INVALID_ARGUMENT saying so, and the handler can only send that
    if it is called.
    """
    if deserialize is None:  # a handler that takes raw bytes has nothing to parse
        return None
    parse_strictly = deserialize

    def parse(data: bytes) -> Any:
        try:
            return parse_strictly(data)
        except DecodeError as exc:
            return MalformedRequest(str(exc))

    return parse
