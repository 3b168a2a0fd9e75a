"""Which transport reaches which machine, and which certificates the polling port accepts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from cuttle.protocol import pki
from cuttle.protocol.pinning import PinnedPeers
from cuttle.server.comms.client import TentacleClient
from cuttle.server.comms.listening import ListeningTransport
from cuttle.server.comms.polling import PollingHub, PollingTransport
from cuttle.server.errors import NotFound


@dataclass(frozen=True)
class MachineEndpoint:
    """What comms needs to know of a registered machine."""

    name: str
    comms_style: str
    endpoint: str
    thumbprint: str
    certificate_pem: str


class MachineUnavailable(NotFound):
    """The machine cannot be reached by this node at all (the built-in worker cannot start)."""


class Connections:
    """Clients for machines by name; trust for the polling port follows the machine list."""

    def __init__(
        self,
        identity: pki.Identity,
        hub: PollingHub,
        polling_peers: PinnedPeers,
        connect_timeout: float = 10.0,
        call_timeout: float = 60.0,
        lookup: Callable[[str], Awaitable[MachineEndpoint | None]] | None = None,
    ) -> None:
        self._identity = identity
        self._lookup = lookup
        self.hub = hub
        self._peers = polling_peers
        self._connect_timeout = connect_timeout
        self._call_timeout = call_timeout
        self._machines: dict[str, MachineEndpoint] = {}
        self._by_thumbprint: dict[str, str] = {}
        self._clients: dict[str, TentacleClient] = {}

    def resolve_polling(self, thumbprint: str) -> str | None:
        """The name of the polling machine with this certificate, if registered."""
        name = self._by_thumbprint.get(thumbprint)
        machine = self._machines.get(name.lower()) if name else None
        if machine is None or machine.comms_style != "polling":
            return None
        return machine.name

    async def refresh(self, machines: Iterable[MachineEndpoint]) -> None:
        """Adopt the current machine list: new trust at once, old streams and channels ended."""
        fresh = {m.name.lower(): m for m in machines}
        for key, old in list(self._machines.items()):
            new = fresh.get(key)
            if new is None or new != old:
                client = self._clients.pop(key, None)
                if client is not None:
                    await client.close()
                if new is None:
                    self.hub.end_machine(old.name)
        self._machines = fresh
        self._by_thumbprint = {m.thumbprint: m.name for m in fresh.values()}
        # Ending the calls of removed or re-keyed machines happens inside set_trusted.
        self._peers.set_trusted(
            {
                m.thumbprint: m.certificate_pem.encode()
                for m in fresh.values()
                if m.comms_style == "polling"
            }
        )

    async def adopt(self, machine: MachineEndpoint) -> None:
        """Take in one registered (or re-registered) machine, leaving the others untouched.

        Registering one machine must not cost a reload of the whole fleet: at thousands of
        machines that made each registration slower than the last.
        """
        key = machine.name.lower()
        old = self._machines.get(key)
        if old == machine:
            return
        if old is not None:
            await self.forget(old.name)
        self._machines[key] = machine
        self._by_thumbprint[machine.thumbprint] = machine.name
        if machine.comms_style == "polling":
            self._peers.trust(machine.thumbprint, machine.certificate_pem.encode())

    async def forget(self, name: str) -> None:
        """Drop one machine: its client closes, its streams and trust end at once."""
        old = self._machines.pop(name.lower(), None)
        if old is None:
            return
        client = self._clients.pop(name.lower(), None)
        if client is not None:
            await client.close()
        if self._by_thumbprint.get(old.thumbprint) == old.name:
            del self._by_thumbprint[old.thumbprint]
        self.hub.end_machine(old.name)
        self._peers.distrust(old.thumbprint)

    async def client(self, name: str) -> TentacleClient:
        """A client for a registered machine, whichever way it connects."""
        key = name.lower()
        client = self._clients.get(key)
        if client is not None:
            return client
        machine = self._machines.get(key)
        if machine is None and self._lookup is not None:
            # Registered through another server node since this one last read the list.
            machine = await self._lookup(name)
            if machine is not None:
                await self.adopt(machine)
        if machine is None:
            raise NotFound(f"no machine named {name!r} is registered")
        if machine.comms_style == "polling":
            transport: PollingTransport | ListeningTransport = PollingTransport(
                machine.name, self.hub
            )
        else:
            transport = ListeningTransport(
                machine.name,
                machine.endpoint,
                machine.certificate_pem.encode(),
                self._identity,
                self._connect_timeout,
            )
        client = TentacleClient(transport, self._call_timeout)
        self._clients[key] = client
        return client

    def connected(self, name: str) -> bool | None:
        """For polling machines: whether a stream is open; None for listening ones."""
        machine = self._machines.get(name.lower())
        if machine is None or machine.comms_style != "polling":
            return None
        return self.hub.connected(name)

    async def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
