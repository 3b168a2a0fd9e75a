"""PinnedPeers: the trusted set, what reaches gRPC's TLS layer, and the pinned server itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cuttle.protocol import channel, pki
from cuttle.protocol.pinning import PinnedPeers, _BundleFetcher


def _peer() -> pki.Identity:
    return pki.generate_identity("Tentacle", pki.TENTACLE_NAME)


def test_trust_and_distrust_one_peer_at_a_time() -> None:
    peers = PinnedPeers(_peer())
    first, second = _peer(), _peer()
    peers.set_trusted({first.thumbprint: first.certificate_pem})
    peers.trust(second.thumbprint, second.certificate_pem)
    assert peers.trusted_thumbprints() == {first.thumbprint, second.thumbprint}
    peers.distrust(first.thumbprint)
    assert not peers.is_trusted(first.thumbprint)
    assert peers.is_trusted(second.thumbprint)
    peers.distrust(first.thumbprint)  # twice is harmless
    assert peers.trusted_thumbprints() == {second.thumbprint}


def test_distrust_cancels_the_peers_calls_in_flight() -> None:
    peers = PinnedPeers(_peer())
    peer = _peer()
    peers.trust(peer.thumbprint, peer.certificate_pem)

    async def scenario() -> bool:
        started = asyncio.Event()

        async def call() -> None:
            untrack = peers._track(peer.thumbprint)
            try:
                started.set()
                await asyncio.sleep(30)
            finally:
                untrack()

        task = asyncio.create_task(call())
        await started.wait()
        peers.distrust(peer.thumbprint)
        try:
            await asyncio.wait_for(task, 5)
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(scenario())


def test_the_tls_layer_rebuilds_once_per_change_and_never_for_no_change() -> None:
    # Each configuration handed to gRPC core costs a certificate-store build that takes
    # seconds at fleet size, so "nothing changed" must hand over nothing.
    peers = PinnedPeers(_peer())
    first, second = _peer(), _peer()
    peers.set_trusted({first.thumbprint: first.certificate_pem})
    fetch = _BundleFetcher(peers)
    assert fetch() is not None  # the port starts trusting nobody; the first handshake loads
    assert fetch() is None
    peers.set_trusted({first.thumbprint: first.certificate_pem})
    peers.trust(first.thumbprint, first.certificate_pem)
    peers.distrust(second.thumbprint)
    assert fetch() is None
    peers.trust(second.thumbprint, second.certificate_pem)
    peers.distrust(first.thumbprint)
    assert fetch() is not None  # two changes, one rebuild
    assert fetch() is None


def test_every_port_gets_every_change() -> None:
    peers = PinnedPeers(_peer())
    ports = [_BundleFetcher(peers), _BundleFetcher(peers)]
    assert all(fetch() is not None for fetch in ports)
    peer = _peer()
    peers.trust(peer.thumbprint, peer.certificate_pem)
    assert all(fetch() is not None for fetch in ports)
    assert all(fetch() is None for fetch in ports)


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def _same(data: bytes) -> bytes:
    return data


async def _call(port: int, me: pki.Identity, server: pki.Identity) -> grpc.StatusCode:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server.certificate_pem,
        private_key=me.key_pem,
        certificate_chain=me.certificate_pem,
    )
    options = channel.client_options(pki.SERVER_NAME)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options) as chan:
        echo = chan.unary_unary("/test.Pinned/Echo", _same, _same)
        try:
            assert await echo(b"ping", timeout=5) == b"ping"
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


async def _watch_health(port: int, me: pki.Identity, server: pki.Identity) -> int:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server.certificate_pem,
        private_key=me.key_pem,
        certificate_chain=me.certificate_pem,
    )
    options = channel.client_options(pki.SERVER_NAME)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options) as chan:
        replies: AsyncIterator[Any] = health_pb2_grpc.HealthStub(chan).Watch(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        async for reply in replies:
            return int(reply.status)
    raise AssertionError("Watch ended without a reply")


def test_a_pinned_server_serves_exactly_the_trusted_set_on_new_handshakes() -> None:
    identity = pki.generate_identity("Server", pki.SERVER_NAME)
    peers = PinnedPeers(identity)
    kept, removed, added, stranger = _peer(), _peer(), _peer(), _peer()
    peers.set_trusted(
        {kept.thumbprint: kept.certificate_pem, removed.thumbprint: removed.certificate_pem}
    )

    async def scenario() -> None:
        server = grpc.aio.server(
            interceptors=[peers.interceptor()], options=channel.server_options()
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "test.Pinned", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
                )
            ]
        )
        # Its Watch writes through context.write (a coroutine, not an async generator).
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        port = server.add_secure_port("127.0.0.1:0", peers.credentials())
        await server.start()
        try:
            assert await _call(port, kept, identity) == grpc.StatusCode.OK
            assert await _call(port, removed, identity) == grpc.StatusCode.OK
            assert await _call(port, stranger, identity) == grpc.StatusCode.UNAVAILABLE
            assert await _call(port, added, identity) == grpc.StatusCode.UNAVAILABLE

            peers.trust(added.thumbprint, added.certificate_pem)
            peers.distrust(removed.thumbprint)
            assert await _call(port, added, identity) == grpc.StatusCode.OK
            assert await _call(port, removed, identity) == grpc.StatusCode.UNAVAILABLE
            assert await _call(port, kept, identity) == grpc.StatusCode.OK
            serving = health_pb2.HealthCheckResponse.SERVING
            assert await _watch_health(port, kept, identity) == serving
        finally:
            await server.stop(None)

    asyncio.run(scenario())
