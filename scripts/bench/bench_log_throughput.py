"""Benchmark: task log output, from a script to the store and to the operator's terminal.

Cuttle: a real `cuttle-server` (SQLite) and a real listening `tentacle run` (a polling one with
--polling), started by the integration-test harness; the `cuttle` CLI as a user runs it.
Every figure is printed beside a bare side measured in the same run, as bare/Cuttle for times
and Cuttle/bare for rates, so 1.0 is "as fast as the bare side" and higher is better.

1. Write path (the gate): `seq 1 N` submitted through the admin API (no client reads the log)
   until the store holds all N lines. Bare, durable: a bare gRPC server process runs the same
   `seq 1 N`, reads its pipe in the Tentacle's 256 KiB reads cut at the last newline, appends
   each read to a journal file and fsyncs it before sending it as one message (the Tentacle
   journals a batch with one fsync before it sends it); this process stores each message in
   one SQLite transaction (WAL, synchronous=NORMAL: the server's pragmas), a blob insert and a
   counter update, as the server stores a batch and its last sequence. Same bytes, same pipe
   reads and message sizes, same durability on both ends: the work Cuttle cannot avoid. The
   same stream without journal and database (the pipe ceiling) is printed beside it.
2. What the user waits for: `cuttle script run` of a Python script printing M lines of 80
   characters, from starting the CLI until it exits (stdout piped to `cat > /dev/null`),
   against `python gen.py | cat > /dev/null` and against the durable bare stream of gen.py's
   output (its receiver also writes every message to /dev/null, as the CLI prints it).
3. Read-back: `cuttle task log ID | cat > /dev/null` of that task, from starting the CLI until
   it exits, against the same work done bare: a client process (`benchlib.py bare-read`) that
   connects over mTLS to the bare gRPC server, which reads the task's chunks from the server's
   database file in one query and unpacks each once, sending their text in messages of at
   least 256 KiB (whole chunks, as Cuttle groups them); the client adds the machine prefix to
   every line with one replace per message and writes each message to stdout, piped to `cat >
   /dev/null`. Same bytes, same batching, same process start and handshake; the bare side has
   no access checks, no protobuf and no framework. Unpacking the chunks once in this process
   (no process, no network, no output) is printed beside it as the floor.
   And `cuttle task log ID --follow` started mid-run, from submit until it exits, against the
   durable bare stream of the same script (produce, journal, store, deliver to a pipe). The
   script is submitted through the API with nobody following it, so that follower is the only
   reader, as the bare receiver is.
4. Latency: a script prints a timestamped line every 10 ms; the time until `cuttle task log
   --follow` prints it (p50, p99), against a bare gRPC stream of the same script's output in
   the Tentacle's pipe reads (no journal: the floor of any streamed path).
Peak RSS of the server and of each CLI run is printed (memory must stay bounded), and how long
a bare `cuttle task show` takes (the CLI's start-up, inside every CLI figure above).

Goal: write-path ratio >= 0.5 (the summary's `ratio`, gated); what the user waits for within 2x
of the durable baseline. Benchmarks never gate CI on time.

Run: .venv/bin/python scripts/bench/bench_log_throughput.py [--lines N] [--user-lines M] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import grpc
from benchlib import Children, compare, percentile

from cuttle.protocol import channel, pki
from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import admin_pb2_grpc
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.store import log_packing
from tests.integration.harness.cluster import BIN, Cluster, Process, Server

GOAL = 0.5
STDOUT = 1  # LogSource.STDOUT in the store
FINISHED = ("success", "failed", "cancelled")
# Production timings, not the harness's short test intervals.
SERVER_SETTINGS: dict[str, Any] = {
    "heartbeat_interval_seconds": 10.0,
    "heartbeat_timeout_seconds": 30.0,
    "pickup_timeout_seconds": 120.0,
    "health_check_interval_seconds": 3600.0,
    # Raised for these measurements, as issue 13 allows: a 2 GB run must not hit the per-task
    # limit (256 MiB by default), or it would measure the limit instead of the path.
    "task_log_limit_bytes": "4GiB",
}
GEN = """import sys
out = sys.stdout
tail = "x" * 72
for i in range({lines}):
    out.write(f"{{i:07d}} {{tail}}\\n")
