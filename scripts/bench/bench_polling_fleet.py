"""Benchmark: a fleet of idle polling Tentacles held by one server, and its reconnect storm.

Cuttle: N polling Tentacles, each with its own ECDSA P-256 certificate registered through the
admin API (GetServerInfo + RegisterMachine with an API key, as `tentacle register-with` does),
each running the Tentacle's own PollingClient (tentacle/cuttle/tentacle/comms/polling.py), many
per driver process, all held by ONE real `cuttle-server` process with production polling
settings (heartbeats every 10 s, 30 s silence limit). Measured: the server's RSS before
registration, after it and once every Tentacle is connected (KiB per Tentacle), the count of
connected machines as the server reports it (`cuttle machine list --output json`), and the
reconnect storm: the server is SIGKILLed, stays down for a fixed outage, is restarted, and the
time until every Tentacle is connected again is taken.
Bare: the same N certificates as grpc.aio mTLS clients, each holding one idle bidi stream to a
bare server (trusting the same N certificates), with the same reconnect policy (a new channel
per attempt and the same capped, jittered backoff); the bare server is killed and restarted the
same way.

The driver processes stand in for N other machines, so they run at a lower priority (--nice)
and do not take the CPU from the server being measured. Machines register one at a time (the
registration time is reported; it grows with the fleet).

Goals: N >= 5,000 connected; server memory per Tentacle <= 300 KiB; every Tentacle back after
the restart, within 2x the bare clients' time (from the restart; from the kill is shown too).

Run: .venv/bin/python scripts/bench/bench_polling_fleet.py [--count N] [--drivers D] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import grpc
from benchlib import Children, compare

from cuttle.protocol import pki
from cuttle.protocol.backoff import Backoff

HERE_FILE = Path(__file__).resolve()
GOAL_COUNT = 5000
GOAL_KIB = 300.0
GOAL_STORM = 2.0
SAMPLE_SECONDS = 0.02
# Production settings except the scheduled health check, which would otherwise send GetInfo to
# every machine in the middle of the idle measurement.
SERVER_SETTINGS: dict[str, Any] = {"health_check_interval_seconds": 3600.0}


# -- the driver process: many Tentacles (or bare clients) in one event loop ----------------------


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class _BareClient:
    """A bare grpc.aio client holding one idle bidi stream, reconnecting like a Tentacle."""

    def __init__(self, identity: pki.Identity, address: str, server_pem: bytes, cap: float):
        self.identity = identity
        self.address = address
        self.server_pem = server_pem
        self.connected = False
        self._backoff = Backoff(initial=0.5, maximum=cap)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with benchlib.bare_channel(
                    self.address, self.identity, self.server_pem
                ) as chan:
                    # No request iterator: an idle one would keep grpc.aio's consumer task,
                    # and with it the closed channel, alive (see the report of this benchmark).
                    # grpc.aio allows omitting it (the stubs do not know).
                    call = benchlib.bare_bidi(chan, "Hold")()  # type: ignore[call-arg]
                    async for _ in call:
                        if not self.connected:
                            self.connected = True
                            self._backoff.reset()
            except grpc.aio.AioRpcError:
                pass
            finally:
                self.connected = False
            await asyncio.sleep(self._backoff.next_delay())


async def _register(names: list[str], identities: list[pki.Identity], cmd: dict[str, Any]) -> str:
    """Register every machine the way `tentacle register-with` does; returns the poll address."""
    from cuttle.protocol import channel
    from cuttle.protocol.v1 import admin_pb2, admin_pb2_grpc

    server_pem = await asyncio.to_thread(Path(cmd["server_cert"]).read_bytes)
    credentials = grpc.ssl_channel_credentials(root_certificates=server_pem)
    metadata = (("x-api-key", cmd["api_key"]),)
    async with grpc.aio.secure_channel(
        cmd["admin"], credentials, options=channel.client_options(pki.SERVER_NAME)
    ) as chan:
        stub = admin_pb2_grpc.AdminServiceStub(chan)
        info = await stub.GetServerInfo(
            admin_pb2.GetServerInfoRequest(), metadata=metadata, timeout=60
        )
        slots = asyncio.Semaphore(int(cmd.get("concurrency", 1)))

        async def one(name: str, identity: pki.Identity) -> None:
            async with slots:
                await stub.RegisterMachine(
                    admin_pb2.RegisterMachineRequest(
                        name=name,
                        environments=["Bench"],
                        roles=["fleet"],
                        comms_style=admin_pb2.COMMS_STYLE_POLLING,
                        certificate_pem=identity.certificate_pem.decode(),
                    ),
                    metadata=metadata,
                    timeout=600,
                )

        await asyncio.gather(*(one(n, i) for n, i in zip(names, identities, strict=True)))
    host = cmd["admin"].rsplit(":", 1)[0]
    return f"{host}:{info.polling_port}"


async def _driver(args: argparse.Namespace) -> int:
    from cuttle.protocol.logconfig import configure_logging
    from cuttle.tentacle.comms.polling import PollingClient, PollingSettings, PollingTarget
    from cuttle.tentacle.execution.manager import ScriptManager
    from cuttle.tentacle.files.transfer import UploadStore
    from cuttle.tentacle.packages.cache import PackageCache, cache_root
    from cuttle.tentacle.packages.receive import PackageReceiver
    from cuttle.tentacle.services.handlers import TentacleHandlers

    benchlib.raise_fd_limit()
    # The drivers stand in for thousands of other machines: their CPU must not be taken from
    # the server they measure (the same for the bare server and cuttle-server).
    os.nice(args.nice)
    home = Path(args.dir) / f"driver-{args.index}"
    home.mkdir(parents=True, exist_ok=True)
    log = benchlib.log_stream(home / "driver.log")
    configure_logging("info", stream=log)
    # One default home name (/etc/cuttle/tentacle) on every VM gives every certificate the same
    # subject, as a real fleet installed with the defaults would have.
    identities = [
        pki.generate_identity("Tentacle tentacle", pki.TENTACLE_NAME) for _ in range(args.count)
    ]
    names = [f"fleet-{args.first + k:05d}" for k in range(args.count)]
    (home / "clients.pem").write_bytes(b"".join(i.certificate_pem for i in identities))
    # Idle Tentacles get no work; they share one script manager so that thousands of them do
    # not each keep a tickets folder, but each answers for its own certificate.
    manager = ScriptManager(home / "agent", use_cgroups=False)
    uploads = UploadStore(home / "agent" / "uploads")
    packages = PackageReceiver(PackageCache(cache_root(home / "agent")))
    _emit(event="ready")

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet: list[Any] = []
    is_up: Callable[[Any], bool] = lambda c: False  # noqa: E731
    sampler: asyncio.Task[None] | None = None

    async def sample() -> None:
        last = -1
        while True:
            n = sum(1 for c in fleet if is_up(c))
            if n != last:
                _emit(event="count", n=n, t=time.monotonic())
                last = n
            await asyncio.sleep(SAMPLE_SECONDS)

    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "register":
            start = time.monotonic()
            address = await _register(names, identities, cmd)
            _emit(event="registered", seconds=time.monotonic() - start, address=address)
        elif cmd["cmd"] == "connect":
            server_pem = await asyncio.to_thread(Path(cmd["server_cert"]).read_bytes)
            cap = float(cmd["backoff_cap"])
            if cmd["kind"] == "cuttle":
                settings = PollingSettings(connections=1, reconnect_max_delay=cap)
                target = PollingTarget(cmd["address"], server_pem)

                def where(target: PollingTarget = target) -> PollingTarget:
                    return target

                for identity in identities:
                    handlers = TentacleHandlers(
                        manager,
                        uploads,
                        packages,
                        thumbprint=identity.thumbprint,
                        comms_style="polling",
                        disk_path=str(home),
                    )
                    fleet.append(PollingClient(handlers, identity, where, settings))
                is_up = lambda c: c.connected.is_set()  # noqa: E731
                for client in fleet:
                    await client.start()
            else:
                fleet.extend(
                    _BareClient(identity, cmd["address"], server_pem, cap)
                    for identity in identities
                )
                is_up = lambda c: c.connected  # noqa: E731
                for client in fleet:
                    client.start()
            sampler = asyncio.create_task(sample())
            _emit(event="connecting")
        elif cmd["cmd"] == "disconnect":
            if sampler is not None:
                sampler.cancel()
            await asyncio.gather(*(c.stop() for c in fleet), return_exceptions=True)
            fleet.clear()
            _emit(event="count", n=0, t=time.monotonic())
            _emit(event="disconnected")
        elif cmd["cmd"] == "exit":
            break
    await manager.close()
    log.close()
    return 0


# -- the orchestrating process -----------------------------------------------------------------


@dataclass
class _Driver:
    proc: asyncio.subprocess.Process
    count: int
    n: int = 0
    # (n, monotonic time) as reported, for finding when everyone was back.
    history: list[tuple[int, float]] = field(default_factory=list)
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            message = await self.events.get()
        if message.get("event") != event:
            raise RuntimeError(f"driver said {message}, expected {event}")
        return message


class _Fleet:
    """The driver processes and the connected count they report."""

    def __init__(self, drivers: list[_Driver]) -> None:
        self.drivers = drivers
        self.total = sum(d.count for d in drivers)
        self.changed = asyncio.Condition()
        self._readers = [asyncio.create_task(self._read(d)) for d in drivers]

    async def _read(self, driver: _Driver) -> None:
        assert driver.proc.stdout is not None
        while line := await driver.proc.stdout.readline():
            message = json.loads(line)
            if message["event"] == "count":
                driver.n = int(message["n"])
                driver.history.append((driver.n, float(message["t"])))
                async with self.changed:
                    self.changed.notify_all()
            else:
                await driver.events.put(message)
        await driver.events.put({"event": "exited"})
        async with self.changed:
            self.changed.notify_all()

    def connected(self) -> int:
        """Tentacles connected now, as the drivers last reported."""
        return sum(d.n for d in self.drivers)

    async def wait_connected(self, wanted: int, timeout: float) -> None:
        """Wait until exactly `wanted` are connected."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: self.connected() == wanted)

    def all_back_at(self, since: float) -> float:
        """When the last driver got back to its full count after `since` (monotonic)."""
        return max(
            min(t for n, t in d.history if n == d.count and t >= since) for d in self.drivers
        )

    async def command(self, event: str, timeout: float, **cmd: Any) -> list[dict[str, Any]]:
        """Send a command to every driver and wait for each one's answer."""
        for driver in self.drivers:
            driver.send(**cmd)
        return [await d.expect(event, timeout) for d in self.drivers]

    async def close(self) -> None:
        """Ask the drivers to exit; the caller's Children kills what remains."""
        for driver in self.drivers:
            if driver.proc.returncode is None and driver.proc.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    driver.send(cmd="exit")
        for task in self._readers:
            task.cancel()


