"""Benchmark: sequential no-op scripts per second on one Tentacle vs bare process spawns.

Cuttle: `true` as a bash script under a new ticket, run the way the engine runs a target, directly
through the server-side TentacleClient of a real ServerNode in this process: WatchScript with the
start in it (the Tentacle starts the ticket and streams it to its end), then CompleteScript
handed to the engine's TicketCompletions (the Tentacle deletes the workspace and journal; the
next run does not wait for that answer, as the engine's next step does not). One after the
other, on one real `tentacle run` process (listening; a polling one is reported too).
Bare: `asyncio.create_subprocess_exec("bash", "-c", "true")` and wait, one after the other, from
this process. The kinds alternate in rounds.

Goal: listening rate >= 0.35x the bare rate.

Then the same no-op through the admin API, as a user runs it, on a real `cuttle-server` process
(SQLite) with a listening `tentacle run`, both started by the integration-test harness:
- RPC: RunScript(`true`) from the request until its final event (the task ended), one after the
  other; bare: `bash -c true` spawned and waited for, plus one mTLS round trip to a bare gRPC
  server process (a request reaches a server, a process runs, the answer comes back).
- CLI: `cuttle script run --machine M -- true` from starting the CLI until it exits; bare: a
  client process (`benchlib.py bare-call`) that makes one mTLS round trip to the bare server and
  then spawns `bash -c true` (a process, a handshake, a call, a spawn: the least the CLI does).
p50 and p90 of each, ratio = bare time / Cuttle time (1.0: as fast as bare).

Run: .venv/bin/python scripts/bench/bench_noop_scripts.py [--runs N] [--quick]
A/B of two versions in one run (the noise between runs here is larger than most changes):
    git worktree add /tmp/base <rev> && (cd /tmp/base && uv sync --all-packages)
    .venv/bin/python scripts/bench/bench_noop_scripts.py \
        --baseline-python /tmp/base/.venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import benchlib
import grpc
from benchlib import Children, InProcessServer, compare, percentile

from cuttle.protocol import channel, pki
from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import admin_pb2_grpc
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.comms.client import TentacleClient
from cuttle.server.domain.scripts import ScriptRequest
from cuttle.server.engine.completions import TicketCompletions

GOAL = 0.35
# Production timings for the admin-API server, not the harness's short test intervals.
API_SERVER_SETTINGS = {
    "heartbeat_interval_seconds": 10.0,
    "heartbeat_timeout_seconds": 30.0,
    "pickup_timeout_seconds": 120.0,
    "health_check_interval_seconds": 3600.0,
}
API_MACHINE = "noop-api"


def _script_run(
    client: TentacleClient, completions: TicketCompletions
) -> Callable[[], Awaitable[None]]:
    async def once() -> None:
        ticket = f"noop-{uuid.uuid4().hex}"
        request = ScriptRequest(ticket=ticket, body="true", syntax="bash")
        final = None
        # Started by the watch, as the engine starts a target: one round trip, not two.
        async for status in client.watch_script(ticket, start=request):
            final = status
        if final is None or not final.finished:
            final = await client.get_status(ticket)
        if final.state != "complete" or final.exit_code != 0:
            raise RuntimeError(f"no-op script ended {final.state} ({final.exit_code})")
        # As the engine does once the result is stored: the agent may delete the ticket, and
        # the next run does not wait for that answer.
        await completions.submit(client, ticket)

    return once


async def _bare_spawn() -> None:
    proc = await asyncio.create_subprocess_exec("bash", "-c", "true")
    if await proc.wait() != 0:
        raise RuntimeError("bash -c true failed")


async def _timed(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


async def _timed_thread(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from starting a process until it exits (it must succeed)."""
    start = time.perf_counter()
    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {done.returncode}")
    return elapsed


