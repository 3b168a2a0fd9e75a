"""Shared pieces of the benchmarks: statistics, ratio printing, bare mTLS peers, process cleanup.

Every benchmark compares Cuttle with a bare baseline measured in the same run and prints the
ratio, because the machine is small and shared: absolute figures move, ratios much less.

Also runnable, to start a bare gRPC server in its own process:

    python scripts/bench/benchlib.py bare-server --kind echo|lines|hold --key K --cert C \
        --trust T [--port P]

It prints one JSON line `{"port": N}` once it serves. Kinds: `echo` (unary, returns the
request), `lines` (unary-stream: a command's output in the Tentacle's pipe reads, optionally
journaled with an fsync per read; see `lines` below) and `hold` (bidi: one message, then an
idle stream until the client leaves). Every server also serves `Chunks` (a task's stored log
read from a server database file, see `chunks` below).

And, as client processes: the bare side of `cuttle task log` and of `cuttle script run -- true`:

    python scripts/bench/benchlib.py bare-read --port P --key K --cert C --server-cert S \
        --db DB --task-id ID --prefix MACHINE
    python scripts/bench/benchlib.py bare-call --port P --key K --cert C --server-cert S
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # The benchmarks reuse the integration-test harness (tests.integration.harness).
    sys.path.insert(0, str(REPO_ROOT))

from cuttle.protocol import channel, pki  # noqa: E402

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
BARE_SERVICE = "/bare.Bench/"
# What a Tentacle reads from a script's pipe at a time (tentacle execution/runner.py).
READ_SIZE = 256 * 1024
# The least text per read-back message (engine/follow.py MESSAGE_BYTES).
MESSAGE_BYTES = 256 * 1024


# -- statistics and printing -------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ratio(product: float, bare: float) -> float:
    """Cuttle's figure divided by the bare one (the direction of 'better' depends on the unit)."""
    return product / bare if bare else float("inf")


def compare(label: str, product: float, bare: float, unit: str, digits: int = 1) -> float:
    """Print one figure with the bare figure beside it and the ratio; returns the ratio."""
    r = ratio(product, bare)
    print(
        f"  {label:<34} cuttle {product:>12,.{digits}f} {unit:<10} "
        f"bare {bare:>12,.{digits}f} {unit:<10} ratio {r:6.2f}x",
        flush=True,
    )
    return r


def heading(text: str) -> None:
    """A section title in the benchmark's output."""
    print(f"\n{text}", flush=True)


# -- processes ---------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """How many file descriptors a process holds (one per TCP connection, plus a few)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class Children:
    """Processes a benchmark started, each leading its own process group; aclose() ends all."""

    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def spawn(
        self,
        args: Sequence[str],
        *,
        log: Path | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        env: dict[str, str] | None = None,
    ) -> asyncio.subprocess.Process:
        """Start a process in a new session; stderr (and stdout unless piped) go to log."""
        handle = log.open("ab") if log is not None else subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else handle,
                stderr=handle,
                env=env if env is not None else child_env(),
                start_new_session=True,
            )
        finally:
            if log is not None and not isinstance(handle, int):
                handle.close()
        self.procs.append(proc)
        return proc

    async def kill(self, proc: asyncio.subprocess.Process) -> None:
        """SIGKILL a child's whole group at once (a crash) and reap it."""
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def aclose(self, grace: float = 5.0) -> None:
        """SIGTERM every group, wait up to `grace`, then SIGKILL what is left."""
        live = [p for p in self.procs if p.returncode is None]
        for proc in live:
            _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(p.wait() for p in live))
        for proc in self.procs:
            # Even an exited leader may have left members of its group behind.
            _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(p.wait() for p in live))
        self.procs.clear()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes: quiet gRPC core, JSON logs, the venv on PATH."""
    env = dict(os.environ)
    env["GRPC_VERBOSITY"] = "ERROR"
    env["CUTTLE_LOG_FORMAT"] = "json"
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
    env.update(extra or {})
    return env


async def read_json_line(stream: asyncio.StreamReader, timeout: float, what: str) -> Any:
    """The next JSON line a child printed; fails saying what was expected."""
    async with asyncio.timeout(timeout):
        line = await stream.readline()
    if not line:
        raise RuntimeError(f"{what}: the process ended without answering")
    return json.loads(line)


def run_main(main: Callable[[], Awaitable[int]]) -> None:
    """Run an async main; SIGTERM/SIGINT cancel it so its finally blocks clean up."""

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        return await main()

    try:
        code = asyncio.run(guarded())
    except asyncio.CancelledError:
        print("benchmark interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed afterwards (process homes, logs, certificates)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except Exception:
        # Keep the logs of a failed run: they are the only record of what went wrong.
        print(f"benchmark failed; logs kept in {path}", file=sys.stderr, flush=True)
        raise
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # interrupted: nothing to investigate
        raise
    shutil.rmtree(path, ignore_errors=True)


# -- bare mTLS peers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityFiles:
    """An identity written to disk for a child process."""

    key: Path
    cert: Path
    identity: pki.Identity


def write_identity(identity: pki.Identity, directory: Path, name: str) -> IdentityFiles:
    """Save an identity as <name>-key.pem and <name>-cert.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}-key.pem", directory / f"{name}-cert.pem"
    pki.save_identity(identity, key, cert)
    return IdentityFiles(key, cert, identity)