@dataclass
class _Storm:
    down_after: float  # kill -> every client noticed
    ready_after: float  # restart -> server serving
    back_after_restart: float  # restart -> every client connected again
    back_after_kill: float  # kill -> every client connected again


async def _storm(
    fleet: _Fleet,
    kill: Callable[[], Any],
    restart: Callable[[], Any],
    outage: float,
    timeout: float,
) -> _Storm:
    """Kill the server, keep it down for `outage`, restart it, time until all are back."""
    killed = time.monotonic()
    await kill()
    await fleet.wait_connected(0, timeout)
    down = time.monotonic()
    await asyncio.sleep(outage)  # the same deliberate outage for Cuttle and bare
    restarted = time.monotonic()
    await restart()
    ready = time.monotonic()
    await fleet.wait_connected(fleet.total, timeout)
    back = fleet.all_back_at(restarted)
    return _Storm(down - killed, ready - restarted, back - restarted, back - killed)


async def _spawn_drivers(
    children: Children, root: Path, count: int, drivers: int, nice: int
) -> list[_Driver]:
    per = [count // drivers + (1 if k < count % drivers else 0) for k in range(drivers)]
    out: list[_Driver] = []
    first = 0
    for index, n in enumerate(per):
        proc = await children.spawn(
            [
                benchlib.PYTHON,
                str(HERE_FILE),
                "--driver",
                "--dir",
                str(root),
                "--index",
                str(index),
                "--first",
                str(first),
                "--count",
                str(n),
                "--nice",
                str(nice),
            ],
            log=root / f"driver-{index}.stderr",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        out.append(_Driver(proc, n))
        first += n
    return out


async def _restart_cuttle(server: Any, timeout: float) -> None:
    """`cuttle-server run` again on the same ports; returns once it wrote ports.json (serving).

    The harness gives a server 30 s to come up; in the middle of a storm on a 2-core machine
    it may need longer, so this waits up to `timeout`.
    """
    from tests.integration.harness.cluster import BIN, Process, read_ports

    home = server.home
    (home / "ports.json").unlink(missing_ok=True)
    process = Process(
        "server",
        [
            str(BIN / "cuttle-server"),
            "run",
            "--home",
            str(home),
            "--listen-host",
            "127.0.0.1",
            "--admin-port",
            str(server.admin_port),
            "--polling-port",
            str(server.polling_port),
        ],
        home / "server.log",
        benchlib.child_env(),
    )
    server.procs.append(process)
    server.process = process
    process.start()
    async with asyncio.timeout(timeout):
        # ports.json appears once both endpoints serve; there is nothing to wait on instead.
        while read_ports(home) is None:  # noqa: ASYNC110
            if not process.alive():
                raise RuntimeError(f"cuttle-server exited on restart:\n{process.tail()}")
            await asyncio.sleep(0.02)


def _pid(server: Any) -> int:
    """The pid of the running cuttle-server process."""
    assert server.process is not None
    assert server.process.popen is not None
    return int(server.process.popen.pid)


def _connected_per_server(server: Any) -> tuple[int, int]:
    """(machines registered, machines connected) as `cuttle machine list` reports them."""
    machines = server.cli_json("machine", "list")
    return len(machines), sum(1 for m in machines if m.get("connected"))


async def _bare_phase(
    fleet: _Fleet, children: Children, root: Path, bundle: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Bare clients against a bare server: first connect, memory, open files, the storm."""
    figures: dict[str, Any] = {}
    bare_id = benchlib.write_identity(
        pki.generate_identity("bare server", pki.SERVER_NAME), root / "bare", "server"
    )
    log = root / "bare" / "server.log"
    proc, port = await benchlib.start_bare_server(children, "hold", bare_id, bundle, log)
    await asyncio.sleep(1.0)  # let the new process settle before the baseline RSS
    figures["bare_rss_before"] = benchlib.rss_kib(proc.pid)
    start = time.monotonic()
    await fleet.command(
        "connecting",
        60,
        cmd="connect",
        kind="bare",
        address=f"127.0.0.1:{port}",
        server_cert=str(bare_id.cert),
        backoff_cap=args.backoff_cap,
    )
    await fleet.wait_connected(fleet.total, args.timeout)
    figures["bare_first_connect"] = time.monotonic() - start
    await asyncio.sleep(args.settle)
    figures["bare_rss_after"] = benchlib.rss_kib(proc.pid)
    figures["bare_fds"] = benchlib.open_fds(proc.pid)
    print(f"bare: {fleet.total:,} streams up in {figures['bare_first_connect']:.1f}s", flush=True)

    async def kill() -> None:
        await children.kill(proc)

    async def restart() -> None:
        nonlocal proc
        proc, _ = await benchlib.start_bare_server(children, "hold", bare_id, bundle, log, port)

    figures["bare_storm"] = await _storm(fleet, kill, restart, args.outage, args.timeout)
    print(f"bare: storm {figures['bare_storm']}", flush=True)
    await asyncio.sleep(args.settle)
    figures["bare_fds_after_storm"] = benchlib.open_fds(proc.pid)
    await fleet.command("disconnected", 120, cmd="disconnect")
    await children.kill(proc)
    return figures


async def _cuttle_phase(fleet: _Fleet, server: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Polling Tentacles against cuttle-server: registration, memory, count, the storm."""
    figures: dict[str, Any] = {}
    await asyncio.to_thread(server.init)
    await asyncio.to_thread(server.start)
    # Registration refuses environments the model does not have.
    await asyncio.to_thread(server.ensure_environments, ("Bench",))
    pid = _pid(server)
    await asyncio.sleep(1.0)
    figures["rss_fresh"] = benchlib.rss_kib(pid)
    start = time.monotonic()
    answers: list[dict[str, Any]] = []
    # One driver after the other: concurrent registrations of a large fleet fail on this
    # server with "database is locked" (see the report), which is not what this measures.
    for driver in fleet.drivers:
        driver.send(
            cmd="register",
            admin=f"127.0.0.1:{server.admin_port}",
            server_cert=str(server.home / "server-certificate.pem"),
            api_key=server.api_key,
            concurrency=args.register_concurrency,
        )
        answers.append(await driver.expect("registered", args.timeout * 10))
    figures["register_seconds"] = time.monotonic() - start
    figures["rss_registered"] = benchlib.rss_kib(pid)
    print(
        f"cuttle: registered {fleet.total:,} machines in {figures['register_seconds']:.1f}s",
        flush=True,
    )
    start = time.monotonic()
    await fleet.command(
        "connecting",
        60,
        cmd="connect",
        kind="cuttle",
        address=answers[0]["address"],
        server_cert=str(server.home / "server-certificate.pem"),
        backoff_cap=args.backoff_cap,
    )
    await fleet.wait_connected(fleet.total, args.timeout)
    figures["first_connect"] = time.monotonic() - start
    cpu_before = benchlib.cpu_seconds(pid)
    await asyncio.sleep(args.settle)
    figures["idle_cpu"] = (benchlib.cpu_seconds(pid) - cpu_before) / args.settle
    figures["rss_connected"] = benchlib.rss_kib(pid)
    figures["fds"] = benchlib.open_fds(pid)
    figures["listed"] = await asyncio.to_thread(_connected_per_server, server)
    print(
        f"cuttle: {fleet.total:,} Tentacles up in {figures['first_connect']:.1f}s; "
        f"server lists {figures['listed'][1]:,} of {figures['listed'][0]:,} connected",
        flush=True,
    )

    async def kill() -> None:
        await asyncio.to_thread(server.process.kill)

    async def restart() -> None:
        await _restart_cuttle(server, args.timeout)

    figures["storm"] = await _storm(fleet, kill, restart, args.outage, args.timeout)
    print(f"cuttle: storm {figures['storm']}", flush=True)
    await asyncio.sleep(args.settle)
    figures["fds_after_storm"] = benchlib.open_fds(_pid(server))
    figures["listed_after"] = await asyncio.to_thread(_connected_per_server, server)
    figures["rss_after_storm"] = benchlib.rss_kib(_pid(server))
    await fleet.command("disconnected", 120, cmd="disconnect")
    return figures


async def run(args: argparse.Namespace) -> int:
    """Both phases, then the figures and the summary line."""
    from tests.integration.harness.cluster import Server

    hard = benchlib.raise_fd_limit()
    children = Children()
    figures: dict[str, Any] = {}
    with benchlib.scratch_dir("cuttle-bench-fleet-") as root:
        procs: list[Any] = []
        server = Server(root / "server", procs, settings=dict(SERVER_SETTINGS))
        fleet: _Fleet | None = None
        try:
            t0 = time.monotonic()
            drivers = await _spawn_drivers(children, root, args.count, args.drivers, args.nice)
            fleet = _Fleet(drivers)
            for driver in drivers:
                await driver.expect("ready", 600)
            bundle = root / "clients.pem"
            bundle.write_bytes(
                b"".join(
                    (root / f"driver-{k}" / "clients.pem").read_bytes() for k in range(args.drivers)
                )
            )
            print(
                f"{args.count:,} identities in {args.drivers} driver processes "
                f"({time.monotonic() - t0:.1f}s); open-files limit {hard}",
                flush=True,
            )
            if not args.no_bare:
                figures.update(await _bare_phase(fleet, children, root, bundle, args))
            figures.update(await _cuttle_phase(fleet, server, args))
        finally:
            if fleet is not None:
                await fleet.close()
            await children.aclose()
            for proc in reversed(procs):
                await asyncio.to_thread(proc.stop)

    _report(args, figures)
    return 0


def _report(args: argparse.Namespace, f: dict[str, Any]) -> None:
    n = args.count
    nan = float("nan")
    for key in ("bare_rss_before", "bare_rss_after", "bare_fds", "bare_fds_after_storm"):
        f.setdefault(key, nan)
    f.setdefault("bare_first_connect", nan)
    f.setdefault("bare_storm", _Storm(nan, nan, nan, nan))
    bare_kib = (f["bare_rss_after"] - f["bare_rss_before"]) / n
    total_kib = (f["rss_connected"] - f["rss_fresh"]) / n
    streams_kib = (f["rss_connected"] - f["rss_registered"]) / n
    storm: _Storm = f["storm"]
    bare: _Storm = f["bare_storm"]
    benchlib.heading(
        f"{n:,} idle polling Tentacles ({args.drivers} driver processes) on one cuttle-server "
        "vs bare grpc.aio mTLS clients holding one idle bidi stream each"
    )
    print(
        f"  server RSS: fresh {f['rss_fresh'] / 1024:,.1f} MiB, registered "
        f"{f['rss_registered'] / 1024:,.1f} MiB, connected {f['rss_connected'] / 1024:,.1f} MiB, "
        f"after the storm {f['rss_after_storm'] / 1024:,.1f} MiB; bare server "
        f"{f['bare_rss_before'] / 1024:,.1f} -> {f['bare_rss_after'] / 1024:,.1f} MiB"
    )
    compare("KiB per Tentacle (from fresh)", total_kib, bare_kib, "KiB")
    compare("KiB per Tentacle (streams only)", streams_kib, bare_kib, "KiB")
    print(
        f"  connected per the server: {f['listed'][1]:,} of {f['listed'][0]:,} registered; "
        f"after the storm {f['listed_after'][1]:,}"
    )
    print(
        f"  server open files: connected {f['fds']:,}, {args.settle:g}s after the storm "
        f"{f['fds_after_storm']:,}; bare server {f['bare_fds']:,} and "
        f"{f['bare_fds_after_storm']:,}"
    )
    print(f"  registration through the admin API: {f['register_seconds']:.1f}s for {n:,}")
    print(f"  idle server CPU with all connected: {f['idle_cpu'] * 100:.1f}% of one core")
    compare("first connect, all up", f["first_connect"], f["bare_first_connect"], "s", 2)
    benchlib.heading(
        f"reconnect storm: SIGKILL, {args.outage:g}s outage, restart; client backoff 0.5s "
        f"doubling, full jitter, cap {args.backoff_cap:g}s (both)"
    )
    compare("kill -> all noticed", storm.down_after, bare.down_after, "s", 2)
    compare("restart -> server serving", storm.ready_after, bare.ready_after, "s", 2)
    compare("restart -> all back", storm.back_after_restart, bare.back_after_restart, "s", 2)
    compare("kill -> all back", storm.back_after_kill, bare.back_after_kill, "s", 2)
    storm_ratio = benchlib.ratio(storm.back_after_restart, bare.back_after_restart)
    all_back = f["listed_after"][1] == n
    met = n >= GOAL_COUNT and total_kib <= GOAL_KIB and storm_ratio <= GOAL_STORM and all_back
    print()
    print(
        f"SUMMARY polling_fleet count={f['listed'][1]} (goal >={GOAL_COUNT}) "
        f"kib_per_tentacle={total_kib:.0f} (goal <={GOAL_KIB:.0f}; bare {bare_kib:.0f}) "
        f"storm_ratio={storm_ratio:.2f} (goal <={GOAL_STORM}; "
        f"{storm.back_after_restart:.1f}s vs bare {bare.back_after_restart:.1f}s) "
        f"all_back={'yes' if all_back else 'no'} goal_met={'yes' if met else 'no'}",
        flush=True,
    )


def main() -> None:
    """Parse arguments; run as the orchestrator or, with --driver, as one driver process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=GOAL_COUNT, help="polling Tentacles")
    parser.add_argument("--drivers", type=int, default=4, help="driver processes")
    parser.add_argument("--backoff-cap", type=float, default=5.0, help="reconnect cap, seconds")
    parser.add_argument("--outage", type=float, default=2.0, help="seconds the server is down")
    parser.add_argument("--settle", type=float, default=12.0, help="idle seconds before RSS")
    parser.add_argument(
        "--register-concurrency", type=int, default=1, help="registrations in flight"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="limit per phase, seconds")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the driver processes")
    parser.add_argument("--no-bare", action="store_true", help="skip the baseline (no ratios)")
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        sys.exit(asyncio.run(_driver(args)))
    if args.quick:
        args.count, args.drivers, args.backoff_cap = 40, 2, 1.0
        args.outage, args.settle, args.timeout = 0.5, 1.0, 60.0
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