"""
LATENCY = """import sys, time
time.sleep(2)  # the follower starts meanwhile: what is measured is following, not catching up
for i in range({lines}):
    sys.stdout.write(f"{{time.time():.6f}} {{i}}\\n")
    sys.stdout.flush()
    time.sleep(0.01)
"""


def _open_db(db: Path) -> sqlite3.Connection:
    # A plain reader; WAL lets it read while the server writes, without taking the write lock.
    return sqlite3.connect(
        f"file:{db}?mode=ro", uri=True, timeout=10, isolation_level=None, check_same_thread=False
    )


def _log_count(conn: sqlite3.Connection, task_id: str) -> int:
    row = conn.execute("SELECT log_count FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return int(row[0]) if row else 0


def _task_state(conn: sqlite3.Connection, task_id: str) -> str:
    row = conn.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return str(row[0]) if row else ""


def _task_ids(conn: sqlite3.Connection) -> set[str]:
    return {str(row[0]) for row in conn.execute("SELECT id FROM tasks")}


def _stdout_lines(conn: sqlite3.Connection, task_id: str) -> tuple[int, int, int]:
    sequences = [
        line.sequence
        for (data,) in conn.execute(
            "SELECT lines FROM task_log_chunks WHERE task_id = ?", (task_id,)
        )
        for line in log_packing.unpack(bytes(data))
        if line.source == STDOUT
    ]
    return len(sequences), min(sequences, default=0), max(sequences, default=0)


def _unpack_once(db: Path, task_id: str) -> tuple[float, int]:
    """Seconds to read a task's chunks from the file and unpack each once; lines found."""
    start = time.perf_counter()
    conn = _open_db(db)
    try:
        lines = 0
        for (data,) in conn.execute(
            "SELECT lines FROM task_log_chunks WHERE task_id = ? ORDER BY last_position",
            (task_id,),
        ):
            lines += sum(run.count for run in log_packing.unpack_runs(bytes(data)))
    finally:
        conn.close()
    return time.perf_counter() - start, lines


async def _wait_state(db: Path, task_id: str, timeout: float) -> None:
    conn = await asyncio.to_thread(_open_db, db)
    try:
        async with asyncio.timeout(timeout):
            while await asyncio.to_thread(_task_state, conn, task_id) not in FINISHED:  # noqa: ASYNC110 - another process's database
                await asyncio.sleep(0.05)
    finally:
        conn.close()


async def _new_task(db: Path, known: set[str], timeout: float) -> str:
    conn = await asyncio.to_thread(_open_db, db)
    try:
        async with asyncio.timeout(timeout):
            while not (new := await asyncio.to_thread(_task_ids, conn) - known):  # noqa: ASYNC110 - another process's database
                await asyncio.sleep(0.01)
    finally:
        conn.close()
    return new.pop()


async def _cuttle_write(
    stub: admin_pb2_grpc.AdminServiceAsyncStub,
    api_key: str,
    db: Path,
    machine: str,
    lines: int,
    timeout: float,
) -> float:
    """Seconds from submitting `seq 1 N` until all N stdout lines are in the store."""
    request = apb.RunScriptRequest(
        machines=[machine], syntax=tpb.SCRIPT_SYNTAX_BASH, body=f"seq 1 {lines}"
    )
    start = time.perf_counter()
    call = stub.RunScript(request, metadata=(("x-api-key", api_key),))
    first = await call.read()
    # The task runs on the server whether or not anyone follows it; following would add a
    # reader of every line to the measurement of the write path.
    call.cancel()
    assert isinstance(first, apb.TaskEvent), first
    task_id = first.task_id
    conn = await asyncio.to_thread(_open_db, db)
    try:
        async with asyncio.timeout(timeout):
            while await asyncio.to_thread(_log_count, conn, task_id) < lines:  # noqa: ASYNC110 - another process's database
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - start
        # Untimed: that they are exactly the N stdout lines.
        count, low, high = await asyncio.to_thread(_stdout_lines, conn, task_id)
        if (count, low, high) != (lines, 1, lines):
            raise RuntimeError(f"stored {count} stdout lines {low}..{high}, expected {lines}")
    finally:
        conn.close()
    await _wait_state(db, task_id, timeout)
    return elapsed


