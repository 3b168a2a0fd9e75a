"""A server node: store, engine, comms and the two gRPC endpoints, started and stopped together."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.orm import Session

from cuttle.protocol import channel, pki
from cuttle.protocol.pinning import PinnedPeers
from cuttle.protocol.v1 import admin_pb2, admin_pb2_grpc, model_pb2, model_pb2_grpc
from cuttle.server.api.access_service import AccessService
from cuttle.server.api.admin import AdminService
from cuttle.server.api.auth import AdminInterceptor
from cuttle.server.api.dashboard_service import DashboardService
from cuttle.server.api.deployment_service import DeploymentService
from cuttle.server.api.interruption_service import InterruptionService
from cuttle.server.api.log_events import PreSerializedEvents
from cuttle.server.api.model_service import ModelService
from cuttle.server.api.release_service import ReleaseService, RunbookService
from cuttle.server.api.space_service import SpaceService
from cuttle.server.comms.polling import HubSettings, PollingHub, polling_server
from cuttle.server.comms.registry import Connections, MachineEndpoint
from cuttle.server.encryption import KEY_FILE as ENCRYPTION_KEY_FILE
from cuttle.server.encryption import Encryptor, KeyFileError, create_key_file
from cuttle.server.engine.cancel_delivery import CancelDelivery, CancelDeliverySettings
from cuttle.server.engine.completions import TicketCompletions
from cuttle.server.engine.follow import FollowSettings
from cuttle.server.engine.health import HealthChecker
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.runner import RunnerSettings, TaskRunner
from cuttle.server.engine.script_run import RunSettings
from cuttle.server.model.repository import ModelRepository
from cuttle.server.settings import ServerSettings
from cuttle.server.store import change_feed, database
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store.change_feed import PostgresChangeFeed
from cuttle.server.store.disk_reserve import DiskReserve
from cuttle.server.store.records import MachineRecord
from cuttle.server.store.task_log import LogLimits
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

KEY_FILE = "server-key.pem"
CERTIFICATE_FILE = "server-certificate.pem"
PORTS_FILE = "ports.json"


NODE_ID_FILE = "node-id"


def node_id(home: Path) -> str:
    """This node's name in the store, made once per home (claims and heartbeats use it)."""
    path = home / NODE_ID_FILE
    if path.exists():
        return path.read_text().strip()
    made = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    tmp = home / (NODE_ID_FILE + ".tmp")
    tmp.write_text(made + "\n")
    os.replace(tmp, path)
    return made


def load_identity(home: Path) -> pki.Identity:
    """The server's identity, made by `cuttle-server init`."""
    return pki.load_identity(home / KEY_FILE, home / CERTIFICATE_FILE)


