"""The built-in worker: a Tentacle this server node runs itself, for steps with no target tags.

It is a real `tentacle run` in `<server home>/worker`, listening on loopback and trusting only
this server's certificate, so its scripts have the same journal, cancel, isolation and resume
as on any machine. Project code never runs as the server's user: the worker's scripts run as a
separate unprivileged user (`run_scripts_as`), which cannot read the server home. That needs the
server to run as root; otherwise, when the user does not exist, or when it is switched off, the
worker is unavailable and deployments that need it are refused, saying why.

A worker left running by a server that was killed is reused on the next start (its scripts go
on, and the engine re-attaches to them by ticket); one that dies is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from cuttle.protocol import pki
from cuttle.server.comms.registry import MachineEndpoint
from cuttle.server.domain.plan import BUILTIN_WORKER

log = structlog.get_logger(__name__)

WORKER_HOME = "worker"
_LOCK_FILE = "tentacle.lock"
_PORTS_FILE = "ports.json"


@dataclass(frozen=True)
class WorkerSettings:
    """Whether to run the worker, as whom, and how patiently."""

    enabled: bool = True
    user: str = "cuttle-worker"
    start_timeout: float = 30.0
    check_interval: float = 5.0


def unavailable_reason(settings: WorkerSettings, tentacle: str | None) -> str:
    """Why this node cannot offer the worker ("" when it can)."""
    if not settings.enabled:
        return "the built-in worker is switched off in the server's settings (builtin_worker)"
    if os.geteuid() != 0:
        return (
            "the server does not run as root, so it cannot run project code as another user "
            "(register a Tentacle for such steps, or give the step target tags)"
        )
    try:
        pwd.getpwnam(settings.user)
    except KeyError:
        return (
            f"its user {settings.user!r} does not exist (create it, e.g. `useradd --system "
            f"{settings.user}`, or set builtin_worker_user)"
        )
    if tentacle is None:
        return "the `tentacle` program is not installed beside the server"
    return ""


def find_tentacle() -> str | None:
    """The `tentacle` executable of the server's own environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "tentacle"
    if beside.exists():
        return str(beside)
    return shutil.which("tentacle")


def create_user(user: str) -> str:
    """Make the worker's unprivileged system user if missing; returns what happened."""
    try:
        pwd.getpwnam(user)
        return f"user {user} exists"
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if os.geteuid() != 0 or useradd is None:
        return f"user {user} not created (needs root and useradd)"
    made = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        pwd.getpwnam(user)  # made now, or by a concurrent init
    except KeyError:
        return f"user {user} not created: {made.stderr.strip()}"
    return f"user {user} created"


class BuiltinWorker:
    """Starts, reuses, watches and stops the worker Tentacle of one server node."""

    def __init__(
        self,
        server_home: Path,
        certificate: Path,
        settings: WorkerSettings,
        adopt: Callable[[MachineEndpoint], Awaitable[None]],
    ) -> None:
        self.home = server_home / WORKER_HOME
        self._adopt = adopt
        self._certificate = certificate
        self._settings = settings
        self._tentacle = find_tentacle()
        self.unavailable = unavailable_reason(settings, self._tentacle)
        self._process: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self.endpoint: MachineEndpoint | None = None

    async def reuse(self) -> None:
        """At the server's start: adopt a worker left running by this node's previous life."""
        if not self.unavailable and _locked(self.home):
            await self.start()

    async def start(self) -> MachineEndpoint | None:
        """Start (or reuse) the worker once it is needed; None when this node cannot offer one."""
        async with self._starting:
            if self.endpoint is not None:
                return self.endpoint
            return await self._start()

    async def _start(self) -> MachineEndpoint | None:
        if self.unavailable:
            log.info("builtin_worker_unavailable", reason=self.unavailable)
            return None
        try:
            self.endpoint = await self._ensure_running()
        except (OSError, subprocess.SubprocessError, TimeoutError, ValueError) as exc:
            self.unavailable = f"it failed to start: {exc}"
            log.error("builtin_worker_failed", error=str(exc))
            return None
        await self._adopt(self.endpoint)
        self._watch = asyncio.create_task(self._watch_forever())
        return self.endpoint

    async def stop(self, grace: float = 5.0) -> None:
        """Stop watching and stop the worker this node started (its scripts are its own)."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, grace)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)

    async def _ensure_running(self) -> MachineEndpoint:
        tentacle = self._tentacle
        if tentacle is None:
            raise ValueError("the `tentacle` program is not installed beside the server")
        if not _locked(self.home):
            await self._configure(tentacle)
            (self.home / _PORTS_FILE).unlink(missing_ok=True)
            self._spawn(tentacle)
        else:
            log.info("builtin_worker_reused", home=str(self.home))
        port = await self._port()
        certificate = (self.home / "certificate.pem").read_bytes()
        return MachineEndpoint(
            BUILTIN_WORKER,
            "listening",
            f"127.0.0.1:{port}",
            pki.thumbprint_of_pem(certificate),
            certificate.decode(),
        )

    async def _configure(self, tentacle: str) -> None:
        home = str(self.home)
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        made = (self.home / "tentacle.json").exists()
        for args in (
            [] if made else ["create-instance"],
            [
                "configure",
                "--port",
                "0",
                "--listen-host",
                "127.0.0.1",
                "--trust-certificate",
                str(self._certificate),
                "--run-scripts-as",
                self._settings.user,
            ],
        ):
            if not args:
                continue
            done = await asyncio.to_thread(
                subprocess.run,
                [tentacle, *args, "--home", home],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode != 0:
                raise ValueError(f"`tentacle {args[0]}` failed: {done.stderr.strip()}")
        log.info("builtin_worker_configured", home=home, user=self._settings.user)

    def _spawn(self, tentacle: str) -> None:
        output = open(self.home / "worker.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._process = subprocess.Popen(
                [tentacle, "run", "--home", str(self.home)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        finally:
            output.close()
        log.info("builtin_worker_started", pid=self._process.pid)

    async def _port(self) -> int:
        deadline = asyncio.get_running_loop().time() + self._settings.start_timeout
        path = self.home / _PORTS_FILE
        while True:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                return int(json.loads(path.read_text())["listening"])
            if self._process is not None and self._process.poll() is not None:
                raise ValueError(
                    f"the worker exited with {self._process.returncode}; see "
                    f"{self.home / 'worker.log'}"
                )
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"the worker did not start within {self._settings.start_timeout}s"
                )
            await asyncio.sleep(0.05)

    async def _watch_forever(self) -> None:
        # A worker that died (killed, out of memory) is started again; the engine's retries
        # and re-attachment by ticket cover the gap, as for any Tentacle that restarts.
        while True:
            await asyncio.sleep(self._settings.check_interval)
            process = self._process
            if process is not None and process.poll() is None:
                continue
            if process is None and _locked(self.home):
                continue  # a reused worker, still alive
            log.warning("builtin_worker_restarting")
            try:
                self.endpoint = await self._ensure_running()
                await self._adopt(self.endpoint)
            except (OSError, subprocess.SubprocessError, TimeoutError, ValueError) as exc:
                log.error("builtin_worker_failed", error=str(exc))


def _locked(home: Path) -> bool:
    """Whether a live `tentacle run` holds the home's lock."""
    path = home / _LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
