"""The server's comms in the test process, linked to a real `tentacle` process.

The server half is the product's own code: `Connections` builds the `TentacleClient` exactly as
`cuttle-server` does, and for polling the `PollingHub` is served by `polling_server` on a real
grpc.aio port with `PinnedPeers` credentials. The Tentacle half is the real console script,
started through the harness. Tests are synchronous, so the server half lives on an asyncio loop
in a background thread and tests hand it coroutines with `Link.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cuttle.protocol import channel, pki
from cuttle.protocol.pinning import PinnedPeers
from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import admin_pb2_grpc
from cuttle.server.app import CERTIFICATE_FILE, KEY_FILE
from cuttle.server.comms.client import TentacleClient
from cuttle.server.comms.polling import HubSettings, PollingHub, polling_server
from cuttle.server.comms.registry import Connections, MachineEndpoint
from cuttle.tentacle.config import InstanceHome, ServerLink
from tests.integration.harness.cluster import Process, Server, Tentacle, wait_for
from tests.integration.harness.tcp_proxy import TcpProxy

T = TypeVar("T")

# Short, configured intervals: a lost stream is noticed in seconds, an undelivered request
# fails fast instead of hanging a test.
HUB_SETTINGS = HubSettings(pickup_timeout=5.0, heartbeat_interval=0.5, heartbeat_timeout=3.0)
CONNECT_TIMEOUT = 5.0


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="comms", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the loop and wait for its result (or fail after `timeout`)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise AssertionError(f"timed out after {timeout}s waiting for the comms loop") from None

    def close(self) -> None:
        """Cancel what is left on the loop, stop it and join the thread."""

        async def drain() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with suppress(AssertionError):
            self.run(drain(), timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(15)
        if not self._thread.is_alive():
            self.loop.close()


class ServerComms:
    """What `cuttle-server` assembles for talking to Tentacles, minus the store and the engine."""

    def __init__(self, identity: pki.Identity) -> None:
        self.identity = identity
        self.peers = PinnedPeers(identity)
        self.hub = PollingHub(HUB_SETTINGS, self._resolve)
        self.connections = Connections(identity, self.hub, self.peers, CONNECT_TIMEOUT)
        self.polling_port = 0
        self._server: grpc.aio.Server | None = None

    def _resolve(self, thumbprint: str) -> str | None:
        return self.connections.resolve_polling(thumbprint)

    async def start_polling(self) -> int:
        """Open the polling endpoint on a free port of 127.0.0.1."""
        server = polling_server(self.hub, self.peers)
        self.polling_port = server.add_secure_port("127.0.0.1:0", self.peers.credentials())
        await server.start()
        self._server = server
        return self.polling_port

    async def register(self, machine: MachineEndpoint) -> None:
        """Adopt a machine, as the server does after RegisterMachine."""
        await self.connections.refresh([machine])

    async def client(self, name: str) -> TentacleClient:
        """The machine's client; made on the loop because its channel belongs to the loop."""
        return await self.connections.client(name)

    async def stop(self) -> None:
        """Close the polling endpoint and every client."""
        if self._server is not None:
            await self._server.stop(1.0)
        await self.connections.close()


@dataclass
class Link:
    """A real Tentacle and the server-side TentacleClient that reaches it."""

    style: str
    tentacle: Tentacle
    comms: ServerComms
    client: TentacleClient
    loop: LoopThread
    # Between the server half and the Tentacle when asked for: cut it to drop the connection.
    proxy: TcpProxy | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the comms loop (where the client lives)."""
        return self.loop.run(coro, timeout)

    @property
    def tickets_dir(self) -> Path:
        """Where the Tentacle keeps each ticket's workspace and journal."""
        return self.tentacle.home / "tickets"


def trusted_channel_options(target_name: str, max_message: int) -> channel.ChannelOptions:
    """The product's client options with the message limits replaced (gRPC keeps the first)."""
    options = [o for o in channel.client_options(target_name) if "message_length" not in o[0]]
    return [
        *options,
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_receive_message_length", max_message),
    ]


