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
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cuttle.protocol import channel, pki
from cuttle.protocol.pinning import PinnedPeers
from cuttle.protocol.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    packages_pb2,
    packages_pb2_grpc,
)
from cuttle.server.api.access_service import AccessService
from cuttle.server.api.admin import AdminService
from cuttle.server.api.auth import AdminInterceptor
from cuttle.server.api.dashboard_service import DashboardService
from cuttle.server.api.deployment_service import DeploymentService
from cuttle.server.api.interruption_service import InterruptionService
from cuttle.server.api.log_events import PreSerializedEvents
from cuttle.server.api.model_service import ModelService
from cuttle.server.api.package_service import PackageService
from cuttle.server.api.release_service import ReleaseService, RunbookService
from cuttle.server.api.space_service import SpaceService
from cuttle.server.comms.polling import HubSettings, PollingHub, polling_server
from cuttle.server.comms.registry import Connections, MachineEndpoint, MachineUnavailable
from cuttle.server.domain.plan import BUILTIN_WORKER, Worker
from cuttle.server.encryption import KEY_FILE as ENCRYPTION_KEY_FILE
from cuttle.server.encryption import Encryptor, KeyFileError, create_key_file
from cuttle.server.engine.builtin_worker import BuiltinWorker, WorkerSettings
from cuttle.server.engine.cancel_delivery import CancelDelivery, CancelDeliverySettings
from cuttle.server.engine.completions import TicketCompletions
from cuttle.server.engine.follow import FollowSettings
from cuttle.server.engine.health import HealthChecker
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.runner import RunnerSettings, TaskRunner
from cuttle.server.engine.script_run import RunSettings
from cuttle.server.errors import NotFound, ServerError
from cuttle.server.model.repository import ModelRepository
from cuttle.server.model.retention import apply_retention
from cuttle.server.packages.feed import PackageFeed
from cuttle.server.settings import ServerSettings
from cuttle.server.store import change_feed, database
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store import server_identity as identity_store
from cuttle.server.store.change_feed import PostgresChangeFeed
from cuttle.server.store.disk_reserve import DiskReserve
from cuttle.server.store.records import MachineRecord, now_ms
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


class IdentityMissing(ServerError):
    """Neither the database nor the home holds a server identity."""

    kind = "failed_precondition"


def establish_identity(session: Session, home: Path, encryptor: Encryptor) -> pki.Identity:
    """The identity every node of this database presents; its files in the home kept in step.

    The database is the source of truth. An upgraded home (identity files, empty table) moves
    its identity into the database; a home whose files differ from the database (a node joined
    after another was re-initialised) is told so and gets the database's.
    """
    stored = identity_store.load(session, encryptor)
    on_disk = _identity_files(home)
    if stored is None:
        if on_disk is None:
            raise IdentityMissing(
                f"no server identity in the database or in {home}: run `cuttle-server init` "
                "for a new server, or `cuttle-server join` for another node of an existing one"
            )
        stored = identity_store.store(session, encryptor, on_disk)
        log.info("server_identity_moved_to_database", thumbprint=stored.thumbprint)
    elif on_disk is not None and on_disk.thumbprint != stored.thumbprint:
        log.warning(
            "server_identity_replaced",
            home_thumbprint=on_disk.thumbprint,
            database_thumbprint=stored.thumbprint,
        )
    if on_disk != stored:
        # Tools and operators read the certificate (and the harness the key) from the home.
        pki.save_identity(stored, home / KEY_FILE, home / CERTIFICATE_FILE)
    return stored


def _identity_files(home: Path) -> pki.Identity | None:
    if not (home / KEY_FILE).exists() or not (home / CERTIFICATE_FILE).exists():
        return None
    return pki.load_identity(home / KEY_FILE, home / CERTIFICATE_FILE)


def bootstrap(home: Path, engine: Engine) -> tuple[Encryptor, pki.Identity]:
    """Migrate, make the defaults, and establish the shared identity (before serving)."""
    database.migrate(engine)
    with database.session_maker(engine).begin() as session:
        encryptor = prepare_model(session, home)
        identity = establish_identity(session, home, encryptor)
    return encryptor, identity


