"""The listening transport: the server dials the agent, pinned to its registered certificate."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from cuttle.protocol import channel, pki
from cuttle.server.comms.errors_wire import from_rpc_error

SERVICE = "/cuttle.protocol.v1.TentacleService/"


def _identity_bytes(data: bytes) -> bytes:
    return data


class ListeningTransport:
    """One secure channel to one listening Tentacle."""

    def __init__(
        self,
        machine: str,
        endpoint: str,
        agent_certificate_pem: bytes,
        server_identity: pki.Identity,
        connect_timeout: float = 10.0,
    ) -> None:
        self.machine = machine
        self.endpoint = endpoint
        self._connect_timeout = connect_timeout
        credentials = grpc.ssl_channel_credentials(
            # The agent's own self-signed certificate is the only root: that is the pin.
            root_certificates=agent_certificate_pem,
            private_key=server_identity.key_pem,
            certificate_chain=server_identity.certificate_pem,
        )
        self._channel = grpc.aio.secure_channel(
            endpoint, credentials, options=channel.client_options(pki.TENTACLE_NAME)
        )

    async def unary(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        """One call; connection failures become Unreachable/Untrusted."""
        call = self._channel.unary_unary(
            SERVICE + method,
            request_serializer=_identity_bytes,
            response_deserializer=_identity_bytes,
        )
        try:
            result: bytes = await call(payload, timeout=timeout)
            return result
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(self.machine, exc) from exc

    async def stream(self, method: str, payload: bytes) -> AsyncIterator[bytes]:
        """A server-streaming call."""
        call = self._channel.unary_stream(
            SERVICE + method,
            request_serializer=_identity_bytes,
            response_deserializer=_identity_bytes,
        )(payload)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(self.machine, exc) from exc
        finally:
            call.cancel()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)