class ServerNode:
    """Owns everything one `cuttle-server run` process does."""

    def __init__(self, home: Path, settings: ServerSettings) -> None:
        self.home = home
        self.settings = settings
        self.identity = load_identity(home)
        self._engine = database.create_engine_for(settings.database_url)
        self.tx = Transactions(database.session_maker(self._engine))
        self.log_limits = LogLimits(
            max_bytes=settings.task_log_limit_bytes,
            min_free_bytes=settings.data_dir_min_free_bytes,
            data_dir=database.data_dir(self._engine),
        )
        self.polling_peers = PinnedPeers(self.identity)
        self.connections = Connections(
            self.identity,
            PollingHub(
                HubSettings(
                    pickup_timeout=settings.pickup_timeout_seconds,
                    heartbeat_interval=settings.heartbeat_interval_seconds,
                    heartbeat_timeout=settings.heartbeat_timeout_seconds,
                ),
                self._resolve_polling,
            ),
            self.polling_peers,
            settings.connect_timeout_seconds,
            settings.agent_call_timeout_seconds,
        )
        self.signals = TaskSignals(settings.follow_buffer_bytes)
        # Several nodes may share a PostgreSQL database: their followers hear of each other's
        # changes through it (SQLite is one node's own).
        self.change_feed: PostgresChangeFeed | None = None
        if self._engine.dialect.name == "postgresql":
            self.change_feed = PostgresChangeFeed(
                change_feed.conninfo(self._engine.url),
                self.signals.changed_elsewhere,
                self.signals.maybe_missed,
            )
            self.signals.publish_to(self.change_feed.publish)
        self.health = HealthChecker(
            self.tx,
            self.connections,
            settings.connect_timeout_seconds,
            unavailable_after=settings.unavailable_after_seconds,
        )
        self.completions = TicketCompletions()
        self.runner = TaskRunner(
            self.tx,
            self.connections,
            self.signals,
            RunSettings(
                agent_lost_after=settings.agent_lost_after_seconds,
                cancel_retry_interval=settings.cancel_retry_interval_seconds,
                log_limits=self.log_limits,
            ),
            self.completions,
            RunnerSettings(
                store_retry_seconds=settings.store_retry_seconds,
                watchdog_interval=settings.task_watchdog_interval_seconds,
                node_id=node_id(home),
                task_cap=settings.task_cap,
                lease_seconds=settings.task_lease_seconds,
                heartbeat_interval=settings.node_heartbeat_interval_seconds,
                deployment_timeout=settings.deployment_timeout_seconds,
                queue_wait_limit=settings.queue_wait_limit_seconds,
            ),
            reserve=(
                None
                if self.log_limits.data_dir is None
                else DiskReserve(self.log_limits.data_dir, settings.disk_reserve_bytes)
            ),
        )
        self.cancels = CancelDelivery(
            self.tx,
            self.connections,
            self.signals,
            CancelDeliverySettings(
                retry_interval=settings.cancel_retry_interval_seconds,
                max_retry_interval=settings.cancel_retry_max_interval_seconds,
                log_limits=self.log_limits,
            ),
        )
        self._admin: grpc.aio.Server | None = None
        self._polling: grpc.aio.Server | None = None
        self._loops: list[asyncio.Task[None]] = []
        self.ports: dict[str, int] = {}

    def _resolve_polling(self, thumbprint: str) -> str | None:
        return self.connections.resolve_polling(thumbprint)

    async def refresh_machines(self) -> None:
        """Reload the machine list into comms (trust, transports)."""
        machines = await self.tx.run(lambda s: machine_store.all_machines(s))
        await self.connections.refresh(_endpoint(m) for m in machines)

    async def machine_added(self, machine: MachineRecord) -> None:
        """Trust and reach one newly registered (or re-registered) machine."""
        await self.connections.adopt(_endpoint(machine))

    async def machine_removed(self, machine: MachineRecord) -> None:
        """Stop trusting and reaching one removed machine."""
        await self.connections.forget(machine.name)

    async def start(self) -> None:
        """Migrate, open both endpoints, resume unfinished work."""
        await asyncio.to_thread(database.migrate, self._engine)
        encryptor = await self.tx.run(lambda s: prepare_model(s, self.home))
        self.runner.encryptor = encryptor
        await self.refresh_machines()
        host = self.settings.listen_host

        polling = polling_server(self.connections.hub, self.polling_peers)
        self.ports["polling"] = polling.add_secure_port(
            f"{host}:{self.settings.polling_port}", self.polling_peers.credentials()
        )

        admin = grpc.aio.server(
            interceptors=[AdminInterceptor(self.tx), PreSerializedEvents()],
            options=channel.server_options(),
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(
                tx=self.tx,
                identity=self.identity,
                polling_port=lambda: self.ports.get("polling", 0),
                machine_added=self.machine_added,
                machine_removed=self.machine_removed,
                connected=self.connections.connected,
                health=self.health,
                runner=self.runner,
                signals=self.signals,
                follow_settings=FollowSettings(
                    poll_interval=self.settings.follow_poll_interval_seconds
                ),
            ),
            admin,
        )
        model_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.tx, encryptor), admin)
        model_pb2_grpc.add_AccessServiceServicer_to_server(AccessService(self.tx), admin)
        model_pb2_grpc.add_ReleaseServiceServicer_to_server(
            ReleaseService(self.tx, encryptor), admin
        )
        model_pb2_grpc.add_RunbookServiceServicer_to_server(
            RunbookService(self.tx, encryptor), admin
        )
        model_pb2_grpc.add_SpaceServiceServicer_to_server(SpaceService(self.tx, encryptor), admin)
        model_pb2_grpc.add_DeploymentServiceServicer_to_server(
            DeploymentService(self.tx, encryptor, self.runner), admin
        )
        model_pb2_grpc.add_DashboardServiceServicer_to_server(DashboardService(self.tx), admin)
        model_pb2_grpc.add_InterruptionServiceServicer_to_server(
            InterruptionService(self.tx, self.signals), admin
        )
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, admin)
        reflection.enable_server_reflection(
            (
                admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
                model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
                model_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
                model_pb2.DESCRIPTOR.services_by_name["ReleaseService"].full_name,
                model_pb2.DESCRIPTOR.services_by_name["RunbookService"].full_name,
                model_pb2.DESCRIPTOR.services_by_name["SpaceService"].full_name,
                model_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name,
                model_pb2.DESCRIPTOR.services_by_name["InterruptionService"].full_name,
                model_pb2.DESCRIPTOR.services_by_name["DashboardService"].full_name,
                reflection.SERVICE_NAME,
                "grpc.health.v1.Health",
            ),
            admin,
        )
        # The admin port needs no client certificate: callers prove themselves with API keys.
        credentials = grpc.ssl_server_credentials(
            [(self.identity.key_pem, self.identity.certificate_pem)]
        )
        self.ports["admin"] = admin.add_secure_port(
            f"{host}:{self.settings.admin_port}", credentials
        )
        await polling.start()
        await admin.start()
        self._polling, self._admin = polling, admin
        self.completions.start()
        if self.change_feed is not None:
            await self.change_feed.start()
        resumed = await self.runner.start()
        pending_cancels = await self.cancels.start()
        self._loops.append(
            asyncio.create_task(
                self.health.run_forever(self.settings.health_check_interval_seconds)
            )
        )
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        _write_ports(self.home, self.ports)
        log.info(
            "server_started",
            thumbprint=self.identity.thumbprint,
            resumed_tasks=resumed,
            pending_cancels=pending_cancels,
            **self.ports,
        )

    async def stop(self, grace: float = 3.0) -> None:
        """Stop accepting, stop the engine (scripts keep running on agents), close everything."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.cancels.stop()
        await self.runner.stop()
        await self.completions.stop(grace)
        if self.change_feed is not None:
            await self.change_feed.stop()
        for server in (self._admin, self._polling):
            if server is not None:
                await server.stop(grace)
        await self.connections.close()
        self.tx.close()
        self._engine.dispose()
        log.info("server_stopped")


def _endpoint(machine: MachineRecord) -> MachineEndpoint:
    return MachineEndpoint(
        machine.name,
        machine.comms_style,
        machine.endpoint or "",
        machine.thumbprint,
        machine.certificate_pem,
    )


def prepare_model(session: Session, home: Path) -> Encryptor:
    """Load the encryption key and make sure the default space and its documents exist."""
    if not (home / ENCRYPTION_KEY_FILE).exists():
        # A home made before sensitive values existed gets its key now; once anything is
        # stored, a missing key is an error (a new one could not decrypt the old values).
        if doc_store.has_documents(session):
            raise KeyFileError(
                f"{home / ENCRYPTION_KEY_FILE} is missing but the database holds documents: "
                "restore the key file from your backup"
            )
        create_key_file(home)
        log.warning("encryption_key_created", path=str(home / ENCRYPTION_KEY_FILE))
    encryptor = Encryptor.from_home(home)
    space, _ = doc_store.ensure_space(session)
    ModelRepository(session, space, encryptor, "system").ensure_defaults()
    return encryptor


def _write_ports(home: Path, ports: dict[str, int]) -> None:
    tmp = home / (PORTS_FILE + ".tmp")
    tmp.write_text(json.dumps(ports))
    os.replace(tmp, home / PORTS_FILE)
