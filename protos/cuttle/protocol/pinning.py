"""Serving gRPC only to pinned peers: the root bundle, the leaf check, and ending calls on removal.

grpcio has no certificate-verify callback, so trust is enforced twice. The TLS root bundle is
exactly the pinned peer certificates (dynamic credentials: a change applies to the next
handshake), so an unknown certificate never completes a handshake and no HTTP/2 frame is ever
sent to it. An interceptor then checks the leaf thumbprint of every call, because a connection
made before a peer was removed stays open; removing a peer also cancels its calls in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog

from cuttle.protocol import pki

log = structlog.get_logger(__name__)

# The stubs make ServerInterceptor generic; at runtime it is a plain class.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


def peer_thumbprint(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The SHA-256 thumbprint of the certificate the caller presented, if any."""
    auth = context.auth_context()
    certs = list(auth.get("x509_pem_cert") or ())
    if not certs:
        return None
    return pki.thumbprint_of_pem(certs[0])


class PinnedPeers:
    """The set of peer certificates a gRPC server accepts, and the calls open per peer."""

    def __init__(self, identity: pki.Identity) -> None:
        self._identity = identity
        self._lock = threading.Lock()
        self._trusted: dict[str, bytes] = {}
        self._version = 0
        self._served_version = -1
        self._calls: dict[str, set[asyncio.Task[Any]]] = {}
        # An empty root bundle is not allowed; a throwaway certificate whose key is discarded
        # can never be presented by anyone, so "nobody trusted" really means nobody.
        self._nobody = pki.generate_identity("nobody", "nobody").certificate_pem

    def set_trusted(self, certificates: Mapping[str, bytes]) -> None:
        """Replace the trusted set; calls of peers no longer trusted are cancelled at once."""
        with self._lock:
            removed = set(self._trusted) - set(certificates)
            self._trusted = dict(certificates)
            self._version += 1
        for thumbprint in removed:
            self.end_calls(thumbprint)

    def trust(self, thumbprint: str, certificate_pem: bytes) -> None:
        """Add (or replace) one trusted peer without rebuilding the whole set."""
        with self._lock:
            if self._trusted.get(thumbprint) == certificate_pem:
                return
            self._trusted = {**self._trusted, thumbprint: certificate_pem}
            self._version += 1

    def distrust(self, thumbprint: str) -> None:
        """Remove one trusted peer; its calls in flight are cancelled at once."""
        with self._lock:
            if thumbprint not in self._trusted:
                return
            self._trusted = {k: v for k, v in self._trusted.items() if k != thumbprint}
            self._version += 1
        self.end_calls(thumbprint)

    def is_trusted(self, thumbprint: str | None) -> bool:
        """Whether a caller with this thumbprint may be served."""
        return thumbprint is not None and thumbprint in self._trusted

    def trusted_thumbprints(self) -> set[str]:
        """The thumbprints accepted now."""
        return set(self._trusted)

    def end_calls(self, thumbprint: str) -> int:
        """Cancel every call in flight from a peer; returns how many."""
        tasks = self._calls.pop(thumbprint, set())
        for task in tasks:
            task.cancel()
        if tasks:
            log.info("peer_calls_ended", thumbprint=thumbprint, calls=len(tasks))
        return len(tasks)

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials whose client-root bundle follows set_trusted on every handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            # The stubs omit that the fetcher may return None ("no change").
            cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch_configuration),
            require_client_authentication=True,
        )

    def interceptor(self) -> grpc.aio.ServerInterceptor[Any, Any]:
        """An interceptor refusing callers whose leaf certificate is not pinned."""
        return _PinningInterceptor(self)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        with self._lock:
            roots = b"".join(self._trusted.values()) or self._nobody
            self._served_version = self._version
        return grpc.ssl_server_certificate_configuration(
            [(self._identity.key_pem, self._identity.certificate_pem)],
            root_certificates=roots,
        )

    def _fetch_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC core (on its own thread) before each handshake; None keeps the current.
        if self._served_version == self._version:
            return None
        return self._configuration()

    def _track(self, thumbprint: str) -> Callable[[], None]:
        task = asyncio.current_task()
        if task is None:
            return lambda: None
        self._calls.setdefault(thumbprint, set()).add(task)

        def untrack() -> None:
            calls = self._calls.get(thumbprint)
            if calls is not None:
                calls.discard(task)
                if not calls:
                    self._calls.pop(thumbprint, None)

        return untrack


class _PinningInterceptor(_ServerInterceptor):
    def __init__(self, peers: PinnedPeers) -> None:
        self._peers = peers

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _wrap(handler, self._peers)


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], peers: PinnedPeers
) -> grpc.RpcMethodHandler[Any, Any]:
    async def admit(context: grpc.aio.ServicerContext[Any, Any]) -> Callable[[], None]:
        thumbprint = peer_thumbprint(context)
        if not peers.is_trusted(thumbprint):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"certificate {thumbprint or '(none)'} is not trusted here",
            )
        assert thumbprint is not None  # noqa: S101 - abort() raised otherwise
        return peers._track(thumbprint)

    h = cast(Any, handler)
    if h.unary_unary is not None:
        inner_uu = h.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            untrack = await admit(context)
            try:
                return await inner_uu(request, context)
            finally:
                untrack()

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, h.request_deserializer, h.response_serializer
        )
    if h.unary_stream is not None:
        inner_us = h.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            untrack = await admit(context)
            try:
                async for item in inner_us(request, context):
                    yield item
            finally:
                untrack()

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, h.request_deserializer, h.response_serializer
        )
    if h.stream_stream is not None:
        inner_ss = h.stream_stream

        async def stream_stream(
            requests: Iterable[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            untrack = await admit(context)
            try:
                return await inner_ss(requests, context)
            finally:
                untrack()

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, h.request_deserializer, h.response_serializer
        )
    inner_su = h.stream_unary

    async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        untrack = await admit(context)
        try:
            return await inner_su(requests, context)
        finally:
            untrack()

    return grpc.stream_unary_rpc_method_handler(
        stream_unary, h.request_deserializer, h.response_serializer
    )
