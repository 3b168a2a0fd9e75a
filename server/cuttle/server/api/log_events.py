"""Task event streams whose log messages are serialized before gRPC sees them.

RunScript and WatchTask yield a read-back's log as bytes already in TaskEvent's wire form
(convert.log_blocks_event): building a protobuf message of megabytes of text and serializing it
again would copy that text twice more. This interceptor gives those two methods a response
serializer that passes such bytes through and serializes every other event as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc

from cuttle.protocol.v1 import admin_pb2 as apb

# The stubs make ServerInterceptor generic; at runtime it is a plain class.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

# The methods whose events may come serialized already.
LOG_STREAMS = frozenset(
    {
        "/cuttle.protocol.v1.AdminService/RunScript",
        "/cuttle.protocol.v1.AdminService/WatchTask",
    }
)


def event_bytes(event: apb.TaskEvent | bytes) -> bytes:
    """An event on the wire: as it is when it is bytes already."""
    return event if isinstance(event, bytes) else event.SerializeToString()


class PreSerializedEvents(_ServerInterceptor):
    """Lets RunScript and WatchTask yield events as bytes (see the module's docstring)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The method's handler; for the log streams, with the pass-through serializer."""
        handler = await continuation(details)
        if handler is None or details.method not in LOG_STREAMS:
            return handler
        replaced: grpc.RpcMethodHandler[Any, Any] = cast(Any, handler)._replace(
            response_serializer=event_bytes
        )
        return replaced