class ServerNode:
    """Owns everything one `cuttle-server run` process does."""

    def __init__(self, home: Path, settings: ServerSettings) -> None:
        self.home = home
        self.settings = settings
        self._engine = database.create_engine_for(settings.database_url)
        self.encryptor, self.identity = bootstrap(home, self._engine)
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
            lookup=self._lookup_machine,
        )
        self.signals = TaskSignals(settings.follow_buffer_bytes)
        # The built-in feed: its files under the home unless several nodes share a directory.
        self.packages = PackageFeed(
            self.tx, Path(settings.package_root) if settings.package_root else home / "packages"
        )
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
        self.worker = BuiltinWorker(
            home,
            home / CERTIFICATE_FILE,
            WorkerSettings(enabled=settings.builtin_worker, user=settings.builtin_worker_user),
            self.connections.adopt,
        )
        self._admin: grpc.aio.Server | None = None
        self._polling: grpc.aio.Server | None = None
        self._loops: list[asyncio.Task[None]] = []
        self.ports: dict[str, int] = {}

    def _resolve_polling(self, thumbprint: str) -> str | None:
        return self.connections.resolve_polling(thumbprint)

    async def refresh_machines(self) -> None:
        """Reload the machine list into comms (trust, transports); the worker stays."""
        machines = await self.tx.read(lambda s: machine_store.all_machines(s))
        endpoints = [_endpoint(m) for m in machines]
        if self.worker.endpoint is not None:
            endpoints.append(self.worker.endpoint)
        await self.connections.refresh(endpoints)

    async def _lookup_machine(self, name: str) -> MachineEndpoint | None:
        if name.casefold() == BUILTIN_WORKER:
            # Started when a step first needs it: most servers never run project code.
            endpoint = await self.worker.start()
            if endpoint is None:
                raise MachineUnavailable(
                    f"the built-in worker is not available: {self.worker.unavailable}"
                )
            return endpoint

        def find(session: Session) -> MachineRecord | None:
            try:
                return machine_store.get_by_name(session, name)
            except NotFound:
                return None

        found = await self.tx.read(find)
        return None if found is None else _endpoint(found)

    async def _refresh_machines_forever(self) -> None:
        # Other server nodes register, re-key and remove machines too: their changes reach
        # this node's trust and transports within one interval.
        interval = self.settings.machine_refresh_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_machines()
            except Exception:
                log.exception("machine_refresh_failed")

    async def _retention_forever(self) -> None:
        interval = self.settings.retention_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.tx.run(lambda s: apply_retention(s, now_ms()))
            except Exception:
                log.exception("retention_failed")
                continue
            for item in removed:
                log.info(
                    "release_removed_by_retention",
                    project=item.project,
                    version=item.version,
                    tasks=item.tasks,
                )

    async def machine_added(self, machine: MachineRecord) -> None:
        """Trust and reach one newly registered (or re-registered) machine."""
        await self.connections.adopt(_endpoint(machine))

    async def machine_removed(self, machine: MachineRecord) -> None:
        """Stop trusting and reaching one removed machine."""
        await self.connections.forget(machine.name)

    async def start(self) -> None:
        """Migrate, open both endpoints, resume unfinished work."""
        encryptor = self.encryptor
        self.runner.encryptor = encryptor
        self.runner.worker = lambda: Worker(self.worker.unavailable)
        self.runner.packages = self.packages
        await self.packages.start()
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
                node_id=node_id(self.home),
            ),
            admin,
        )
        model_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.tx, encryptor), admin)
        model_pb2_grpc.add_AccessServiceServicer_to_server(AccessService(self.tx), admin)
        model_pb2_grpc.add_ReleaseServiceServicer_to_server(
            ReleaseService(
                self.tx, encryptor, self.runner.start_task, lambda: Worker(self.worker.unavailable)
            ),
            admin,
        )
        model_pb2_grpc.add_RunbookServiceServicer_to_server(
            RunbookService(self.tx, encryptor), admin
        )
        model_pb2_grpc.add_SpaceServiceServicer_to_server(SpaceService(self.tx, encryptor), admin)
        model_pb2_grpc.add_DeploymentServiceServicer_to_server(
            DeploymentService(
                self.tx, encryptor, self.runner, lambda: Worker(self.worker.unavailable)
            ),
            admin,
        )
        model_pb2_grpc.add_DashboardServiceServicer_to_server(DashboardService(self.tx), admin)
        packages_pb2_grpc.add_PackageServiceServicer_to_server(
            PackageService(self.tx, self.packages), admin
        )
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
                packages_pb2.DESCRIPTOR.services_by_name["PackageService"].full_name,
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
        # Before the runner: resumed deployments may have scripts on the worker.
        await self.worker.reuse()
        if self.change_feed is not None:
            await self.change_feed.start()
        resumed = await self.runner.start()
        pending_cancels = await self.cancels.start()
        self._loops.append(
            asyncio.create_task(
                self.health.run_forever(self.settings.health_check_interval_seconds)
            )
        )
        self._loops.append(asyncio.create_task(self._refresh_machines_forever()))
        if self.settings.retention_interval_seconds > 0:
            self._loops.append(asyncio.create_task(self._retention_forever()))
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
        await self.worker.stop()
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
