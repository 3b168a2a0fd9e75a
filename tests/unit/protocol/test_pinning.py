"""PinnedPeers: single peers are trusted and distrusted without rebuilding the set by hand."""

from __future__ import annotations

import asyncio

from cuttle.protocol import pki
from cuttle.protocol.pinning import PinnedPeers


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
