"""The listening transport: a gRPC server on the Tentacle that only pinned servers can reach."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cuttle.protocol import channel
from cuttle.protocol.errors import (
    ERROR_KIND_METADATA,
    MalformedRequest,
    code_for_kind,
    lenient_deserializer,
)
from cuttle.protocol.pinning import PinnedPeers
from cuttle.tentacle.errors import BadRequest
from cuttle.tentacle.services.handlers import METHODS, Method, TentacleHandlers, describe_error

log = structlog.get_logger(__name__)

SERVICE_NAME = "cuttle.protocol.v1.TentacleService"


async def _fail(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    kind, message = describe_error(exc)
    if kind == "internal":
        log.exception("request_failed", error=message)
    context.set_trailing_metadata(((ERROR_KIND_METADATA, kind),))
    await context.abort(code_for_kind(kind), message)


def _rpc_handler(method: Method, handlers: TentacleHandlers) -> grpc.RpcMethodHandler[Any, Any]:
    call = method.bind(handlers)
    deserialize = lenient_deserializer(method.request_type.FromString)
    if method.streaming:

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                if isinstance(request, MalformedRequest):
                    raise BadRequest(request.message)
                async for item in call(request):
                    yield item
            except Exception as exc:  # noqa: BLE001 - every failure becomes a typed status
                await _fail(context, exc)

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=deserialize, response_serializer=_serialize
        )

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            if isinstance(request, MalformedRequest):
                raise BadRequest(request.message)
            return await call(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a typed status
            await _fail(context, exc)

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=deserialize, response_serializer=_serialize
    )


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


class ListeningServer:
    """Serves TentacleService on host:port to pinned servers only; no plaintext port exists."""

    def __init__(
        self, handlers: TentacleHandlers, peers: PinnedPeers, host: str, port: int
    ) -> None:
        self._handlers = handlers
        self._peers = peers
        self._address = f"{host}:{port}"
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        server = grpc.aio.server(
            interceptors=[self._peers.interceptor()], options=channel.server_options()
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    SERVICE_NAME,
                    {name: _rpc_handler(m, self._handlers) for name, m in METHODS.items()},
                )
            ]
        )
        health_servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self.port = server.add_secure_port(self._address, self._peers.credentials())
        await server.start()
        self._server = server
        log.info("listening_started", address=self._address, port=self.port)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let calls finish for `grace` seconds, then cancel them."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
