"""Serving gRPC only to pinned peers: the root bundle, the leaf check, and ending calls on removal.

grpcio has no certificate-verify callback, so trust is enforced twice. The TLS root bundle is
exactly the pinned peer certificates (dynamic credentials: a change applies to the next
handshake), so an unknown certificate never completes a handshake and no HTTP/2 frame is ever
sent to it. An interceptor then checks the leaf thumbprint of every call, because a connection
made before a peer was removed stays open; removing a peer also cancels its calls in flight.

What a change costs: gRPC core turns the bundle into a certificate store when it gets a new
bundle, on its own thread, and meanwhile holds back the other handshakes on that port. The
store sorts itself again for every certificate added, so the build grows faster than the
bundle: about 0.1 s at 1,000 certificates and 3-4 s at 5,000 on two cores (measured by
scripts/bench/bench_trust_bundle.py). Nothing in grpcio's Python API avoids that store, so this
module makes sure the build happens at most once per change and per port, never for a set that
did not change, and never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog

from cuttle.protocol import pki
from cuttle.protocol.interception import wrap_handler

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
    return _thumbprint(certs[0])


@functools.lru_cache(maxsize=8192)
def _thumbprint(pem: bytes) -> str:
    # Every call checks its caller; parsing the same certificate again each time cost about
    # 0.1 ms a call. Keyed by the exact bytes presented, so nothing unverified is reused.
    return pki.thumbprint_of_pem(pem)


class PinnedPeers:
    """The set of peer certificates a gRPC server accepts, and the calls open per peer."""

    def __init__(self, identity: pki.Identity) -> None:
        self._identity = identity
        # Writers run on the event loop; gRPC core reads the bundle from its own threads.
        self._lock = threading.Lock()
        self._trusted: dict[str, bytes] = {}
        self._version = 0
        self._calls: dict[str, set[asyncio.Task[Any]]] = {}
        # An empty root bundle is not allowed; a throwaway certificate whose key is discarded
        # can never be presented by anyone, so "nobody trusted" really means nobody.
        self._nobody = pki.generate_identity("nobody", "nobody").certificate_pem

    def set_trusted(self, certificates: Mapping[str, bytes]) -> None:
        """Replace the trusted set; calls of peers no longer trusted are cancelled at once."""
        fresh = dict(certificates)
        with self._lock:
            if fresh == self._trusted:
                return  # a rebuild in gRPC core would change nothing and cost seconds
            removed = self._trusted.keys() - fresh.keys()
            self._trusted = fresh
            self._version += 1
        for thumbprint in removed:
            self.end_calls(thumbprint)

    def trust(self, thumbprint: str, certificate_pem: bytes) -> None:
        """Add (or replace) one trusted peer without rebuilding the whole set."""
        with self._lock:
            if self._trusted.get(thumbprint) == certificate_pem:
                return
            self._trusted[thumbprint] = certificate_pem
            self._version += 1

    def distrust(self, thumbprint: str) -> None:
        """Remove one trusted peer; its calls in flight are cancelled at once."""
        with self._lock:
            if self._trusted.pop(thumbprint, None) is None:
                return
            self._version += 1
        self.end_calls(thumbprint)

    def is_trusted(self, thumbprint: str | None) -> bool:
        """Whether a caller with this thumbprint may be served."""
        return thumbprint is not None and thumbprint in self._trusted

    def trusted_thumbprints(self) -> set[str]:
        """The thumbprints accepted now."""
        with self._lock:
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
        """Server credentials for one port whose client-root bundle follows the trusted set.

        The port starts out trusting nobody and takes the real bundle at its first handshake:
        `add_secure_port` runs on the event loop, and building a fleet-sized bundle there
        would stall every other task for seconds.
        """
        return grpc.dynamic_ssl_server_credentials(
            self._certificate_configuration(self._nobody),
            # The stubs omit that the fetcher may return None ("no change").
            cast(Callable[[], grpc.ServerCertificateConfiguration], _BundleFetcher(self)),
            require_client_authentication=True,
        )

    def interceptor(self) -> grpc.aio.ServerInterceptor[Any, Any]:
        """An interceptor refusing callers whose leaf certificate is not pinned."""
        return _PinningInterceptor(self)

    def _bundle(self) -> tuple[bytes, int]:
        with self._lock:
            return b"".join(self._trusted.values()) or self._nobody, self._version

    def _certificate_configuration(self, roots: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._identity.key_pem, self._identity.certificate_pem)],
            root_certificates=roots,
        )

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


class _BundleFetcher:
    """Gives one port's TLS layer the trusted bundle whenever it changed since the last one.

    gRPC core calls it before every handshake on the port (on a core thread, one handshake
    at a time), and rebuilds its certificate store only when it returns a configuration; None
    keeps the current one. Each port has its own fetcher, so each port sees every change.
    """

    def __init__(self, peers: PinnedPeers) -> None:
        self._peers = peers
        self._served = -1

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        if self._served == self._peers._version:
            return None
        roots, self._served = self._peers._bundle()
        return self._peers._certificate_configuration(roots)


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
        return wrap_handler(handler, self._admitted)

    @contextlib.asynccontextmanager
    async def _admitted(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        thumbprint = peer_thumbprint(context)
        if not self._peers.is_trusted(thumbprint):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"certificate {thumbprint or '(none)'} is not trusted here",
            )
        assert thumbprint is not None  # noqa: S101 - abort() raised otherwise
        untrack = self._peers._track(thumbprint)
        try:
            yield
        finally:
            untrack()
