"""Benchmark: a 20 MiB package to 50 polling Tentacles at once, 10 at a time (issue 16).

Cuttle: one real `cuttle-server` process and 50 polling Tentacles (tentacle_swarm.py: each the
product's TentacleAgent on its own home, so each has its own package cache), all in environment
Bench with target tag `fleet`. A project whose process is one `deploy_package` step on `fleet`
(package `bench`, whose Deploy.sh is `true`), with the project variable
Octopus.Acquire.MaxParallelism = 10, is released once; the package is a .zip of incompressible
random bytes in a few stored files. Timed: `cuttle deploy --wait` from starting the CLI until it
exits (what the user waits for), twice:

- deploy 1: nothing is cached, so "Acquire packages" sends the whole file to each of the 50
  machines (checked in the task log: "full N bytes sent to" each), then every machine extracts
  it and runs Deploy.sh;
- deploy 2: the same release again; every machine already holds it (checked: "found in cache
  on" each, nothing sent), so it prices everything but the transfer: polling round trips, the
  engine, extraction, Deploy.sh. deploy 1 - deploy 2 is then the transfer's share.

During each deploy a thread samples the server's RSS (/proc, every 100 ms): printed are the
baseline just before, the peak during, and the growth. The growth must stay bounded: the
server streams the file from its feed in chunks (the chunk being sent and the one read ahead,
package_acquisition.py), so what it holds grows with the machines served at once, not with the
machines or the file's size. The bound checked: MaxParallelism × 8 chunks + 64 MiB. Per
transfer, a chunk lives in several copies for a moment on the polling path: the chunk read
ahead, the one being sent, the PackageChunkRequest holding it, that request serialized (the
polling payload), the ServerFrame holding the payload, the frame serialized, and gRPC's own
buffer of it: about 7 chunks, 8 allowed. The 64 MiB are for what a first deployment to 50
machines allocates besides (engine state, logs, allocator slack; deploy 2, which transfers
nothing, shows the engine's part). Holding the file per machine would be 50 × 20 MiB =
1000 MiB, far above the bound. A FAIL is printed in the summary if the growth is above it; the
bench does not crash. Seen on the shared 2-core VM it was written on: growth 50, 81 and 146 MiB
at MaxParallelism 5, 10 and 20 (20 MiB file) and 84 MiB with a 40 MiB file at 10: about 6.4 MiB
per transfer at once plus 18 MiB, whatever the file's size.

Bare, in the same run: the same package file to 50 destination files, 10 at a time, over the
same kind of mTLS loopback connection (a Tentacle's key and certificate serve it, the server's
identity calls it, with the product's channel options): bench_package_throughput.py's bare
receiver in its own process, one client-streaming call per destination, in chunks of the
product's size (CHUNK_BYTES, 1 MiB) each with its SHA-256, which the receiver checks, appends
and fsyncs before taking the next; it keeps a SHA-256 of the whole file, compares it at the end,
renames the file into place and writes an fsynced index (what the Tentacle's receiver does,
see that module's docstring). Ten channels, one per concurrent stream, warmed before timing
(the Tentacles' polling connections are up before the deploy too). The bare side sends from
this process and receives in one process; Cuttle sends from the server and receives in the
swarm's driver processes (10 Tentacles each). The swarm is stopped before the bare part (the
server stays up, idle), so its heartbeats do not compete with it. Timed: from the first send
until the 50th file is stored. Not done by the bare side: any deployment (no task, no polling,
no extraction, no script): compare it with deploy 1 - deploy 2 as well as with deploy 1.

Printed: the two deploys, the bare figure, the ratios deploy 1 / bare and (deploy 1 - deploy 2)
/ bare, the server's CPU seconds per deploy, its RSS baseline / peak / growth, one SUMMARY line.
Not a CI gate. Needs about (3 × machines + 1) × size of disk (caches, extracted folders, bare
destinations); all of it is removed at the end, even when the run fails (then only the logs
are kept, and the path is printed).

Run: .venv/bin/python scripts/bench/bench_package_fleet.py [--machines 50] [--mib 20]
     [--parallelism 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import grpc
from bench_package_throughput import bare_send
from benchlib import Children, compare, heading
from tentacle_swarm import Swarm, start_swarm

from cuttle.protocol import channel, pki

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
# The bound on the server's RSS growth during the transfers (see the module docstring).
PER_TRANSFER_CHUNKS = 8
FIXED_MIB = 64
MODEL = """
environments:
  - name: Bench