class DurableReceiver:
    """The bare receiving side: one SQLite transaction per message, as the server stores one."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS chunks (first INTEGER PRIMARY KEY, last INTEGER, "
            "lines BLOB)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER)")
        self._db.execute("INSERT OR REPLACE INTO counter VALUES (1, 0)")
        self._count = 0

    def store(self, message: bytes) -> None:
        """Store one message durably: insert its blob and advance the count, one transaction."""
        lines = message.count(b"\n") + 1
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "INSERT INTO chunks VALUES (?, ?, ?)", (self._count + 1, self._count + lines, message)
        )
        self._db.execute("UPDATE counter SET n = ? WHERE id = 1", (self._count + lines,))
        self._db.execute("COMMIT")
        self._count += lines

    def close(self) -> None:
        """Close the database."""
        self._db.close()


async def _bare_run(
    stream: grpc.aio.UnaryStreamMultiCallable[Any, Any],
    argv: list[str],
    lines: int,
    scratch: Path | None,
    *,
    last: bytes,
    sink: int | None = None,
) -> float:
    """Seconds to stream argv's output; with scratch, durable on both ends (see the top)."""
    receiver = journal = None
    if scratch is not None:
        journal = scratch / f"journal-{time.monotonic_ns()}"
        receiver = DurableReceiver(scratch / f"bare-{time.monotonic_ns()}.db")
    request = json.dumps({"argv": argv, "journal": str(journal or "")}).encode()
    received = 0
    end = b""
    try:
        start = time.perf_counter()
        async for message in stream(request, timeout=600):
            received += message.count(b"\n") + 1
            end = message[message.rfind(b"\n") + 1 :]
            if receiver is not None:
                await asyncio.to_thread(receiver.store, message)
            if sink is not None:
                os.write(sink, message + b"\n")
        elapsed = time.perf_counter() - start
    finally:
        if receiver is not None:
            receiver.close()
        if journal is not None:
            journal.unlink(missing_ok=True)
    if received != lines or not end.startswith(last):
        raise RuntimeError(f"bare stream delivered {received} lines ending {end!r}")
    return elapsed