def bare_channel(address: str, me: pki.Identity, server_pem: bytes) -> grpc.aio.Channel:
    """A client channel with the same credentials and options as Cuttle's, pinned to a server."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server_pem,
        private_key=me.key_pem,
        certificate_chain=me.certificate_pem,
    )
    return grpc.aio.secure_channel(
        address, credentials, options=channel.client_options(pki.SERVER_NAME)
    )


def _same(data: bytes) -> bytes:
    return data


def bare_unary(chan: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
    """A bytes-in, bytes-out unary method of the bare service."""
    return chan.unary_unary(
        BARE_SERVICE + method, request_serializer=_same, response_deserializer=_same
    )


def bare_stream(chan: grpc.aio.Channel, method: str) -> grpc.aio.UnaryStreamMultiCallable[Any, Any]:
    """A bytes unary-stream method of the bare service."""
    return chan.unary_stream(
        BARE_SERVICE + method, request_serializer=_same, response_deserializer=_same
    )


def bare_bidi(chan: grpc.aio.Channel, method: str) -> grpc.aio.StreamStreamMultiCallable[Any, Any]:
    """A bytes bidi method of the bare service."""
    return chan.stream_stream(
        BARE_SERVICE + method, request_serializer=_same, response_deserializer=_same
    )


async def start_bare_server(
    children: Children,
    kind: str,
    server: IdentityFiles,
    trust: Path,
    log: Path,
    port: int = 0,
) -> tuple[asyncio.subprocess.Process, int]:
    """Start `benchlib.py bare-server` and return it with the port it serves on."""
    proc = await children.spawn(
        [
            PYTHON,
            str(HERE / "benchlib.py"),
            "bare-server",
            "--kind",
            kind,
            "--key",
            str(server.key),
            "--cert",
            str(server.cert),
            "--trust",
            str(trust),
            "--port",
            str(port),
        ],
        log=log,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        ready = await read_json_line(proc.stdout, 60, f"bare {kind} server")
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{exc}\n{tail(log)}") from None
    return proc, int(ready["port"])


def tail(path: Path, lines: int = 30) -> str:
    """The end of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


