"""Many polling Tentacles in a few processes, each the product's own agent with its own home.

For fleet benchmarks that give the Tentacles work (packages, deployments). Every Tentacle is a
`TentacleAgent` (tentacle/cuttle/tentacle/app.py, what `tentacle run` starts) on its own home:
its own certificate, configuration, script manager, upload store and package cache, so what
the agent gains later (the deploy_package step) comes with it. bench_polling_fleet.py's drivers
do not fit such work: they build bare PollingClients over ONE script manager and ONE package
cache per driver process, fine for idle Tentacles, but package transfers to "different"
machines would meet in that one cache (one transfer per package: the first to finish makes the
others "found in cache", and concurrent chunks of one transfer refuse each other).

Several agents share a process and its event loop so that 50 Tentacles cost a few
interpreters, not 50 (and no `tentacle` CLI runs per machine); they share no state. Being on
one loop, a process's agents take turns on one core, as they would on a 2-core machine anyway.
Machines register through the admin API as `tentacle register-with` does (RegisterMachine,
GetServerInfo, then the pinned server and the polling address go into tentacle.json).

From a benchmark's event loop (benchlib.Children starts and ends the processes):

    swarm = await start_swarm(children, root, server, count=50, per_process=10,
                              environments=("Bench",), roles=("web",))
    await swarm.wait_connected(server, timeout=120)
    ... deploy to swarm.names ...
    await swarm.close()

`server` is the harness's Server (tests/integration/harness/cluster.py), started. Its API key
goes to the drivers on stdin, never on a command line.

Run alone, it checks itself: a cuttle-server, N Tentacles, the time until the server lists
every one as connected, the drivers' memory, and one `cuttle script run` on all of them:

    .venv/bin/python scripts/bench/tentacle_swarm.py [--count 50] [--per-process 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import grpc

from cuttle.protocol import channel, pki

HERE_FILE = Path(__file__).resolve()
# Short intervals, as the integration tests configure them: a lost stream shows in seconds.
HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_TIMEOUT = 3.0
RECONNECT_MAX_DELAY = 1.0


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


# -- the driver process: some of the swarm's agents on one event loop ---------------------------


async def _register(homes: list[Path], names: list[str], cmd: dict[str, Any]) -> None:
    """Register each home's certificate and write what register-with writes into its config."""
    from cuttle.protocol.v1 import admin_pb2, admin_pb2_grpc
    from cuttle.tentacle.config import InstanceHome, ServerLink

    server_pem = await asyncio.to_thread(Path(cmd["server_cert"]).read_bytes)
    metadata = (("x-api-key", cmd["api_key"]),)
    async with grpc.aio.secure_channel(
        cmd["admin"],
        grpc.ssl_channel_credentials(root_certificates=server_pem),
        options=channel.client_options(pki.SERVER_NAME),
    ) as chan:
        stub = admin_pb2_grpc.AdminServiceStub(chan)
        info = await stub.GetServerInfo(
            admin_pb2.GetServerInfoRequest(), metadata=metadata, timeout=60
        )
        polling = f"{cmd['admin'].rsplit(':', 1)[0]}:{info.polling_port}"
        for home, name in zip(homes, names, strict=True):
            instance = InstanceHome(home)
            identity = instance.identity()
            await stub.RegisterMachine(
                admin_pb2.RegisterMachineRequest(
                    name=name,
                    environments=list(cmd["environments"]),
                    roles=list(cmd["roles"]),
                    comms_style=admin_pb2.COMMS_STYLE_POLLING,
                    certificate_pem=identity.certificate_pem.decode(),
                ),
                metadata=metadata,
                timeout=60,
            )
            config = instance.load()
            config.trust(cmd["server_thumbprint"], server_pem.decode())
            config.comms_style = "polling"
            config.server = ServerLink(
                admin_address=cmd["admin"], machine_name=name, polling_address=polling
            )
            instance.save(config)


def _create_homes(root: Path, names: list[str], settings: dict[str, Any]) -> list[Path]:
    from cuttle.tentacle.config import InstanceHome

    homes = []
    for name in names:
        instance = InstanceHome(root / name)
        instance.create()
        config = instance.load()
        config.heartbeat_interval_seconds = HEARTBEAT_INTERVAL
        config.heartbeat_timeout_seconds = HEARTBEAT_TIMEOUT
        config.reconnect_max_delay_seconds = RECONNECT_MAX_DELAY
        instance.save(config)
        if settings:
            raw = json.loads(instance.config_path.read_text())
            raw.update(settings)
            instance.config_path.write_text(json.dumps(raw))
        homes.append(instance.path)
    return homes