def admin_channel(server: Server, max_message: int = channel.MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A blocking channel to a server's admin API, pinned to its certificate."""
    pem = (server.home / CERTIFICATE_FILE).read_bytes()
    return grpc.secure_channel(
        f"127.0.0.1:{server.admin_port}",
        grpc.ssl_channel_credentials(root_certificates=pem),
        options=trusted_channel_options(pki.SERVER_NAME, max_message),
    )


class AdminApi:
    """A harness server's admin API over one pinned channel, called with its admin key.

    Cheaper than a `cuttle` process per call, for tests that make many calls.
    """

    def __init__(self, server: Server) -> None:
        self.channel = admin_channel(server)
        self.stub = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.metadata = (("x-api-key", server.api_key),)

    def run_script(self, request: apb.RunScriptRequest) -> tuple[str, apb.Task]:
        """Run a script task to its end; returns the task id and the finished task."""
        events = list(self.stub.RunScript(request, metadata=self.metadata, timeout=110))
        finished = [e.finished for e in events if e.WhichOneof("kind") == "finished"]
        assert finished, f"the task stream ended without a result: {events[-1:]}"
        return events[0].task_id, finished[-1]

    def task(self, task_id: str) -> apb.Task:
        """One task and its targets."""
        return self.stub.GetTask(apb.GetTaskRequest(task_id=task_id), metadata=self.metadata)

    def log(self, task_id: str) -> list[apb.TaskLogLine]:
        """The task's stored log, as the server serves it."""
        request = apb.WatchTaskRequest(task_id=task_id, no_follow=True)
        return [
            line
            for event in self.stub.WatchTask(request, metadata=self.metadata, timeout=60)
            for line in event.lines.lines
        ]

    def machines(self) -> list[apb.Machine]:
        """Every registered machine."""
        reply = self.stub.ListMachines(apb.ListMachinesRequest(), metadata=self.metadata)
        return list(reply.machines)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def server_credentials_for(tentacle_home: Path, server_home: Path) -> grpc.ChannelCredentials:
    """mTLS credentials of a server (its identity files) pinned to a Tentacle's certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=(tentacle_home / "certificate.pem").read_bytes(),
        private_key=(server_home / KEY_FILE).read_bytes(),
        certificate_chain=(server_home / CERTIFICATE_FILE).read_bytes(),
    )


def serving(target: str, credentials: grpc.ChannelCredentials, target_name: str) -> bool:
    """Whether the standard gRPC health check at `target` answers SERVING."""
    with grpc.secure_channel(
        target, credentials, options=channel.client_options(target_name)
    ) as chan:
        try:
            reply = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _configure(tentacle: Tentacle, server_certificate: Path) -> None:
    tentacle.tentacle("create-instance")
    tentacle.tentacle(
        "configure",
        "--port",
        "0",
        "--listen-host",
        "127.0.0.1",
        "--trust-certificate",
        str(server_certificate),
        "--heartbeat-interval",
        "0.5",
        "--heartbeat-timeout",
        "3",
        "--reconnect-max-delay",
        "1",
    )


def _poll_in_process_server(home: Path, name: str, polling_port: int) -> None:
    # What `register-with --comms-style polling` records, pointed at the in-process endpoint:
    # there is no admin API here to register with.
    instance = InstanceHome(home)
    config = instance.load()
    config.comms_style = "polling"
    config.server = ServerLink(
        admin_address="https://127.0.0.1:1",
        machine_name=name,
        polling_address=f"127.0.0.1:{polling_port}",
    )
    instance.save(config)


def _apply_settings(home: Path, settings: dict[str, Any]) -> None:
    path = InstanceHome(home).config_path
    raw = json.loads(path.read_text())
    raw.update(settings)
    path.write_text(json.dumps(raw))


def _exited(tentacle: Tentacle) -> bool:
    process = tentacle.process
    if process is not None and not process.alive():
        raise AssertionError(f"tentacle {tentacle.name} exited:\n{process.tail()}")
    return False


@contextmanager
def tentacle_link(
    root: Path,
    style: str,
    name: str = "contract-01",
    *,
    proxy: bool = False,
    settings: dict[str, Any] | None = None,
) -> Iterator[Link]:
    """A started `tentacle` of the given style and a connected TentacleClient; always torn down.

    With `proxy`, the connection runs through a TcpProxy (Link.proxy) the test can cut;
    `settings` are written into the Tentacle's tentacle.json before it starts.
    """
    procs: list[Process] = []
    forwarder: TcpProxy | None = None
    server = Server(root / "server", procs)
    server.home.mkdir(parents=True, exist_ok=True)
    identity = pki.generate_identity("Cuttle test server", pki.SERVER_NAME)
    pki.save_identity(identity, server.home / KEY_FILE, server.home / CERTIFICATE_FILE)
    server.thumbprint = identity.thumbprint
    loop = LoopThread()
    comms = ServerComms(identity)
    try:
        tentacle = Tentacle(name, root / name, style, server, procs)
        _configure(tentacle, server.home / CERTIFICATE_FILE)
        if settings:
            _apply_settings(tentacle.home, settings)
        certificate = (tentacle.home / "certificate.pem").read_text()
        thumbprint = pki.thumbprint_of_pem(certificate.encode())
        if style == "polling":
            port = loop.run(comms.start_polling())
            if proxy:
                forwarder = TcpProxy("127.0.0.1", port)
                port = loop.run(forwarder.start())
            _poll_in_process_server(tentacle.home, name, port)
            # Trusted before it dials, as after registration.
            loop.run(comms.register(MachineEndpoint(name, style, "", thumbprint, certificate)))
            tentacle.start()
            wait_for(
                lambda: comms.hub.connected(name) or _exited(tentacle),
                30,
                f"{name} to open its polling stream",
            )
        else:
            tentacle.start()
            endpoint = f"127.0.0.1:{tentacle.port}"
            if proxy:
                forwarder = TcpProxy("127.0.0.1", tentacle.port)
                endpoint = f"127.0.0.1:{loop.run(forwarder.start())}"
            loop.run(
                comms.register(MachineEndpoint(name, style, endpoint, thumbprint, certificate))
            )
        client = loop.run(comms.client(name))
        yield Link(style, tentacle, comms, client, loop, forwarder)
    finally:
        for proc in reversed(procs):
            proc.stop()
        with suppress(AssertionError):
            loop.run(comms.stop(), timeout=15)
        if forwarder is not None:
            with suppress(AssertionError):
                loop.run(forwarder.stop(), timeout=15)
        loop.close()