async def _admin_api(args: argparse.Namespace) -> dict[str, list[float]]:
    """The no-op through the admin API and the CLI, against their bare sides (see the top)."""
    from tests.integration.harness.cluster import BIN, Cluster  # noqa: PLC0415 - harness

    samples: dict[str, list[float]] = {"rpc": [], "rpc_bare": [], "cli": [], "cli_bare": []}
    children = Children()
    chans: list[grpc.aio.Channel] = []
    with benchlib.scratch_dir("cuttle-bench-noop-api-") as root:
        cluster = Cluster(root)
        try:
            server = await asyncio.to_thread(cluster.start_server, **API_SERVER_SETTINGS)
            await asyncio.to_thread(cluster.add_tentacle, API_MACHINE, "listening")
            admin = grpc.aio.secure_channel(
                f"127.0.0.1:{server.admin_port}",
                grpc.ssl_channel_credentials(
                    root_certificates=(server.home / "server-certificate.pem").read_bytes()
                ),
                options=channel.client_options(pki.SERVER_NAME),
            )
            chans.append(admin)
            stub = admin_pb2_grpc.AdminServiceStub(admin)
            metadata = (("x-api-key", server.api_key),)
            bare_server = benchlib.write_identity(
                pki.generate_identity("bare server", pki.SERVER_NAME), root / "bare", "server"
            )
            bare_client = benchlib.write_identity(
                pki.generate_identity("bare client", pki.TENTACLE_NAME), root / "bare", "client"
            )
            _proc, port = await benchlib.start_bare_server(
                children, "echo", bare_server, bare_client.cert, root / "bare" / "server.log"
            )
            bare_chan = benchlib.bare_channel(
                f"127.0.0.1:{port}", bare_client.identity, bare_server.identity.certificate_pem
            )
            chans.append(bare_chan)
            echo = benchlib.bare_unary(bare_chan, "Echo")
            request = apb.RunScriptRequest(
                machines=[API_MACHINE], syntax=tpb.SCRIPT_SYNTAX_BASH, body="true"
            )

            async def rpc() -> None:
                final = None
                async for event in stub.RunScript(request, metadata=metadata, timeout=60):
                    if event.WhichOneof("kind") == "finished":
                        final = event.finished
                if final is None or final.state != apb.TASK_STATE_SUCCESS:
                    raise RuntimeError(f"no-op script through the API ended {final}")

            async def rpc_bare() -> None:
                await _bare_spawn()
                await echo(b"run", timeout=60)

            env = server.cli_env()
            cli = [str(BIN / "cuttle"), "script", "run", "--machine", API_MACHINE, "--", "true"]
            bare_call = [
                benchlib.PYTHON,
                str(Path(benchlib.__file__)),
                "bare-call",
                "--port",
                str(port),
                "--key",
                str(bare_client.key),
                "--cert",
                str(bare_client.cert),
                "--server-cert",
                str(bare_server.cert),
            ]
            for _ in range(args.warmup):
                await rpc()
                await rpc_bare()
            await _timed_thread(cli, env)
            await _timed_thread(bare_call, env)
            per_round = max(1, args.api_runs // args.rounds)
            for _ in range(args.rounds):
                samples["rpc"] += await _timed(rpc, per_round)
                samples["rpc_bare"] += await _timed(rpc_bare, per_round)
                for _ in range(max(1, per_round // 4)):
                    samples["cli"].append(await _timed_thread(cli, env))
                    samples["cli_bare"].append(await _timed_thread(bare_call, env))
        finally:
            for chan in chans:
                await chan.close(None)
            await children.aclose()
            await asyncio.to_thread(cluster.stop)
    return samples


async def run(args: argparse.Namespace) -> int:
    """Set up a server and Tentacles, measure in alternating rounds, print the figures."""
    with benchlib.scratch_dir("cuttle-bench-noop-") as root:
        server = InProcessServer(root, {"health_check_interval_seconds": 3600.0})
        completions = TicketCompletions()
        try:
            await server.start()
            completions.start()
            kinds: dict[str, Callable[[], Awaitable[None]]] = {
                "listening": _script_run(
                    await server.add_tentacle("noop-listening", "listening"), completions
                )
            }
            if not args.no_polling:
                kinds["polling"] = _script_run(
                    await server.add_tentacle("noop-polling", "polling"), completions
                )
            if args.baseline_python:
                kinds["baseline"] = _script_run(
                    await server.add_tentacle(
                        "noop-baseline", "listening", python=args.baseline_python
                    ),
                    completions,
                )
            kinds["bare"] = _bare_spawn
            for call in kinds.values():
                await _timed(call, args.warmup)
            samples: dict[str, list[float]] = {name: [] for name in kinds}
            per_round = max(1, args.runs // args.rounds)
            order = list(kinds)
            for index in range(args.rounds):
                shift = index % len(order)
                for name in order[shift:] + order[:shift]:
                    samples[name] += await _timed(kinds[name], per_round)
        finally:
            await completions.stop()
            await server.stop()

    bare = samples["bare"]
    bare_rate = len(bare) / sum(bare)
    print(
        f"Sequential no-op bash scripts, {per_round * args.rounds} per kind in {args.rounds} "
        "rounds; Cuttle = WatchScript starting the ticket + CompleteScript queued (as the engine)"
    )
    rates: dict[str, float] = {}
    for name in [k for k in kinds if k != "bare"]:
        benchlib.heading(f"{name} Tentacle vs bare asyncio spawn of bash -c true")
        rate = len(samples[name]) / sum(samples[name])
        rates[name] = compare("runs per second", rate, bare_rate, "runs/s")
        for q in (50, 90, 99):
            compare(
                f"p{q} time per run",
                percentile(samples[name], q) * 1e3,
                percentile(bare, q) * 1e3,
                "ms",
                2,
            )
    parts = [
        f"SUMMARY noop_scripts_per_s ratio={rates['listening']:.2f} (goal >={GOAL})",
        f"listening={len(samples['listening']) / sum(samples['listening']):.1f}/s",
        f"bare={bare_rate:.1f}/s",
    ]
    if "polling" in rates:
        parts.append(
            f"polling={len(samples['polling']) / sum(samples['polling']):.1f}/s "
            f"polling_ratio={rates['polling']:.2f}"
        )
    api = await _admin_api(args)
    benchlib.heading(
        "through the admin API: RunScript(`true`) until its final event, and `cuttle script run "
        "-- true` until the CLI exits (ratio = bare time / Cuttle time)"
    )
    api_ratio: dict[str, float] = {}
    for kind, label in (("rpc", "RunScript -> final event"), ("cli", "cuttle script run -- true")):
        for q in (50, 90):
            cuttle_ms = percentile(api[kind], q) * 1e3
            bare_ms = percentile(api[f"{kind}_bare"], q) * 1e3
            r = bare_ms / cuttle_ms if cuttle_ms else float("inf")
            api_ratio.setdefault(kind, r)
            print(
                f"  {label + f' p{q}':<34} cuttle {cuttle_ms:>9.1f} ms   bare {bare_ms:>9.1f} ms"
                f"   ratio {r:6.3f}x",
                flush=True,
            )
    parts.append(
        f"api_p50={percentile(api['rpc'], 50) * 1e3:.0f}ms "
        f"(bare {percentile(api['rpc_bare'], 50) * 1e3:.0f}ms, ratio {api_ratio['rpc']:.2f}) "
        f"cli_p50={percentile(api['cli'], 50) * 1e3:.0f}ms "
        f"(bare {percentile(api['cli_bare'], 50) * 1e3:.0f}ms, ratio {api_ratio['cli']:.2f})"
    )
    if "baseline" in rates:
        parts.append(
            f"baseline_ratio={rates['baseline']:.2f} "
            f"listening_vs_baseline={rates['listening'] / rates['baseline']:.2f}x"
        )
    parts.append("goal_met=" + ("yes" if rates["listening"] >= GOAL else "no"))
    print()
    print(" ".join(parts), flush=True)
    return 0


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="timed runs per kind")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs per kind")
    parser.add_argument("--no-polling", action="store_true", help="skip the polling Tentacle")
    parser.add_argument(
        "--api-runs", type=int, default=100, help="timed RunScript calls (and 1/4 as many CLIs)"
    )
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    parser.add_argument(
        "--baseline-python",
        metavar="PYTHON",
        help="also measure a listening Tentacle run by another install's interpreter "
        "(e.g. a worktree of an older commit), in the same rounds: an A/B of two versions",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds, args.warmup, args.api_runs = 20, 2, 2, 8
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
