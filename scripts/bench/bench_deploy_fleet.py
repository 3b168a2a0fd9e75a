"""Benchmark: a 3-step no-op deployment on 1, 10 and 50 polling Tentacles vs the script console.

Cuttle: one real `cuttle-server` process and N polling Tentacles (the Tentacle's own
PollingClient, many per driver process, started exactly as bench_polling_fleet.py starts them),
all in environment Bench with target tag `fleet`. A project whose process is three steps, each
one `run_script` action `true` on every `fleet` machine, is applied and released once; the
figure is the wall time of `cuttle deploy --wait` for that release limited to N machines with
`--specific-machine` (from starting the CLI until it exits: what the user waits for).
Bare: the same 3 × N no-op scripts through the script console on the same Tentacles and the same
server: `cuttle script run --machine ... -- true` three times, one after the other (each waits
for its N machines, as a step waits for its machines before the next starts). Same scripts,
same machines, same transport. The console needs three CLI calls where the deploy needs one,
so the time of a bare CLI round trip (`cuttle environment list`, measured in the same rounds) is
taken off the console side twice for the ratio that counts ("one CLI start each"); the raw
ratio is printed beside it. What the ratio prices is the engine (plan, task tree, claims,
per-node state) over the ad-hoc path.

Also printed: the server's CPU seconds per action-on-machine for each side (from
/proc/<pid>/stat around each run), the load average, one SUMMARY line. Sizes alternate
deploy / console per round. Goal: deploy ≤ 1.5× the console at the largest N. Not a CI gate.

Run: .venv/bin/python scripts/bench/bench_deploy_fleet.py [--sizes 1,10,50] [--rounds R] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import benchlib
from bench_polling_fleet import _Fleet, _pid, _spawn_drivers
from benchlib import Children, compare

GOAL = 1.5
STEPS = 3
MODEL = """
environments:
  - name: Bench
lifecycles:
  - name: Bench only
    phases:
      - name: Bench
        optional_environments: [Bench]
projects:
  - name: Noop
    lifecycle: Bench only
    channels:
      - name: Default
        is_default: true
    process:
      steps:
"""
STEP = """        - name: Step {n}
          target_tags: [fleet]
          actions:
            - name: Noop {n}
              type: run_script
              script:
                body: |
                  true
"""


def _machines(n: int) -> list[str]:
    # The names the fleet's drivers register (bench_polling_fleet.py).
    return [f"fleet-{k:05d}" for k in range(n)]


async def _timed(server: Any, args: list[str], timeout: float) -> tuple[float, float]:
    """Run `cuttle ARGS`; wall seconds until it exits and the server's CPU seconds meanwhile."""
    pid = _pid(server)
    cpu = benchlib.cpu_seconds(pid)
    started = time.perf_counter()
    result = await asyncio.to_thread(server.cli, *args, timeout=timeout)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"cuttle {' '.join(args[:3])} exited {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return wall, benchlib.cpu_seconds(pid) - cpu


async def _deploy(server: Any, n: int, timeout: float) -> tuple[float, float]:
    specific = [a for m in _machines(n) for a in ("--specific-machine", m)]
    return await _timed(
        server,
        [
            "deploy",
            "--project",
            "Noop",
            "--release",
            "1.0.0",
            "--environment",
            "Bench",
            *specific,
            "--wait",
            "--wait-timeout",
            str(int(timeout)),
        ],
        timeout + 30,
    )


async def _console(server: Any, n: int, timeout: float) -> tuple[float, float]:
    machines = [a for m in _machines(n) for a in ("--machine", m)]
    wall = cpu = 0.0
    for _ in range(STEPS):
        w, c = await _timed(server, ["script", "run", *machines, "--", "true"], timeout)
        wall += w
        cpu += c
    return wall, cpu


