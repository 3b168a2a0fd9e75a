"""Benchmark: latency of a control RPC (GetStatus) through Cuttle vs a bare grpc.aio mTLS call.

Cuttle: GetStatus for a finished ticket (nothing left to read) through the server-side
TentacleClient of a real ServerNode running in this process, to real `tentacle run` processes
with pinning, the auth interceptor and JSON logging as in production:
  - listening: the server dials the Tentacle over a pinned mTLS channel;
  - polling: the request is queued for the Tentacle's open Poll stream (RPC in reverse).
Bare: a unary call with the same request bytes to a trivial echo service (generic handlers) in
another process, over grpc.aio with mTLS, the same certificate type (ECDSA P-256, self-signed,
pinned) and the same channel options. Calls are sequential, and the kinds alternate in rounds so
that noise from other work on the machine falls on all of them alike.

Goal: listening p50 <= 1.5x bare p50.

Run: .venv/bin/python scripts/bench/bench_control_rpc.py [--calls N] [--quick]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Awaitable, Callable

import benchlib
from benchlib import Children, InProcessServer, compare, percentile

from cuttle.protocol import pki
from cuttle.protocol.v1 import tentacle_pb2 as pb
from cuttle.server.comms.client import TentacleClient
from cuttle.server.domain.scripts import ScriptRequest

GOAL = 1.5


async def _finished_ticket(client: TentacleClient) -> tuple[str, int]:
    """Run `true` under a new ticket, wait until it finished; (ticket, last sequence)."""
    ticket = f"bench-{uuid.uuid4().hex}"
    await client.start_script(ScriptRequest(ticket=ticket, body="true", syntax="bash"))
    last = 0
    async for status in client.watch_script(ticket):
        last = max(last, status.last_sequence)
        if status.finished:
            break
    status = await client.get_status(ticket, last)
    if not status.finished or status.exit_code != 0:
        raise RuntimeError(f"the warm-up script did not finish cleanly: {status}")
    return ticket, last


async def _time_calls(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        start = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


async def run(args: argparse.Namespace) -> int:
    """Set everything up, measure in rounds, print figures and the summary line."""
    children = Children()
    with benchlib.scratch_dir("cuttle-bench-rpc-") as root:
        server = InProcessServer(root, {"health_check_interval_seconds": 3600.0})
        chan = None
        try:
            await server.start()
            kinds: dict[str, Callable[[], Awaitable[object]]] = {}

            listening = await server.add_tentacle("bench-listening", "listening")
            ticket_l, after_l = await _finished_ticket(listening)
            kinds["listening"] = lambda: listening.get_status(ticket_l, after_l)
            if not args.no_polling:
                polling = await server.add_tentacle("bench-polling", "polling")
                ticket_p, after_p = await _finished_ticket(polling)
                kinds["polling"] = lambda: polling.get_status(ticket_p, after_p)

            bare_server = benchlib.write_identity(
                pki.generate_identity("bare server", pki.SERVER_NAME), root / "bare", "server"
            )
            bare_client = benchlib.write_identity(
                pki.generate_identity("bare client", pki.TENTACLE_NAME), root / "bare", "client"
            )
            _proc, port = await benchlib.start_bare_server(
                children, "echo", bare_server, bare_client.cert, root / "bare" / "server.log"
            )
            chan = benchlib.bare_channel(
                f"127.0.0.1:{port}", bare_client.identity, bare_server.identity.certificate_pem
            )
            echo = benchlib.bare_unary(chan, "Echo")
            payload = pb.ScriptTicketRequest(ticket=ticket_l, after_sequence=after_l)
            request = payload.SerializeToString()
            kinds["bare"] = lambda: echo(request, timeout=60)

            for call in kinds.values():
                await _time_calls(call, args.warmup)
            samples: dict[str, list[float]] = {name: [] for name in kinds}
            per_round = max(1, args.calls // args.rounds)
            order = list(kinds)
            for index in range(args.rounds):
                # Rotate which kind goes first so none always runs on a warmer machine.
                shift = index % len(order)
                for name in order[shift:] + order[:shift]:
                    samples[name] += await _time_calls(kinds[name], per_round)
        finally:
            if chan is not None:
                await chan.close(None)
            await children.aclose()
            await server.stop()

    bare = samples["bare"]
    print(
        f"GetStatus on a finished ticket, {per_round * args.rounds} sequential calls per kind "
        f"in {args.rounds} rounds (microseconds; request {len(request)} bytes)"
    )
    results: dict[str, float] = {}
    for name in [k for k in kinds if k != "bare"]:
        benchlib.heading(f"{name} Tentacle via TentacleClient vs bare grpc.aio mTLS unary echo")
        for q in (50, 90, 99):
            r = compare(f"p{q}", percentile(samples[name], q), percentile(bare, q), "us")
            if q == 50:
                results[name] = r
        compare(
            "mean",
            sum(samples[name]) / len(samples[name]),
            sum(bare) / len(bare),
            "us",
        )
        rate = 1e6 / (sum(samples[name]) / len(samples[name]))
        bare_rate = 1e6 / (sum(bare) / len(bare))
        compare("sequential calls/s", rate, bare_rate, "calls/s", 0)
    parts = [
        f"SUMMARY control_rpc_p50 ratio={results['listening']:.2f} (goal <={GOAL})",
        f"listening_p50={percentile(samples['listening'], 50):.0f}us",
        f"bare_p50={percentile(bare, 50):.0f}us",
    ]
    if "polling" in results:
        parts.append(
            f"polling_p50={percentile(samples['polling'], 50):.0f}us "
            f"polling_ratio={results['polling']:.2f}"
        )
    parts.append("goal_met=" + ("yes" if results["listening"] <= GOAL else "no"))
    print()
    print(" ".join(parts), flush=True)
    return 0


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=6000, help="timed calls per kind")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per kind")
    parser.add_argument("--no-polling", action="store_true", help="skip the polling Tentacle")
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds, args.warmup = 200, 2, 20
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