async def _driver(args: argparse.Namespace) -> int:
    from cuttle.protocol.logconfig import configure_logging
    from cuttle.tentacle.app import TentacleAgent
    from cuttle.tentacle.config import InstanceHome

    benchlib.raise_fd_limit()
    if args.nice:
        os.nice(args.nice)
    root = Path(args.dir)
    log = benchlib.log_stream(root / f"driver-{args.index}.log")
    configure_logging("info", stream=log)
    names = [f"{args.prefix}-{args.first + k:03d}" for k in range(args.count)]
    settings = json.loads(args.settings) if args.settings else {}
    homes = await asyncio.to_thread(_create_homes, root, names, settings)
    _emit(event="ready", names=names)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    agents: list[TentacleAgent] = []
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "register":
                await _register(homes, names, cmd)
                for home in homes:
                    agent = TentacleAgent(InstanceHome(home))
                    await agent.start()
                    agents.append(agent)
                _emit(event="started", count=len(agents))
            elif cmd["cmd"] == "exit":
                break
    finally:
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)
        log.close()
    return 0


# -- the orchestrating side --------------------------------------------------------------------


@dataclass
class _Driver:
    proc: asyncio.subprocess.Process
    names: list[str] = field(default_factory=list)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def expect(self, event: str, timeout: float, log: Path) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            message: dict[str, Any] = await benchlib.read_json_line(
                self.proc.stdout, timeout, f"swarm driver ({event})"
            )
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{benchlib.tail(log)}") from None
        if message.get("event") != event:
            raise RuntimeError(f"swarm driver said {message}, expected {event}")
        return message


@dataclass
class Swarm:
    """The driver processes and the machine names of their Tentacles."""

    drivers: list[_Driver]
    root: Path

    @property
    def names(self) -> list[str]:
        """Every Tentacle's machine name."""
        return [name for driver in self.drivers for name in driver.names]

    @property
    def pids(self) -> list[int]:
        """The driver processes (for memory and CPU figures)."""
        return [driver.proc.pid for driver in self.drivers]

    def home(self, name: str) -> Path:
        """A Tentacle's home (its package cache is under files/packages)."""
        return self.root / name

    async def wait_connected(self, server: Any, timeout: float) -> float:
        """Wait until the server lists every Tentacle as connected; returns the seconds taken."""
        from cuttle.protocol.v1 import admin_pb2, admin_pb2_grpc

        wanted = set(self.names)
        started = time.monotonic()
        pem = await asyncio.to_thread((server.home / "server-certificate.pem").read_bytes)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{server.admin_port}",
            grpc.ssl_channel_credentials(root_certificates=pem),
            options=channel.client_options(pki.SERVER_NAME),
        ) as chan:
            stub = admin_pb2_grpc.AdminServiceStub(chan)
            async with asyncio.timeout(timeout):
                while True:
                    reply = await stub.ListMachines(
                        admin_pb2.ListMachinesRequest(),
                        metadata=(("x-api-key", server.api_key),),
                        timeout=30,
                    )
                    if wanted <= {m.name for m in reply.machines if m.connected}:
                        return time.monotonic() - started
                    # The server has no event to wait on from here; a setup step may poll.
                    await asyncio.sleep(0.2)

    async def close(self) -> None:
        """Ask every driver to stop its agents and exit (Children kills what remains)."""
        for driver in self.drivers:
            if driver.proc.returncode is None and driver.proc.stdin is not None:
                try:
                    driver.send(cmd="exit")
                    driver.proc.stdin.close()
                except (OSError, RuntimeError):
                    continue
        for driver in self.drivers:
            try:
                async with asyncio.timeout(20):
                    await driver.proc.wait()
            except TimeoutError:
                pass