async def run(args: argparse.Namespace) -> int:
    """Start the server and the fleet, measure every size, print the figures."""
    from tests.integration.harness.cluster import Server

    benchlib.raise_fd_limit()
    sizes = sorted(args.sizes)
    count = sizes[-1]
    children = Children()
    results: dict[int, dict[str, list[tuple[float, float]]]] = {}
    print(
        f"Deploy fleet benchmark: sizes {sizes}, {args.rounds} round(s); load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    with benchlib.scratch_dir("cuttle-bench-deploy-") as root:
        procs: list[Any] = []
        # A health check in the middle of a run would add GetInfo calls to one side only.
        server = Server(root / "server", procs, settings={"health_check_interval_seconds": 3600.0})
        fleet: _Fleet | None = None
        try:
            drivers = await _spawn_drivers(children, root, count, args.drivers, args.nice)
            fleet = _Fleet(drivers)
            for driver in drivers:
                await driver.expect("ready", 600)
            await asyncio.to_thread(server.init)
            await asyncio.to_thread(server.start)
            model = root / "model.yaml"
            model.write_text(MODEL + "".join(STEP.format(n=k + 1) for k in range(STEPS)))
            await asyncio.to_thread(server.cli, "apply", "-f", str(model), check=True)
            answers = []
            for driver in drivers:
                driver.send(
                    cmd="register",
                    admin=f"127.0.0.1:{server.admin_port}",
                    server_cert=str(server.home / "server-certificate.pem"),
                    api_key=server.api_key,
                    concurrency=1,
                )
                answers.append(await driver.expect("registered", args.timeout))
            await fleet.command(
                "connecting",
                60,
                cmd="connect",
                kind="cuttle",
                address=answers[0]["address"],
                server_cert=str(server.home / "server-certificate.pem"),
                backoff_cap=2.0,
            )
            await fleet.wait_connected(fleet.total, args.timeout)
            await asyncio.to_thread(
                server.cli,
                "release",
                "create",
                "--project",
                "Noop",
                "--version",
                "1.0.0",
                check=True,
            )
            print(f"{count} polling Tentacles connected in {args.drivers} driver process(es)")
            # One warm-up of each path: imports, first connections, prepared statements.
            await _deploy(server, 1, args.timeout)
            await _console(server, 1, args.timeout)
            for n in sizes:
                results[n] = {"deploy": [], "console": [], "cli": []}
                for _ in range(args.rounds):
                    results[n]["deploy"].append(await _deploy(server, n, args.timeout))
                    results[n]["console"].append(await _console(server, n, args.timeout))
                    results[n]["cli"].append(
                        await _timed(server, ["environment", "list"], args.timeout)
                    )
                    print(
                        f"  N={n:<3} deploy {results[n]['deploy'][-1][0]:6.2f} s   console "
                        f"{results[n]['console'][-1][0]:6.2f} s",
                        flush=True,
                    )
            await fleet.command("disconnected", 120, cmd="disconnect")
        finally:
            if fleet is not None:
                await fleet.close()
            await children.aclose()
            for proc in reversed(procs):
                await asyncio.to_thread(proc.stop)

    ratios: dict[int, float] = {}
    for n in sizes:
        deploy = results[n]["deploy"]
        console = results[n]["console"]
        benchlib.heading(f"N = {n}: {STEPS} steps × {n} machines = {STEPS * n} actions on machines")
        wall_d = statistics.median(w for w, _ in deploy)
        wall_c = statistics.median(w for w, _ in console)
        cli = statistics.median(w for w, _ in results[n]["cli"])
        compare("wall time until the CLI exits (raw)", wall_d, wall_c, "s", 2)
        ratios[n] = compare(
            "wall time, one CLI start each", wall_d, wall_c - (STEPS - 1) * cli, "s", 2
        )
        print(f"  (a bare CLI round trip: {cli:.2f} s)")
        actions = STEPS * n
        compare(
            "server CPU per action-on-machine",
            statistics.median(c for _, c in deploy) / actions * 1e3,
            statistics.median(c for _, c in console) / actions * 1e3,
            "ms",
            2,
        )
    largest = sizes[-1]
    print(f"\n(load average at the end {os.getloadavg()[0]:.2f})", flush=True)
    print(
        "SUMMARY deploy_fleet "
        + " ".join(f"N={n} ratio x{ratios[n]:.2f}" for n in sizes)
        + f" (goal <= {GOAL}x at N={largest}: {'met' if ratios[largest] <= GOAL else 'not met'})",
        flush=True,
    )
    return 0


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50]
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--drivers", type=int, default=2, help="driver processes")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the driver processes")
    parser.add_argument("--timeout", type=float, default=300.0, help="limit per run, seconds")
    parser.add_argument("--quick", action="store_true", help="sizes 1 and 3, one round")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.drivers, args.timeout = [1, 3], 1, 1, 60.0
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
