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

Run: .venv/bin/python scripts/bench/bench_noop_scripts.py [--runs N] [--quick]
A/B of two versions in one run (the noise between runs here is larger than most changes):
    git worktree add /tmp/base <rev> && (cd /tmp/base && uv sync --all-packages)
    .venv/bin/python scripts/bench/bench_noop_scripts.py \
        --baseline-python /tmp/base/.venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import benchlib
from benchlib import InProcessServer, compare, percentile

from cuttle.server.comms.client import TentacleClient
from cuttle.server.domain.scripts import ScriptRequest
from cuttle.server.engine.completions import TicketCompletions

GOAL = 0.35


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
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    parser.add_argument(
        "--baseline-python",
        metavar="PYTHON",
        help="also measure a listening Tentacle run by another install's interpreter "
        "(e.g. a worktree of an older commit), in the same rounds: an A/B of two versions",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds, args.warmup = 20, 2, 2
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
