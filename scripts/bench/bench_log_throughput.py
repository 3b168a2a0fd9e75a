"""Benchmark: log lines per second end to end (script -> journal -> server -> store) vs bare gRPC.

Cuttle: a real `cuttle-server` (SQLite) and real `tentacle run` processes started by the
integration-test harness. The benchmark submits `seq 1 N` as a bash script through the admin API
(RunScript; the call is dropped once the task exists, so no client reads the log back) and
polls the server's database until all N stdout lines are stored. The path measured is the
product's: the Tentacle journals each batch (fsync), the server watches the ticket, and stores
each batch and its last sequence in one transaction.
Bare: one grpc.aio mTLS unary-stream call between two processes; the sending process runs the
same `seq 1 N` and streams its output batched 100 lines per message, as DESIGN §7 prescribes
(the goal's baseline), and also each pipe read as it came, cut at the last newline (no per-line
work and no disk at all: a stricter ceiling, reported beside it); the receiver counts the lines.
Cuttle's path also writes and fsyncs every byte to the journal and the database, which the bare
streams do not.

Goal: Cuttle's rate >= 0.5x the bare rate (listening Tentacle; a polling one is reported too).

Run: .venv/bin/python scripts/bench/bench_log_throughput.py [--lines N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import benchlib
import grpc
from benchlib import Children, compare

from cuttle.protocol import channel, pki
from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import admin_pb2_grpc
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.store import log_packing
from tests.integration.harness.cluster import Cluster, Process

GOAL = 0.5
STDOUT = 1  # LogSource.STDOUT in the store
FINISHED = ("success", "failed", "cancelled")
# Production timings, not the harness's short test intervals.
SERVER_SETTINGS: dict[str, Any] = {
    "heartbeat_interval_seconds": 10.0,
    "heartbeat_timeout_seconds": 30.0,
    "pickup_timeout_seconds": 120.0,
    "health_check_interval_seconds": 3600.0,
}


def _open_db(db: Path) -> sqlite3.Connection:
    # A plain reader; WAL lets it read while the server writes, without taking the write lock.
    return sqlite3.connect(
        f"file:{db}?mode=ro",
        uri=True,
        timeout=10,
        isolation_level=None,
        check_same_thread=False,
    )


def _log_count(conn: sqlite3.Connection, task_id: str) -> int:
    row = conn.execute("SELECT log_count FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return int(row[0]) if row else 0


def _task_state(conn: sqlite3.Connection, task_id: str) -> str:
    row = conn.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return str(row[0]) if row else ""


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


async def _cuttle_run(
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
    # reader of every line to the measurement.
    call.cancel()
    assert isinstance(first, apb.TaskEvent), first
    task_id = first.task_id
    conn = await asyncio.to_thread(_open_db, db)
    try:
        async with asyncio.timeout(timeout):
            # The clock stops when the store holds N lines; which lines they are is checked
            # below, untimed: unpacking millions of lines is the benchmark's cost, not Cuttle's.
            # That they are the N stdout lines (no Tentacle note among them) is checked too.
            while True:
                if await asyncio.to_thread(_log_count, conn, task_id) >= lines:
                    elapsed = time.perf_counter() - start
                    break
                await asyncio.sleep(0.01)
            while True:
                count, low, high = await asyncio.to_thread(_stdout_lines, conn, task_id)
                if count >= lines:
                    break
                await asyncio.sleep(0.01)
        if (count, low, high) != (lines, 1, lines):
            raise RuntimeError(
                f"stored {count} stdout lines with sequences {low}..{high}, expected {lines}"
            )
        total = await asyncio.to_thread(_log_count, conn, task_id)
        if total != lines:
            raise RuntimeError(f"stored {total} lines in all, not just the {lines} timed")
        # Let the task finish before the next run so runs do not overlap.
        async with asyncio.timeout(timeout):
            while True:
                if await asyncio.to_thread(_task_state, conn, task_id) in FINISHED:
                    break
                await asyncio.sleep(0.05)
    finally:
        conn.close()
    return elapsed


def _pid(process: Process | None) -> int:
    assert process is not None
    assert process.popen is not None
    return process.popen.pid


async def _bare_run(
    stream: grpc.aio.UnaryStreamMultiCallable[Any, Any], lines: int, *, whole: bool
) -> float:
    start = time.perf_counter()
    received = 0
    last = b""
    request = f"{lines}/whole" if whole else str(lines)
    async for message in stream(request.encode(), timeout=600):
        # Counted, not split: the receiving side does no per-line work, as Cuttle's server.
        received += message.count(b"\n") + 1
        last = message[message.rfind(b"\n") + 1 :]
    elapsed = time.perf_counter() - start
    if received != lines or last != str(lines).encode():
        raise RuntimeError(f"bare stream delivered {received} lines ending {last!r}")
    return elapsed


async def run(args: argparse.Namespace) -> int:
    """Start everything, run alternately, print figures and the summary line."""
    children = Children()
    results: dict[str, list[float]] = {"bare": [], "bare_whole": []}
    # Least CPU seconds a run took in each process: which side is the bottleneck.
    cpu: dict[str, dict[str, float]] = {"listening": {}, "polling": {}}
    with benchlib.scratch_dir("cuttle-bench-logs-") as root:
        cluster = Cluster(root)
        chans: list[grpc.aio.Channel] = []
        try:
            server = await asyncio.to_thread(cluster.start_server, **SERVER_SETTINGS)
            styles = ["listening"] + ([] if args.no_polling else ["polling"])
            for style in styles:
                await asyncio.to_thread(cluster.add_tentacle, f"logs-{style}", style)
                results[style] = []
            server_pem = (server.home / "server-certificate.pem").read_bytes()
            admin = grpc.aio.secure_channel(
                f"127.0.0.1:{server.admin_port}",
                grpc.ssl_channel_credentials(root_certificates=server_pem),
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

            # Warm-up: connections, caches, first-task costs; not timed.
            await _bare_run(bare, 1000, whole=False)
            await _bare_run(bare, 1000, whole=True)
            for style in styles:
                await _cuttle_run(
                    stub,
                    server.api_key,
                    server.home / "cuttle.db",
                    f"logs-{style}",
                    1000,
                    args.timeout,
                )
            for _ in range(args.runs):
                results["bare"].append(await _bare_run(bare, args.lines, whole=False))
                results["bare_whole"].append(await _bare_run(bare, args.lines, whole=True))
                for style in styles:
                    pids = {
                        "server": _pid(server.process),
                        "tentacle": _pid(cluster.tentacles[f"logs-{style}"].process),
                    }
                    before = {k: benchlib.cpu_seconds(p) for k, p in pids.items()}
                    results[style].append(
                        await _cuttle_run(
                            stub,
                            server.api_key,
                            server.home / "cuttle.db",
                            f"logs-{style}",
                            args.lines,
                            args.timeout,
                        )
                    )
                    for key, pid in pids.items():
                        cpu[style][key] = min(
                            cpu[style].get(key, float("inf")),
                            benchlib.cpu_seconds(pid) - before[key],
                        )
        finally:
            for chan in chans:
                await chan.close(None)
            await children.aclose()
            await asyncio.to_thread(cluster.stop)

    bare_rate = args.lines / min(results["bare"])
    whole_rate = args.lines / min(results["bare_whole"])
    print(
        f"{args.lines:,} lines of `seq 1 {args.lines}`, best of {args.runs} run(s) per kind; "
        "Cuttle: script -> Tentacle journal -> cuttle-server -> SQLite, counted in the store"
    )
    rates: dict[str, float] = {}
    strict: dict[str, float] = {}
    for style in [k for k in results if not k.startswith("bare")]:
        rate = args.lines / min(results[style])
        benchlib.heading(f"{style} Tentacle vs bare stream batched 100 lines/message (the goal)")
        rates[style] = compare("lines per second", rate, bare_rate, "lines/s", 0)
        compare("seconds for all lines", min(results[style]), min(results["bare"]), "s", 2)
        benchlib.heading(f"{style} Tentacle vs bare stream of each read as it came (stricter)")
        strict[style] = compare("lines per second", rate, whole_rate, "lines/s", 0)
        compare("seconds for all lines", min(results[style]), min(results["bare_whole"]), "s", 2)
        print(
            f"  CPU per run (least): cuttle-server {cpu[style]['server']:.2f} s, "
            f"tentacle {cpu[style]['tentacle']:.2f} s "
            f"({cpu[style]['server'] / args.lines * 1e6:.2f} + "
            f"{cpu[style]['tentacle'] / args.lines * 1e6:.2f} us per line)"
        )
    parts = [
        f"SUMMARY log_lines_per_s ratio={rates['listening']:.2f} (goal >={GOAL})",
        f"strict_ratio={strict['listening']:.2f}",
        f"listening={args.lines / min(results['listening']):,.0f}/s",
        f"bare_100={bare_rate:,.0f}/s",
        f"bare_whole={whole_rate:,.0f}/s",
    ]
    if "polling" in rates:
        parts.append(
            f"polling={args.lines / min(results['polling']):,.0f}/s "
            f"polling_ratio={rates['polling']:.2f}"
        )
    parts.append("goal_met=" + ("yes" if rates["listening"] >= GOAL else "no"))
    print()
    print(" ".join(parts), flush=True)
    return 0


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines per run")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per kind (best counts)")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit per run, seconds")
    parser.add_argument("--no-polling", action="store_true", help="skip the polling Tentacle")
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.runs, args.timeout = 5000, 1, 60.0
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