def _shell(command: str, env: dict[str, str], rss_of: str = "") -> tuple[float, int]:
    """Run a shell pipeline; seconds until it exits, and the peak RSS (KiB) of `rss_of`.

    `rss_of` (a command in the pipeline) is run under /usr/bin/time: the rusage of a process
    forked from this one would count this process's own memory from before its exec.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        if rss_of:
            command = command.replace(rss_of, f"/usr/bin/time -f %M -o {rss.name} {rss_of}", 1)
        start = time.perf_counter()
        done = subprocess.run(  # noqa: S603 - our own pipeline
            ["bash", "-c", f"set -o pipefail; {command}"],
            env=env,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{command!r} exited {done.returncode}")
        peak = int(rss.read().split()[-1]) if rss_of else 0
    return elapsed, peak


def _compare_time(label: str, cuttle_s: float, bare_s: float) -> float:
    """Print a time beside the bare one; returns bare / Cuttle (1.0: as fast as bare)."""
    r = bare_s / cuttle_s if cuttle_s else float("inf")
    print(
        f"  {label:<34} cuttle {cuttle_s:>9.2f} s   bare {bare_s:>9.2f} s   ratio {r:6.3f}x",
        flush=True,
    )
    return r


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _pid(process: Process | None) -> int:
    assert process is not None
    assert process.popen is not None
    return process.popen.pid


async def _follow_mid_run(
    stub: admin_pb2_grpc.AdminServiceAsyncStub,
    server: Server,
    db: Path,
    machine: str,
    gen: Path,
    timeout: float,
) -> float:
    """Seconds from submitting gen.py until `task log --follow`, started mid-run, exits.

    Submitted through the API with no one following (the call is cancelled once the task
    exists, as in the write path), so the follower measured is the only reader, as the bare
    stream's receiver is.
    """
    env = server.cli_env()
    cuttle = shlex.quote(str(BIN / "cuttle"))
    conn = await asyncio.to_thread(_open_db, db)
    request = apb.RunScriptRequest(
        machines=[machine],
        syntax=tpb.SCRIPT_SYNTAX_PYTHON,
        body=await asyncio.to_thread(gen.read_text),
    )
    start = time.perf_counter()
    call = stub.RunScript(request, metadata=(("x-api-key", server.api_key),))
    try:
        first = await call.read()
        call.cancel()
        assert isinstance(first, apb.TaskEvent), first
        task_id = first.task_id
        async with asyncio.timeout(timeout):
            while await asyncio.to_thread(_log_count, conn, task_id) == 0:  # noqa: ASYNC110 - another process's database
                await asyncio.sleep(0.005)
        follow = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            f"set -o pipefail; {cuttle} task log {task_id} --follow | cat > /dev/null",
            stderr=subprocess.DEVNULL,
            env=env,
        )
        async with asyncio.timeout(timeout):
            if await follow.wait() != 0:
                raise RuntimeError("task log --follow failed")
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    await _wait_state(db, task_id, timeout)
    return elapsed


async def _latency_cuttle(
    server: Server, db: Path, machine: str, script: Path, timeout: float
) -> list[float]:
    """Seconds from each line's print to `task log --follow` printing it."""
    env = server.cli_env()
    conn = await asyncio.to_thread(_open_db, db)
    known = await asyncio.to_thread(_task_ids, conn)
    conn.close()
    runner = await asyncio.create_subprocess_exec(
        str(BIN / "cuttle"),
        "script",
        "run",
        "--machine",
        machine,
        "--syntax",
        "python",
        "--file",
        str(script),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    samples: list[float] = []
    try:
        task_id = await _new_task(db, known, timeout)
        follow = await asyncio.create_subprocess_exec(
            str(BIN / "cuttle"),
            "task",
            "log",
            task_id,
            "--follow",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert follow.stdout is not None
        caught_up: float | None = None
        async with asyncio.timeout(timeout):
            while line := await follow.stdout.readline():
                now = time.time()
                stamp = float(line.split(b": ", 1)[1].split()[0])
                caught_up = caught_up or now
                # Lines printed before the follower was there measure its start, not latency.
                if stamp > caught_up:
                    samples.append(now - stamp)
            await follow.wait()
            await runner.wait()
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
    return samples


async def _latency_bare(
    stream: grpc.aio.UnaryStreamMultiCallable[Any, Any], argv: list[str]
) -> list[float]:
    samples: list[float] = []
    request = json.dumps({"argv": argv, "journal": ""}).encode()
    async for message in stream(request, timeout=600):
        now = time.time()
        samples.extend(now - float(line.split()[0]) for line in message.split(b"\n"))
    return samples[10:]


async def run(args: argparse.Namespace) -> int:  # noqa: PLR0915 - one benchmark, in order
    """Start everything, run each kind alternately, print figures and the summary line."""
    children = Children()
    times: dict[str, list[float]] = {}
    rss: dict[str, int] = {}
    latency: dict[str, list[float]] = {"cuttle": [], "bare": []}
    cpu: dict[str, float] = {}

    def timed(kind: str, seconds: float) -> None:
        times.setdefault(kind, []).append(seconds)

    with benchlib.scratch_dir("cuttle-bench-logs-") as root:
        cluster = Cluster(root)
        chans: list[grpc.aio.Channel] = []
        gen = root / "gen.py"
        gen.write_text(GEN.format(lines=args.user_lines))
        late = root / "latency.py"
        late.write_text(LATENCY.format(lines=args.latency_lines))
        python = str(Path(benchlib.PYTHON))
        try:
            server = await asyncio.to_thread(cluster.start_server, **SERVER_SETTINGS)
            db = server.home / "cuttle.db"
            styles = ["listening"] + (["polling"] if args.polling else [])
            for style in styles:
                await asyncio.to_thread(cluster.add_tentacle, f"logs-{style}", style)
            machine = "logs-listening"
            admin = grpc.aio.secure_channel(
                f"127.0.0.1:{server.admin_port}",
                grpc.ssl_channel_credentials(
                    root_certificates=(server.home / "server-certificate.pem").read_bytes()
                ),
                options=channel.client_options(pki.SERVER_NAME),
            )
            chans.append(admin)
            stub = admin_pb2_grpc.AdminServiceStub(admin)
            bare_server = benchlib.write_identity(
                pki.generate_identity("bare server", pki.SERVER_NAME), root / "bare", "server"
            )
            bare_client = benchlib.write_identity(
                pki.generate_identity("bare client", pki.TENTACLE_NAME), root / "bare", "client"
            )
            _proc, port = await benchlib.start_bare_server(
                children, "lines", bare_server, bare_client.cert, root / "bare" / "server.log"
            )
            bare_chan = benchlib.bare_channel(
                f"127.0.0.1:{port}", bare_client.identity, bare_server.identity.certificate_pem
            )
            chans.append(bare_chan)
            bare = benchlib.bare_stream(bare_chan, "Lines")
            seq = ["seq", "1", str(args.lines)]
            gen_argv = [python, str(gen)]
            last_seq = str(args.lines).encode()
            last_gen = b"%07d" % (args.user_lines - 1)
            env = server.cli_env()
            cuttle = shlex.quote(str(BIN / "cuttle"))
            script_run = (
                f"{cuttle} script run --machine {machine} --syntax python "
                f"--file {shlex.quote(str(gen))} | cat > /dev/null"
            )
            devnull = os.open(os.devnull, os.O_WRONLY)
            bare_read = shlex.join(
                [
                    python,
                    str(Path(benchlib.__file__)),
                    "bare-read",
                    "--port",
                    str(port),
                    "--key",
                    str(bare_client.key),
                    "--cert",
                    str(bare_client.cert),
                    "--server-cert",
                    str(bare_server.cert),
                    "--db",
                    str(db),
                    "--prefix",
                    machine,
                ]
            )

            # Warm-up: connections, caches, first-task costs; not timed.
            await _bare_run(bare, ["seq", "1", "1000"], 1000, root, last=b"1000")
            for style in styles:
                await _cuttle_write(stub, server.api_key, db, f"logs-{style}", 1000, args.timeout)

            for _ in range(args.runs):
                # 1. The write path.
                timed("bare_pipe", await _bare_run(bare, seq, args.lines, None, last=last_seq))
                timed("bare_durable", await _bare_run(bare, seq, args.lines, root, last=last_seq))
                for style in styles:
                    pids = {
                        "server": _pid(server.process),
                        "tentacle": _pid(cluster.tentacles[f"logs-{style}"].process),
                    }
                    before = {k: benchlib.cpu_seconds(p) for k, p in pids.items()}
                    timed(
                        style,
                        await _cuttle_write(
                            stub, server.api_key, db, f"logs-{style}", args.lines, args.timeout
                        ),
                    )
                    for key, pid in pids.items():
                        used = benchlib.cpu_seconds(pid) - before[key]
                        cpu[f"{style}/{key}"] = min(cpu.get(f"{style}/{key}", used), used)

                # 2. What the user waits for.
                pipe_s, _ = await asyncio.to_thread(
                    _shell, f"{python} {shlex.quote(str(gen))} | cat > /dev/null", env
                )
                timed("gen_pipe", pipe_s)
                timed(
                    "gen_durable",
                    await _bare_run(
                        bare, gen_argv, args.user_lines, root, last=last_gen, sink=devnull
                    ),
                )
                conn = await asyncio.to_thread(_open_db, db)
                known = await asyncio.to_thread(_task_ids, conn)
                conn.close()
                run_s, run_rss = await asyncio.to_thread(_shell, script_run, env, cuttle)
                timed("script_run", run_s)
                rss["script run CLI"] = max(rss.get("script run CLI", 0), run_rss)
                task_id = await _new_task(db, known, args.timeout)

                # 3. Read-back, and a follower that joins mid-run.
                unpack_s, unpacked = await asyncio.to_thread(_unpack_once, db, task_id)
                if unpacked != args.user_lines:
                    raise RuntimeError(f"the task holds {unpacked} lines, not {args.user_lines}")
                timed("unpack_once", unpack_s)
                bare_read_s, _ = await asyncio.to_thread(
                    _shell, f"{bare_read} --task-id {task_id} | cat > /dev/null", env
                )
                timed("bare_read", bare_read_s)
                log_s, log_rss = await asyncio.to_thread(
                    _shell, f"{cuttle} task log {task_id} | cat > /dev/null", env, cuttle
                )
                # What any CLI call costs before it does anything: the part of the figures
                # above that no change to the log path can remove.
                start_s, _ = await asyncio.to_thread(
                    _shell, f"{cuttle} task show {task_id} > /dev/null", env
                )
                timed("cli_start", start_s)
                timed("task_log", log_s)
                rss["task log CLI"] = max(rss.get("task log CLI", 0), log_rss)
                timed(
                    "follow",
                    await _follow_mid_run(stub, server, db, machine, gen, args.timeout),
                )

            # 4. Latency, once: it is a distribution already.
            latency["bare"] = await _latency_bare(bare, [python, str(late)])
            latency["cuttle"] = await _latency_cuttle(server, db, machine, late, args.timeout)
            rss["cuttle-server"] = _peak_rss_kib(_pid(server.process))
            os.close(devnull)
        finally:
            for chan in chans:
                await chan.close(None)
            await children.aclose()
            await asyncio.to_thread(cluster.stop)

    best = {kind: min(values) for kind, values in times.items()}
    load = os.getloadavg()
    print(
        f"best of {args.runs} run(s) per kind; load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    benchlib.heading(
        f"1. write path: `seq 1 {args.lines}` until stored, vs the same stream made durable "
        "(journal fsync per read, one transaction per message) - the gate"
    )
    strict: dict[str, float] = {}
    for style in styles:
        rate = args.lines / best[style]
        durable_rate = args.lines / best["bare_durable"]
        strict[style] = compare(f"{style}: lines per second", rate, durable_rate, "lines/s", 0)
        compare(f"{style}: vs the pipe ceiling", rate, args.lines / best["bare_pipe"], "lines/s", 0)
        print(
            f"  CPU per run (least): cuttle-server {cpu[f'{style}/server']:.2f} s, "
            f"tentacle {cpu[f'{style}/tentacle']:.2f} s"
        )
    benchlib.heading(
        f"2. what the user waits for: `cuttle script run` of {args.user_lines:,} x 80-char lines "
        "until the CLI exits (ratio = bare time / Cuttle time)"
    )
    user = _compare_time("vs durable bare stream", best["script_run"], best["gen_durable"])
    vs_pipe = _compare_time("vs python gen.py | cat", best["script_run"], best["gen_pipe"])
    print(f"  (the CLI's own start and one call, `cuttle task show`: {best['cli_start']:.2f} s)")
    benchlib.heading("3. read-back and follow (ratio = bare time / Cuttle time)")
    readback = _compare_time("task log vs bare read-back", best["task_log"], best["bare_read"])
    _compare_time("task log vs unpacking once (floor)", best["task_log"], best["unpack_once"])
    follow = _compare_time("follow mid-run vs durable", best["follow"], best["gen_durable"])
    benchlib.heading(
        f"4. latency: a line printed -> shown by `task log --follow` ({len(latency['cuttle'])} "
        "lines), vs a bare gRPC stream of the same output"
    )
    p50 = percentile(latency["cuttle"], 50) * 1000
    p99 = percentile(latency["cuttle"], 99) * 1000
    bare50 = percentile(latency["bare"], 50) * 1000
    bare99 = percentile(latency["bare"], 99) * 1000
    print(f"  p50 cuttle {p50:8.1f} ms   bare {bare50:8.1f} ms")
    print(f"  p99 cuttle {p99:8.1f} ms   bare {bare99:8.1f} ms")
    benchlib.heading("peak RSS")
    for name, kib in rss.items():
        print(f"  {name:<20} {kib / 1024:8.1f} MiB")
    print()
    print(
        f"SUMMARY log ratio={strict['listening']:.2f} (write path vs durable bare, goal >={GOAL}) "
        f"user_wait={user:.2f} (vs durable; goal >=0.5) vs_pipe={vs_pipe:.3f} "
        f"readback={readback:.2f} (vs bare read-back; goal >=0.5) follow={follow:.2f} "
        f"latency_p50={p50:.1f}ms p99={p99:.1f}ms (bare {bare50:.1f}/{bare99:.1f}ms) "
        f"durable={args.lines / best['bare_durable']:,.0f}/s "
        f"listening={args.lines / best['listening']:,.0f}/s "
        f"goal_met={'yes' if strict['listening'] >= GOAL else 'no'}",
        flush=True,
    )
    return 0


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="write-path lines per run")
    parser.add_argument(
        "--user-lines", type=int, default=1_000_000, help="80-char lines of the user runs"
    )
    parser.add_argument("--latency-lines", type=int, default=300, help="lines, 10 ms apart")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per kind (best counts)")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit per run, seconds")
    parser.add_argument("--polling", action="store_true", help="a polling Tentacle too")
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.user_lines, args.latency_lines = 5000, 5000, 50
        args.runs, args.timeout = 1, 60.0
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