async def _serve_bare(kind: str, key: Path, cert: Path, trust: Path, port: int) -> None:
    raise_fd_limit()
    key_pem, cert_pem, trust_pem = (p.read_bytes() for p in (key, cert, trust))  # noqa: ASYNC240 - before serving
    credentials = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=trust_pem, require_client_auth=True
    )
    server = grpc.aio.server(options=channel.server_options())

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return request

    async def lines(
        request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        # {"argv": [...], "journal": PATH or ""}: run argv and send its output the way a
        # Tentacle reads it: reads of up to 256 KiB from the pipe, each cut at its last newline
        # (a line never spans two messages), one message per read. With a journal, each read
        # is appended to it and fsynced before it is sent, as the Tentacle journals a batch
        # before anyone may see it.
        spec = json.loads(request)
        proc = await asyncio.create_subprocess_exec(*spec["argv"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        journal = (
            os.open(spec["journal"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if (spec.get("journal"))
            else None
        )

        def durable(data: bytes) -> None:
            assert journal is not None
            os.write(journal, data)
            os.fsync(journal)

        try:
            tail = b""
            while chunk := await proc.stdout.read(READ_SIZE):
                data = tail + chunk
                cut = data.rfind(b"\n")
                if cut < 0:
                    tail = data
                    continue
                tail = data[cut + 1 :]
                if journal is not None:
                    await asyncio.to_thread(durable, data[: cut + 1])
                yield data[:cut]
            if tail:
                if journal is not None:
                    await asyncio.to_thread(durable, tail)
                yield tail
            await proc.wait()
        finally:
            if journal is not None:
                os.close(journal)

    async def chunks(
        request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        # {"db": PATH, "task_id": ID}: a task's stored log, read back by a reader that does
        # only what it must: one query in position order (fetched off the event loop, as the
        # server's store thread does), each chunk unpacked once, its text sent in messages of
        # at least MESSAGE_BYTES (whole chunks, as Cuttle's read-back groups them).
        # Imported here: the bare-read client process must not pay for the server's modules.
        from cuttle.server.store import log_packing  # noqa: PLC0415

        spec = json.loads(request)
        db = sqlite3.connect(
            f"file:{spec['db']}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            cursor = db.execute(
                "SELECT lines FROM task_log_chunks WHERE task_id = ? ORDER BY last_position",
                (spec["task_id"],),
            )
            group: list[bytes] = []
            size = 0
            while rows := await asyncio.to_thread(cursor.fetchmany, 16):
                for (data,) in rows:
                    text = log_packing.unpack_columns(bytes(data)).text
                    group.append(text)
                    size += len(text)
                    if size >= MESSAGE_BYTES:
                        yield b"\n".join(group)
                        group, size = [], 0
            if group:
                yield b"\n".join(group)
        finally:
            db.close()

    async def hold(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        yield b"welcome"
        async for _ in requests:
            pass

    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bare.Bench",
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(echo, _same, _same),
                    "Lines": grpc.unary_stream_rpc_method_handler(lines, _same, _same),
                    "Hold": grpc.stream_stream_rpc_method_handler(hold, _same, _same),
                    "Chunks": grpc.unary_stream_rpc_method_handler(chunks, _same, _same),
                },
            )
        ]
    )
    bound = server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    print(json.dumps({"port": bound, "kind": kind}), flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(1.0)


class InProcessServer:
    """A real ServerNode on this event loop, with real Tentacle processes registered to it.

    The benchmark then holds the server side of every link: `client(name)` is the very
    TentacleClient the engine would use (listening: a pinned channel to the agent; polling: a
    request queued for the agent's open stream).
    """

    def __init__(self, root: Path, settings: dict[str, Any]) -> None:
        # Imported here: the bare peers load this module too, and must not pay for the server.
        from tests.integration.harness.cluster import Process, Server

        self.root = root
        self.procs: list[Process] = []
        self.harness = Server(root / "server", self.procs, settings=dict(settings))
        self.node: Any = None
        self._log: TextIO | None = None

    async def start(self) -> None:
        """`cuttle-server init` the home, then run the node here on free loopback ports."""
        from cuttle.protocol.logconfig import configure_logging
        from cuttle.server.app import ServerNode
        from cuttle.server.settings import load_settings

        await asyncio.to_thread(self.harness.init)
        home = self.harness.home
        self._log = log_stream(home / "server.log")
        configure_logging("info", stream=self._log)
        settings = load_settings(home).with_overrides(
            listen_host="127.0.0.1", admin_port=0, polling_port=0
        )
        self.node = ServerNode(home, settings)
        await self.node.start()
        self.harness.admin_port = self.node.ports["admin"]
        self.harness.polling_port = self.node.ports["polling"]

    async def add_tentacle(self, name: str, style: str, python: str | None = None) -> Any:
        """Create, register and start a Tentacle process; returns its TentacleClient.

        ``python``: the interpreter of another install (say, a worktree of an older commit)
        that runs this one's ``tentacle`` script, and so imports that install's code: an A/B
        of two versions inside one run.
        """
        from tests.integration.harness.cluster import Tentacle

        prefix = [python] if python else []
        tentacle = Tentacle(name, self.root / name, style, self.harness, self.procs, prefix=prefix)
        # The harness blocks on the CLI; the server answering it runs on this loop.
        await asyncio.to_thread(tentacle.create, ("Bench",), ("bench",))
        if style == "polling":
            # The hub has no event to wait on; a bounded poll is enough for a setup step.
            async with asyncio.timeout(60):
                while not self.node.connections.connected(name):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        return await self.node.connections.client(name)

    async def stop(self) -> None:
        """Stop the node, then every Tentacle (SIGTERM, grace, SIGKILL of the group)."""
        try:
            if self.node is not None:
                await self.node.stop()
        finally:
            for proc in reversed(self.procs):
                await asyncio.to_thread(proc.stop)
            if self._log is not None:
                self._log.close()


def log_stream(path: Path) -> TextIO:
    """An append-mode text file for a process's own structured logs."""
    return path.open("a", buffering=1)


def monotonic() -> float:
    """CLOCK_MONOTONIC, comparable between processes on one Linux machine."""
    return time.monotonic()


async def _read_bare(args: argparse.Namespace) -> None:
    """Print a bare `Chunks` stream as `cuttle task log` prints a log: a machine prefix per
    line by one replace per message, one write per message."""
    me = pki.load_identity(args.key, args.cert)
    chan = bare_channel(f"127.0.0.1:{args.port}", me, args.server_cert.read_bytes())
    request = json.dumps({"db": str(args.db), "task_id": args.task_id}).encode()
    prefix = args.prefix.encode() + b": "
    out = sys.stdout.buffer
    try:
        async for message in bare_stream(chan, "Chunks")(request, timeout=600):
            out.write(prefix + message.replace(b"\n", b"\n" + prefix) + b"\n")
            out.flush()
    finally:
        await chan.close(None)


async def _call_bare(args: argparse.Namespace) -> None:
    """One mTLS round trip to the bare server, then spawn `bash -c true` and wait for it: what
    `cuttle script run -- true` does at the least (a process, a handshake, a call, a spawn)."""
    me = pki.load_identity(args.key, args.cert)
    chan = bare_channel(f"127.0.0.1:{args.port}", me, args.server_cert.read_bytes())
    try:
        await bare_unary(chan, "Echo")(b"run", timeout=60)
        proc = await asyncio.create_subprocess_exec("bash", "-c", "true")
        if await proc.wait() != 0:
            raise RuntimeError("bash -c true failed")
    finally:
        await chan.close(None)


def main() -> None:
    """Entry point for the bare peers started as separate processes."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bare = sub.add_parser("bare-server", help="serve the bare baseline service")
    bare.add_argument("--kind", choices=["echo", "lines", "hold"], required=True)
    bare.add_argument("--key", type=Path, required=True)
    bare.add_argument("--cert", type=Path, required=True)
    bare.add_argument("--trust", type=Path, required=True, help="PEM bundle of client certs")
    bare.add_argument("--port", type=int, default=0)
    read = sub.add_parser("bare-read", help="print a task's stored log through the bare server")
    read.add_argument("--port", type=int, required=True)
    read.add_argument("--key", type=Path, required=True)
    read.add_argument("--cert", type=Path, required=True)
    read.add_argument("--server-cert", type=Path, required=True)
    read.add_argument("--db", type=Path, required=True)
    read.add_argument("--task-id", required=True)
    read.add_argument("--prefix", required=True, help="the machine name each line gets")
    call = sub.add_parser("bare-call", help="one round trip to the bare server, then a spawn")
    call.add_argument("--port", type=int, required=True)
    call.add_argument("--key", type=Path, required=True)
    call.add_argument("--cert", type=Path, required=True)
    call.add_argument("--server-cert", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "bare-read":
        asyncio.run(_read_bare(args))
    elif args.command == "bare-call":
        asyncio.run(_call_bare(args))
    else:
        asyncio.run(_serve_bare(args.kind, args.key, args.cert, args.trust, args.port))


if __name__ == "__main__":
    main()