lifecycles:
  - name: Bench only
    phases:
      - name: Bench
        optional_environments: [Bench]
projects:
  - name: Fleet
    lifecycle: Bench only
    channels:
      - name: Default
        is_default: true
    variables:
      - name: Octopus.Acquire.MaxParallelism
        value: "{parallelism}"
    process:
      steps:
        - name: Deploy
          target_tags: [fleet]
          actions:
            - name: Deploy
              type: deploy_package
              package:
                package_id: bench
"""


def make_package(path: Path, mib: int, files: int = 4) -> str:
    """bench.<version>.zip: Deploy.sh (`true`) and `files` stored files of random bytes,
    `mib` MiB in all; returns its SHA-256."""
    rng = random.Random(16)  # noqa: S311 - test data
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("Deploy.sh", "true\n")
        for number in range(files):
            size = mib * MIB // files + (mib * MIB % files if number == 0 else 0)
            with archive.open(f"data/blob-{number}.bin", "w") as out:
                for start in range(0, size, MIB):
                    out.write(rng.randbytes(min(MIB, size - start)))
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(4 * MIB):
            digest.update(piece)
    return digest.hexdigest()


@dataclass
class RssSampler:
    """A thread that samples a process's RSS every `interval` seconds while it runs."""

    pid: int
    interval: float = 0.1
    peak_kib: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.peak_kib = benchlib.rss_kib(self.pid)
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                rss = benchlib.rss_kib(self.pid)
            except (OSError, RuntimeError):
                return  # the process is gone; the deploy's failure says why
            self.samples += 1
            self.peak_kib = max(self.peak_kib, rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(OSError, RuntimeError):
            self.peak_kib = max(self.peak_kib, benchlib.rss_kib(self.pid))


@dataclass
class DeployRun:
    """One timed `cuttle deploy --wait`."""

    seconds: float
    cpu: float
    baseline_kib: int
    peak_kib: int
    samples: int
    task_id: str
    log: str

    @property
    def growth_mib(self) -> float:
        """Peak minus baseline RSS, MiB."""
        return (self.peak_kib - self.baseline_kib) / 1024


def _server_pid(server: Any) -> int:
    assert server.process is not None
    assert server.process.popen is not None
    return int(server.process.popen.pid)


async def timed_deploy(server: Any, version: str, timeout: float) -> DeployRun:
    """`cuttle deploy --wait` of the release, timed, with the server's RSS sampled meanwhile."""
    pid = _server_pid(server)
    baseline = benchlib.rss_kib(pid)
    cpu = benchlib.cpu_seconds(pid)
    args = [
        "deploy",
        "--project",
        "Fleet",
        "--release",
        version,
        "--environment",
        "Bench",
        "--wait",
        "--wait-timeout",
        str(int(timeout)),
    ]
    with RssSampler(pid) as sampler:
        started = time.perf_counter()
        result = await asyncio.to_thread(server.cli, *args, timeout=timeout + 30)
        seconds = time.perf_counter() - started
    cpu = benchlib.cpu_seconds(pid) - cpu
    task_id = next(
        (
            line.split("task ", 1)[1].split(" ", 1)[0]
            for line in result.stderr.splitlines()
            if line.startswith("Deploying: task ")
        ),
        "",
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"cuttle deploy exited {result.returncode} (task {task_id or '?'}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    log = await asyncio.to_thread(server.cli, "task", "log", task_id, check=True, timeout=120)
    return DeployRun(seconds, cpu, baseline, sampler.peak_kib, sampler.samples, task_id, log.stdout)


def check_transfers(run: DeployRun, names: list[str], size: int, cached: bool) -> None:
    """Every machine got the whole file (deploy 1) or found it in its cache (deploy 2)."""
    missing = []
    for name in names:
        if cached:
            if f"bench 1.0.0: found in cache on {name}" not in run.log:
                missing.append(name)
        elif f"bench 1.0.0: full {size} bytes sent to {name} " not in run.log:
            missing.append(name)
    sent = run.log.count(" bytes sent to ")
    if missing or (cached and sent):
        what = "found in cache" if cached else "a full transfer"
        raise RuntimeError(
            f"task {run.task_id}: {len(missing)} machine(s) without {what} "
            f"({', '.join(missing[:5])}); {sent} transfer(s) in the log"
        )


async def bare_fleet(
    children: Children,
    root: Path,
    server: Any,
    tentacle_home: Path,
    package: Path,
    sha256: str,
    machines: int,
    parallelism: int,
) -> tuple[float, float]:
    """The bare side (see the module docstring); returns (seconds, receiver's CPU seconds)."""
    from cuttle.server.app import CERTIFICATE_FILE, KEY_FILE
    from cuttle.server.comms.client import CHUNK_BYTES

    inbox = root / "bare-inbox"
    await asyncio.to_thread(inbox.mkdir)
    log = root / "bare-receiver.log"
    proc = await children.spawn(
        [
            benchlib.PYTHON,
            str(HERE / "bench_package_throughput.py"),
            "bare-receiver",
            "--key",
            str(tentacle_home / "key.pem"),
            "--cert",
            str(tentacle_home / "certificate.pem"),
            "--trust",
            str(server.home / CERTIFICATE_FILE),
            "--workers",
            str(parallelism),
        ],
        log=log,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        ready = await benchlib.read_json_line(proc.stdout, 60, "bare receiver")
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{exc}\n{benchlib.tail(log)}") from None
    identity = pki.load_identity(server.home / KEY_FILE, server.home / CERTIFICATE_FILE)
    tentacle_pem = await asyncio.to_thread((tentacle_home / "certificate.pem").read_bytes)
    channels = [
        grpc.aio.secure_channel(
            f"127.0.0.1:{ready['port']}",
            grpc.ssl_channel_credentials(
                root_certificates=tentacle_pem,
                private_key=identity.key_pem,
                certificate_chain=identity.certificate_pem,
            ),
            options=channel.client_options(pki.TENTACLE_NAME),
        )
        for _ in range(parallelism)
    ]
    try:
        warm = root / "warm.bin"
        await asyncio.to_thread(warm.write_bytes, b"w")
        warm_sha = hashlib.sha256(b"w").hexdigest()
        for k, chan in enumerate(channels):
            target = inbox / f"warm-{k}" / "warm"
            await asyncio.to_thread(target.parent.mkdir)
            await bare_send(chan, warm, warm_sha, target, CHUNK_BYTES)
        # A destination per machine, each its own folder (the receiver's index.json is per
        # folder, as each Tentacle has its own cache index).
        targets = [inbox / f"dest-{k:03d}" / sha256 for k in range(machines)]
        for target in targets:
            await asyncio.to_thread(target.parent.mkdir)
        free: asyncio.Queue[grpc.aio.Channel] = asyncio.Queue()
        for chan in channels:
            free.put_nowait(chan)

        async def one(target: Path) -> None:
            chan = await free.get()
            try:
                await bare_send(chan, package, sha256, target, CHUNK_BYTES)
            finally:
                free.put_nowait(chan)

        cpu = benchlib.cpu_seconds(proc.pid)
        started = time.perf_counter()
        async with asyncio.timeout(600):
            await asyncio.gather(*(one(t) for t in targets))
        seconds = time.perf_counter() - started
        cpu = benchlib.cpu_seconds(proc.pid) - cpu
        await asyncio.to_thread(_check_destinations, targets, package)
        return seconds, cpu
    finally:
        for chan in channels:
            await chan.close(None)
        await asyncio.to_thread(shutil.rmtree, inbox, ignore_errors=True)


def _check_destinations(targets: list[Path], package: Path) -> None:
    size = package.stat().st_size
    for target in targets:
        if target.stat().st_size != size:
            raise RuntimeError(f"{target} is not the package")


def _prune(root: Path) -> None:
    """Remove the bulky data (caches, extracted folders, bare destinations), keep the logs."""
    swarm = root / "swarm"
    if swarm.is_dir():
        for entry in swarm.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
    shutil.rmtree(root / "bare-inbox", ignore_errors=True)
    (root / "packages" / "bench.1.0.0.zip").unlink(missing_ok=True)
    feed = root / "server" / "packages"
    if feed.is_dir():
        shutil.rmtree(feed, ignore_errors=True)


async def run(args: argparse.Namespace) -> int:
    """Start the server and the swarm, deploy twice, send bare, print the figures."""
    from tests.integration.harness.cluster import Process, Server

    benchlib.raise_fd_limit()
    children = Children()
    procs: list[Process] = []
    need = (3 * args.machines + 1) * args.mib * MIB
    free = shutil.disk_usage(Path(os.environ.get("TMPDIR", "/tmp"))).free  # noqa: S108
    if free < 2 * need:
        print(
            f"not enough disk: about {need / 2**30:.1f} GiB needed, "
            f"{free / 2**30:.1f} GiB free (twice as much wanted)"
        )
        return 1
    print(
        f"Package fleet benchmark: {args.mib} MiB to {args.machines} polling Tentacles, "
        f"{args.parallelism} at a time; load average {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    with benchlib.scratch_dir("cuttle-bench-pkgfleet-") as root:
        try:
            server = Server(root / "server", procs)
            await asyncio.to_thread(server.init)
            await asyncio.to_thread(server.start)
            model = root / "model.yaml"
            await asyncio.to_thread(model.write_text, MODEL.format(parallelism=args.parallelism))
            await asyncio.to_thread(server.cli, "apply", "-f", str(model), check=True)
            packages = root / "packages"
            await asyncio.to_thread(packages.mkdir)
            package = packages / "bench.1.0.0.zip"
            sha256 = await asyncio.to_thread(make_package, package, args.mib)
            size = package.stat().st_size
            await asyncio.to_thread(
                server.cli, "package", "push", str(package), check=True, timeout=120
            )
            await asyncio.to_thread(
                server.cli,
                "release",
                "create",
                "--project",
                "Fleet",
                "--version",
                "1.0.0",
                check=True,
            )
            started = time.monotonic()
            swarm: Swarm = await start_swarm(
                children,
                root / "swarm",
                server,
                count=args.machines,
                per_process=args.per_process,
                environments=("Bench",),
                roles=("fleet",),
                prefix="fleet",
            )
            await swarm.wait_connected(server, timeout=args.timeout)
            print(
                f"{args.machines} polling Tentacles in {len(swarm.pids)} processes connected "
                f"in {time.monotonic() - started:.1f}s; package {size:,} bytes",
                flush=True,
            )

            swarm_cpu = sum(benchlib.cpu_seconds(pid) for pid in swarm.pids)
            first = await timed_deploy(server, "1.0.0", args.timeout)
            swarm_cpu = sum(benchlib.cpu_seconds(pid) for pid in swarm.pids) - swarm_cpu
            check_transfers(first, swarm.names, size, cached=False)
            for name in swarm.names:
                cached = swarm.home(name) / "files" / "packages" / sha256
                if cached.stat().st_size != size:
                    raise RuntimeError(f"{cached} is not the package")
            print(
                f"  deploy 1 ({args.machines} full transfers): {first.seconds:6.2f} s, server CPU "
                f"{first.cpu:5.2f} s, swarm CPU {swarm_cpu:5.2f} s, server RSS "
                f"{first.baseline_kib / 1024:.0f} -> {first.peak_kib / 1024:.0f} MiB "
                f"({first.samples} samples)",
                flush=True,
            )
            second = await timed_deploy(server, "1.0.0", args.timeout)
            check_transfers(second, swarm.names, size, cached=True)
            print(
                f"  deploy 2 (all found in cache): {second.seconds:6.2f} s, server CPU "
                f"{second.cpu:5.2f} s, server RSS {second.baseline_kib / 1024:.0f} -> "
                f"{second.peak_kib / 1024:.0f} MiB",
                flush=True,
            )
            await swarm.close()
            await children.aclose()
            bare_seconds, bare_cpu = await bare_fleet(
                children,
                root,
                server,
                swarm.home(swarm.names[0]),
                package,
                sha256,
                args.machines,
                args.parallelism,
            )
            print(
                f"  bare: {bare_seconds:6.2f} s, receiver CPU {bare_cpu:5.2f} s",
                flush=True,
            )
        finally:
            await children.aclose()
            for proc in reversed(procs):
                await asyncio.to_thread(proc.stop)
            await asyncio.to_thread(_prune, root)

    heading(
        f"{args.mib} MiB ({size:,} bytes) to {args.machines} machines, {args.parallelism} at "
        "a time (seconds: lower is better)"
    )
    whole = compare("deploy 1 (transfers + deploy)", first.seconds, bare_seconds, "s", 2)
    share = first.seconds - second.seconds
    transfer = compare("deploy 1 - deploy 2 (transfers)", share, bare_seconds, "s", 2)
    if share <= 0:
        print("  (deploy 2 took as long as deploy 1: the transfers' share is lost in the noise)")
    print(f"  deploy 2 (everything found in cache): {second.seconds:.2f} s")
    mib_s = args.machines * size / MIB
    print(
        f"  throughput: deploy 1 {mib_s / first.seconds:.1f} MiB/s, transfers "
        f"{mib_s / share if share > 0 else float('nan'):.1f} MiB/s, bare "
        f"{mib_s / bare_seconds:.1f} MiB/s (all destinations together)"
    )
    print(
        f"  server CPU: deploy 1 {first.cpu:.2f} s, deploy 2 {second.cpu:.2f} s "
        f"(transfers {first.cpu - second.cpu:.2f} s for {args.machines * size / MIB:,.0f} MiB)"
    )
    from cuttle.server.comms.client import CHUNK_BYTES

    per_transfer = PER_TRANSFER_CHUNKS * CHUNK_BYTES / MIB
    bound = round(args.parallelism * per_transfer + FIXED_MIB)
    held = args.machines * size / MIB
    ok = first.growth_mib <= bound
    print(
        f"  server RSS during deploy 1: baseline {first.baseline_kib / 1024:.0f} MiB, peak "
        f"{first.peak_kib / 1024:.0f} MiB, growth {first.growth_mib:.0f} MiB "
        f"(bound {bound} MiB = {args.parallelism} × {per_transfer:g} MiB + {FIXED_MIB} MiB; "
        f"the file held per machine would be {held:,.0f} MiB): {'ok' if ok else 'FAIL'}"
    )
    print(
        f"  server RSS during deploy 2: baseline {second.baseline_kib / 1024:.0f} MiB, peak "
        f"{second.peak_kib / 1024:.0f} MiB, growth {second.growth_mib:.0f} MiB"
    )
    print(f"\n(load average at the end {os.getloadavg()[0]:.2f})", flush=True)
    print(
        f"SUMMARY package_fleet {args.mib} MiB x {args.machines} machines @ {args.parallelism}: "
        f"deploy1 {first.seconds:.1f}s deploy2 {second.seconds:.1f}s bare {bare_seconds:.1f}s "
        f"ratio deploy1/bare x{whole:.2f} (deploy1-deploy2)/bare "
        f"{f'x{transfer:.2f}' if share > 0 else 'n/a'}; server RSS "
        f"+{first.growth_mib:.0f} MiB (bound {bound} MiB: {'ok' if ok else 'FAIL'}), "
        f"CPU {first.cpu:.1f}s",
        flush=True,
    )
    return 0


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--mib", type=int, default=20)
    parser.add_argument("--parallelism", type=int, default=10, help="MaxParallelism")
    parser.add_argument("--per-process", type=int, default=10, help="Tentacles per driver")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit per wait, seconds")
    parser.add_argument("--quick", action="store_true", help="10 machines, 5 MiB")
    args = parser.parse_args()
    if args.quick:
        args.machines, args.mib = 10, 5
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