async def start_swarm(
    children: benchlib.Children,
    root: Path,
    server: Any,
    *,
    count: int,
    per_process: int = 10,
    environments: tuple[str, ...] = ("Bench",),
    roles: tuple[str, ...] = ("swarm",),
    prefix: str = "swarm",
    settings: dict[str, Any] | None = None,
    nice: int = 0,
) -> Swarm:
    """Start `count` polling Tentacles, `per_process` to a driver, registered and running.

    The environments must exist on the server. `settings` go into every tentacle.json (for
    example the package cache's size). Returns once every agent has started; see
    Swarm.wait_connected for the server's side.
    """
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    drivers: list[_Driver] = []
    first = 0
    for index in range(-(-count // per_process)):
        n = min(per_process, count - first)
        proc = await children.spawn(
            [
                benchlib.PYTHON,
                str(HERE_FILE),
                "driver",
                "--dir",
                str(root),
                "--index",
                str(index),
                "--first",
                str(first),
                "--count",
                str(n),
                "--prefix",
                prefix,
                "--nice",
                str(nice),
                "--settings",
                json.dumps(settings or {}),
            ],
            log=root / f"driver-{index}.stderr",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        drivers.append(_Driver(proc))
        first += n
    swarm = Swarm(drivers, root)
    for index, driver in enumerate(drivers):
        ready = await driver.expect("ready", 120, root / f"driver-{index}.stderr")
        driver.names = list(ready["names"])
    command = {
        "cmd": "register",
        "admin": f"127.0.0.1:{server.admin_port}",
        "server_cert": str(server.home / "server-certificate.pem"),
        "server_thumbprint": server.thumbprint,
        "api_key": server.api_key,
        "environments": list(environments),
        "roles": list(roles),
    }
    for driver in drivers:
        driver.send(**command)
    for index, driver in enumerate(drivers):
        await driver.expect("started", 300, root / f"driver-{index}.stderr")
    return swarm


# -- the self-check ----------------------------------------------------------------------------


async def _check(args: argparse.Namespace) -> int:
    from tests.integration.harness.cluster import Process, Server

    benchlib.raise_fd_limit()
    children = benchlib.Children()
    procs: list[Process] = []
    with benchlib.scratch_dir("bench-swarm-") as root:
        server = Server(root / "server", procs)
        try:
            await asyncio.to_thread(server.init)
            await asyncio.to_thread(server.start)
            await asyncio.to_thread(server.ensure_environments, ("Bench",))
            started = time.monotonic()
            swarm = await start_swarm(
                children, root / "swarm", server, count=args.count, per_process=args.per_process
            )
            up = time.monotonic() - started
            connected = await swarm.wait_connected(server, timeout=300)
            rss = sum(benchlib.rss_kib(pid) for pid in swarm.pids)
            print(
                f"{args.count} polling Tentacles in {len(swarm.pids)} processes: started in "
                f"{up:.1f}s, all connected {connected:.1f}s later; drivers' RSS "
                f"{rss / 1024:,.0f} MiB ({rss / args.count / 1024:.1f} MiB per Tentacle)",
                flush=True,
            )
            run = await asyncio.to_thread(
                server.cli,
                "script",
                "run",
                "--role",
                "swarm",
                "--syntax",
                "bash",
                "--",
                "echo swarm-ok",
                timeout=300,
            )
            answered = run.stdout.count("swarm-ok")
            print(
                f"`cuttle script run --role swarm`: exit {run.returncode}, {answered} of "
                f"{args.count} machines answered",
                flush=True,
            )
            await swarm.close()
            ok = run.returncode == 0 and answered >= args.count
            print(
                f"\nsummary: {args.count} Tentacles ({args.per_process} per process) "
                f"connected in {up + connected:.1f}s, {rss / args.count / 1024:.1f} MiB each, "
                f"script on all: {'ok' if ok else 'FAILED'}"
            )
            return 0 if ok else 1
        finally:
            await children.aclose()
            for proc in reversed(procs):
                await asyncio.to_thread(proc.stop)


def main() -> None:
    """The self-check, or (as `driver`) one process of the swarm."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command")
    driver = sub.add_parser("driver", help="run some of the swarm's agents (internal)")
    driver.add_argument("--dir", required=True)
    driver.add_argument("--index", type=int, required=True)
    driver.add_argument("--first", type=int, required=True)
    driver.add_argument("--count", type=int, required=True)
    driver.add_argument("--prefix", default="swarm")
    driver.add_argument("--nice", type=int, default=0)
    driver.add_argument("--settings", default="")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--per-process", type=int, default=10)
    args = parser.parse_args()
    if args.command == "driver":
        sys.exit(asyncio.run(_driver(args)))
    benchlib.run_main(lambda: _check(args))


if __name__ == "__main__":
    main()
