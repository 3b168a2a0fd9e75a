"""Start real cuttle-server and tentacle processes in temp homes, and always tear them down.

Everything binds 127.0.0.1 on port 0; the bound ports are read from each home's ports.json.
Readiness is the standard gRPC health check over the real TLS endpoint. Teardown is SIGTERM, a
grace period, then SIGKILL of the whole process group, so nothing outlives a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cuttle.protocol import channel, pki

BIN = Path(sys.executable).parent
# Short, configured intervals instead of sleeps: heartbeats, pickup and loss detection.
SERVER_SETTINGS = {
    "heartbeat_interval_seconds": 0.5,
    "heartbeat_timeout_seconds": 3.0,
    "pickup_timeout_seconds": 10.0,
    "health_check_interval_seconds": 3600.0,
    "connect_timeout_seconds": 5.0,
    "agent_lost_after_seconds": 60.0,
}


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Wait until predicate() returns something truthy; fail saying what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Process:
    """One child process with its log file."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it in its own process group, output to the log file."""
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.args,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        handle.close()

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash)."""
        if self.popen is not None:
            _signal_group(self.popen, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM, wait, then SIGKILL the group."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            _signal_group(self.popen, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        _signal_group(self.popen, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def tail(self, lines: int = 60) -> str:
        """The end of its log, for failure reports."""
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["GRPC_VERBOSITY"] = "ERROR"
    env["CUTTLE_LOG_FORMAT"] = "json"
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def read_ports(home: Path) -> dict[str, int] | None:
    """The ports a process bound, once it has written them."""
    try:
        data: dict[str, int] = json.loads((home / "ports.json").read_text())
        return data
    except (OSError, ValueError):
        return None


def _healthy(target: str, credentials: grpc.ChannelCredentials, name: str) -> bool:
    with grpc.secure_channel(target, credentials, options=channel.client_options(name)) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Server:
    """A cuttle-server node in a temp home."""

    home: Path
    procs: list[Process]
    settings: dict[str, Any] = field(default_factory=lambda: dict(SERVER_SETTINGS))
    thumbprint: str = ""
    api_key: str = ""
    process: Process | None = None
    admin_port: int = 0
    polling_port: int = 0
    # Environments known to exist (case-folded), so each is created once per server.
    environments: set[str] = field(default_factory=set)

    def init(self) -> None:
        """cuttle-server init; keeps the thumbprint and admin key."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "server.json").write_text(json.dumps(self.settings))
        out = subprocess.run(
            [str(BIN / "cuttle-server"), "init", "--home", str(self.home), "--output", "json"],
            check=True,
            capture_output=True,
            env=_env(),
            timeout=60,
        )
        data = json.loads(out.stdout)
        self.thumbprint, self.api_key = data["thumbprint"], data["api_key"]

    def join(self, first: Server) -> subprocess.CompletedProcess[str]:
        """cuttle-server join: this home becomes another node of first's database."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "server.json").write_text(json.dumps(self.settings))
        result = subprocess.run(
            [
                str(BIN / "cuttle-server"),
                "join",
                "--home",
                str(self.home),
                "--database-url",
                str(first.settings["database_url"]),
                "--master-key",
                str(first.home / "master.key"),
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
        if result.returncode == 0:
            self.thumbprint = json.loads(result.stdout)["thumbprint"]
            self.api_key = first.api_key
        return result

    def start(self) -> None:
        """cuttle-server run on free ports (the same ones again after a restart)."""
        (self.home / "ports.json").unlink(missing_ok=True)
        args = [
            str(BIN / "cuttle-server"),
            "run",
            "--home",
            str(self.home),
            "--listen-host",
            self.host,
            "--admin-port",
            str(self.admin_port),
            "--polling-port",
            str(self.polling_port),
        ]
        self.process = Process("server", args, self.home / "server.log", _env())
        self.procs.append(self.process)
        self.process.start()
        ports = wait_for(
            lambda: read_ports(self.home) or self._died(), 30, "the server's ports.json"
        )
        self.admin_port, self.polling_port = ports["admin"], ports["polling"]
        pem = (self.home / "server-certificate.pem").read_bytes()
        wait_for(
            lambda: (
                _healthy(
                    f"{self.host}:{self.admin_port}",
                    grpc.ssl_channel_credentials(root_certificates=pem),
                    pki.SERVER_NAME,
                )
                or self._died()
            ),
            30,
            "the server's gRPC health",
        )

    def _died(self) -> bool:
        if self.process is not None and not self.process.alive():
            raise AssertionError(f"cuttle-server exited:\n{self.process.tail()}")
        return False

    @property
    def host(self) -> str:
        """The address both endpoints bind: the listen_host setting, else 127.0.0.1."""
        return str(self.settings.get("listen_host", "127.0.0.1"))

    @property
    def url(self) -> str:
        """The admin address."""
        return f"https://{self.host}:{self.admin_port}"

    def cli_env(self) -> dict[str, str]:
        """Environment for the `cuttle` admin client."""
        return _env(
            {
                "CUTTLE_SERVER": self.url,
                "CUTTLE_API_KEY": self.api_key,
                "CUTTLE_SERVER_THUMBPRINT": self.thumbprint,
            }
        )

    def cli(
        self, *args: str, timeout: float = 90, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run `cuttle ARGS` against this server."""
        result = subprocess.run(
            [str(BIN / "cuttle"), *args],
            capture_output=True,
            text=True,
            env=self.cli_env(),
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"cuttle {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        """Run a listing with --output json and parse it."""
        return json.loads(self.cli(*args, "--output", "json", check=True).stdout)

    def ensure_environments(self, names: tuple[str, ...]) -> None:
        """Create the environments a registration names: the server refuses unknown ones."""
        for name in names:
            if name.casefold() in self.environments:
                continue
            result = self.cli("environment", "create", name)
            if result.returncode != 0 and "already exists" not in result.stderr:
                raise AssertionError(f"cuttle environment create {name} failed:\n{result.stderr}")
            self.environments.add(name.casefold())


@dataclass
class Tentacle:
    """A tentacle instance in a temp home."""

    name: str
    home: Path
    style: str
    server: Server
    procs: list[Process]
    process: Process | None = None
    port: int = 0
    # The address it listens on and registers with, and a prefix for every `tentacle` command
    # (`ip netns exec NS` runs it inside a network namespace; exec keeps the pid, so the
    # process-group teardown still applies).
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)

    def tentacle(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `tentacle ARGS --home HOME`."""
        result = subprocess.run(
            [*self.prefix, str(BIN / "tentacle"), *args, "--home", str(self.home)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"tentacle {args[0]} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def create(self, environments: tuple[str, ...], roles: tuple[str, ...]) -> None:
        """create-instance, configure, start, register (the order each style needs)."""
        self.tentacle("create-instance")
        self.tentacle(
            "configure",
            "--port",
            "0",
            "--listen-host",
            self.host,
            "--trust-certificate",
            str(self.server.home / "server-certificate.pem"),
            "--heartbeat-interval",
            "0.5",
            "--heartbeat-timeout",
            "3",
            "--reconnect-max-delay",
            "1",
        )
        register = [
            "register-with",
            "--server",
            self.server.url,
            "--server-thumbprint",
            self.server.thumbprint,
            "--api-key",
            self.server.api_key,
            "--name",
            self.name,
            "--comms-style",
            self.style,
            "--public-hostname",
            self.host,
        ]
        for env in environments:
            register += ["--environment", env]
        for role in roles:
            register += ["--role", role]
        self.server.ensure_environments(environments)
        if self.style == "listening":
            self.start()
            self.tentacle(*register)
        else:
            self.tentacle(*register)
            self.start()

    @property
    def thumbprint(self) -> str:
        """This instance's certificate thumbprint."""
        return self.tentacle("show-thumbprint").stdout.strip()

    def start(self) -> None:
        """tentacle run; waits until it serves (listening) or is connected (polling)."""
        (self.home / "ports.json").unlink(missing_ok=True)
        if self.port:
            self.tentacle("configure", "--port", str(self.port))
        self.process = Process(
            f"tentacle {self.name}",
            [*self.prefix, str(BIN / "tentacle"), "run", "--home", str(self.home)],
            self.home / "tentacle.log",
            _env(),
        )
        self.procs.append(self.process)
        self.process.start()
        wait_for(
            lambda: read_ports(self.home) is not None or self._died(),
            30,
            f"{self.name}'s ports.json",
        )
        ports = read_ports(self.home) or {}
        if self.style == "listening":
            self.port = ports["listening"]
            server_key = self.server.home / "server-key.pem"
            server_cert = self.server.home / "server-certificate.pem"
            credentials = grpc.ssl_channel_credentials(
                root_certificates=(self.home / "certificate.pem").read_bytes(),
                private_key=server_key.read_bytes(),
                certificate_chain=server_cert.read_bytes(),
            )
            wait_for(
                lambda: (
                    _healthy(f"{self.host}:{self.port}", credentials, pki.TENTACLE_NAME)
                    or self._died()
                ),
                30,
                f"{self.name}'s gRPC health",
            )
        elif self.server.process is not None and self.server.process.alive():
            self.wait_connected()

    def wait_connected(self, timeout: float = 30) -> None:
        """Wait until the server sees this polling Tentacle's stream."""

        def connected() -> bool:
            self._died()
            machines = self.server.cli_json("machine", "list")
            return any(m["name"] == self.name and m["connected"] for m in machines)

        wait_for(connected, timeout, f"{self.name} to connect", interval=0.2)

    def _died(self) -> bool:
        if self.process is not None and not self.process.alive():
            raise AssertionError(f"tentacle {self.name} exited:\n{self.process.tail()}")
        return False


@dataclass
class Cluster:
    """A server and its Tentacles for one test."""

    root: Path
    procs: list[Process] = field(default_factory=list)
    server: Server = field(init=False)
    tentacles: dict[str, Tentacle] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.server = Server(self.root / "server", self.procs)

    def start_server(self, **settings: Any) -> Server:
        """Initialise and start the server."""
        self.server.settings.update(settings)
        self.server.init()
        self.server.start()
        return self.server

    def join_node(self, first: Server) -> Server:
        """Another node of first's database, made with `cuttle-server join` (not started)."""
        second = Server(self.root / "server-b", self.procs)
        second.settings.update({k: v for k, v in first.settings.items() if k != "database_url"})
        joined = second.join(first)
        assert joined.returncode == 0, joined.stderr
        return second

    def add_tentacle(
        self,
        name: str,
        style: str,
        environments: tuple[str, ...] = ("Dev",),
        roles: tuple[str, ...] = ("web",),
        *,
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),
    ) -> Tentacle:
        """Create, register and start a Tentacle of the given comms style."""
        tentacle = Tentacle(
            name, self.root / name, style, self.server, self.procs, host=host, prefix=list(prefix)
        )
        tentacle.create(environments, roles)
        self.tentacles[name] = tentacle
        return tentacle

    def logs(self) -> str:
        """Every process's log tail, for a failing test's report."""
        return "\n\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.procs)

    def stop(self) -> None:
        """Stop everything, Tentacles first; then any built-in worker a killed server left."""
        for proc in reversed(self.procs):
            proc.stop()
        for lock in self.root.glob("*/worker/tentacle.lock"):
            holder = lock.read_text().split()  # empty once its holder stopped
            with suppress(ValueError, OSError):
                if holder:
                    os.kill(int(holder[0]), signal.SIGKILL)


@contextmanager
def running_cluster(root: Path) -> Iterator[Cluster]:
    """A Cluster that is always torn down."""
    cluster = Cluster(root)
    try:
        yield cluster
    finally:
        cluster.stop()
