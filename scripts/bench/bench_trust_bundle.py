"""Benchmark: rebuilding the pinned trust bundle at fleet size vs gRPC building the same bundle.

Cuttle: a grpc.aio server in this process with PinnedPeers credentials and interceptor (as the
polling endpoint has them) trusting N Tentacle certificates, self-signed ECDSA P-256 with a
distinct subject each, as `tentacle create` makes them. Timed:
  - change: `trust()` one new peer, then that peer's first call; the handshake is where gRPC core
    takes the new bundle and builds its certificate store (what every registration costs);
  - start-up: `set_trusted()` of all N, `add_secure_port`, `start`, and a trusted peer's first
    call; and, within it, how long `add_secure_port` held the event loop;
  - Cuttle's own share of a change: `trust()` plus handing the bundle over (the PEM join and
    the configuration object), without gRPC's build.
Bare: `grpc.ssl_server_credentials` with the same N certificates as the client-root bundle,
`add_secure_port` (gRPC core builds the store there), `start`, and one call, in the same run and
alternating with the Cuttle measurements, so noise falls on both.

gRPC's build is not linear in N (its store sorts itself again for each certificate added); the
figures show Cuttle adds nothing measurable on top of it: its own share is one pass over the
PEMs, under a millisecond at 5,000 (it grows a little faster than N only as the bundle outgrows
the CPU caches).

Goal: change <= 1.2x bare at the largest size (at the smallest, both are milliseconds and noise).

Run: .venv/bin/python scripts/bench/bench_trust_bundle.py [--sizes 1000,2500,5000] [--repeats N]
     [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

# gRPC core reads this once, when benchlib imports grpc: stopping a server logs a GOAWAY line
# per connection at the default level, noise in the figures.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import benchlib  # noqa: E402
import grpc  # noqa: E402
from benchlib import compare  # noqa: E402

from cuttle.protocol import channel, pki
from cuttle.protocol.pinning import PinnedPeers, _BundleFetcher

GOAL = 1.2
SERVICE = "bare.Bench"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def _same(data: bytes) -> bytes:
    return data


def _server(interceptors: list[Any] | None = None) -> grpc.aio.Server:
    server = grpc.aio.server(interceptors=interceptors, options=channel.server_options())
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo, _same, _same)}
            )
        ]
    )
    return server


async def _first_call(port: int, me: pki.Identity, server: pki.Identity) -> None:
    """One call on a new channel: a full TLS handshake, then a unary echo."""
    chan = benchlib.bare_channel(f"127.0.0.1:{port}", me, server.certificate_pem)
    try:
        if await benchlib.bare_unary(chan, "Echo")(b"ping", timeout=120) != b"ping":
            raise RuntimeError("the echo answered something else")
    finally:
        await chan.close(None)


class Fleet:
    """Tentacle identities made once: the first N are the trusted set, the rest are newcomers."""

    def __init__(self, size: int, newcomers: int) -> None:
        self.server = pki.generate_identity("Bench server", pki.SERVER_NAME)
        self.peers = [
            pki.generate_identity(f"Tentacle bench-{i:05d}", pki.TENTACLE_NAME) for i in range(size)
        ]
        self._newcomers = [
            pki.generate_identity(f"Tentacle newcomer-{i:05d}", pki.TENTACLE_NAME)
            for i in range(newcomers)
        ]

    def trusted(self, n: int) -> dict[str, bytes]:
        """The first n peers as PinnedPeers takes them."""
        return {p.thumbprint: p.certificate_pem for p in self.peers[:n]}

    def newcomer(self) -> pki.Identity:
        """A peer never trusted before."""
        return self._newcomers.pop()


class CuttleSide:
    """A pinned server trusting n peers, started once per size."""

    def __init__(self, fleet: Fleet, n: int) -> None:
        self.fleet = fleet
        self.n = n
        self.peers = PinnedPeers(fleet.server)
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> tuple[float, float]:
        """Seconds from set_trusted to the first answered call; and add_secure_port alone."""
        self.server = _server([self.peers.interceptor()])
        begin = time.perf_counter()
        self.peers.set_trusted(self.fleet.trusted(self.n))
        bind = time.perf_counter()
        self.port = self.server.add_secure_port("127.0.0.1:0", self.peers.credentials())
        bound = time.perf_counter()
        await self.server.start()
        await _first_call(self.port, self.fleet.peers[0], self.fleet.server)
        return time.perf_counter() - begin, bound - bind

    async def change(self) -> float:
        """Seconds from trusting one new peer to its first answered call."""
        newcomer = self.fleet.newcomer()
        begin = time.perf_counter()
        self.peers.trust(newcomer.thumbprint, newcomer.certificate_pem)
        await _first_call(self.port, newcomer, self.fleet.server)
        return time.perf_counter() - begin

    def own_share(self) -> float:
        """Seconds Cuttle spends on a change before gRPC core's build: trust() and hand-over."""
        fetch = _BundleFetcher(self.peers)
        fetch()
        newcomer = self.fleet.newcomer()
        begin = time.perf_counter()
        self.peers.trust(newcomer.thumbprint, newcomer.certificate_pem)
        if fetch() is None:
            raise RuntimeError("a change was not handed over")
        return time.perf_counter() - begin

    async def stop(self) -> None:
        """Stop the server."""
        if self.server is not None:
            await self.server.stop(None)


async def bare_build(fleet: Fleet, n: int) -> tuple[float, float]:
    """Seconds from building plain server credentials of n roots to the first answered call;
    and add_secure_port alone."""
    bundle = b"".join(p.certificate_pem for p in fleet.peers[:n])
    server = _server()
    try:
        begin = time.perf_counter()
        credentials = grpc.ssl_server_credentials(
            [(fleet.server.key_pem, fleet.server.certificate_pem)],
            root_certificates=bundle,
            require_client_auth=True,
        )
        bind = time.perf_counter()
        port = server.add_secure_port("127.0.0.1:0", credentials)
        bound = time.perf_counter()
        await server.start()
        await _first_call(port, fleet.peers[0], fleet.server)
        return time.perf_counter() - begin, bound - bind
    finally:
        await server.stop(None)


async def _alternating(
    kinds: dict[str, Callable[[], Awaitable[float]]], repeats: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in kinds}
    order = list(kinds)
    for index in range(repeats):
        shift = index % len(order)
        for name in order[shift:] + order[:shift]:
            samples[name].append(await kinds[name]())
    return samples


async def measure(fleet: Fleet, n: int, repeats: int) -> dict[str, float]:
    """Print and return the figures for one size of the trusted set."""
    bare_starts: list[tuple[float, float]] = []
    cuttle_starts: list[tuple[float, float]] = []
    sides: list[CuttleSide] = []

    async def bare_once() -> float:
        bare_starts.append(await bare_build(fleet, n))
        return bare_starts[-1][0]

    async def start_once() -> float:
        sides.append(CuttleSide(fleet, n))
        cuttle_starts.append(await sides[-1].start())
        return cuttle_starts[-1][0]

    try:
        await _alternating({"bare": bare_once, "start": start_once}, repeats)
        side = sides[-1]
        changes = await _alternating({"change": side.change, "bare": bare_once}, repeats)
        own = statistics.median(side.own_share() for _ in range(repeats))
    finally:
        for started in sides:
            await started.stop()
    bare = statistics.median(b[0] for b in bare_starts)
    change = statistics.median(changes["change"])
    start = statistics.median(s[0] for s in cuttle_starts)
    compare("change: trust one, its first call", change, bare, "s", 3)
    compare("start-up to the first call", start, bare, "s", 3)
    compare(
        "event loop held by add_secure_port",
        statistics.median(s[1] for s in cuttle_starts),
        statistics.median(b[1] for b in bare_starts),
        "s",
        3,
    )
    print(f"  Cuttle's own share of a change (trust + hand-over): {own * 1e3:.2f} ms")
    return {"change": change, "bare": bare, "start": start, "own": own}


async def run(args: argparse.Namespace) -> int:
    """Measure every size, print the figures and the summary line."""
    sizes = sorted(args.sizes)
    began = time.perf_counter()
    fleet = Fleet(sizes[-1], newcomers=len(sizes) * 3 * args.repeats)
    print(
        f"{sizes[-1]:,} Tentacle certificates made in {time.perf_counter() - began:.1f}s; "
        f"{args.repeats} repeats per figure, median shown",
        flush=True,
    )
    figures: dict[int, dict[str, float]] = {}
    for n in sizes:
        benchlib.heading(f"{n:,} trusted certificates")
        figures[n] = await measure(fleet, n, args.repeats)

    small, large = figures[sizes[0]], figures[sizes[-1]]
    scale = sizes[-1] / sizes[0]
    growth = {key: large[key] / small[key] for key in ("change", "bare", "own")}
    ratios = {n: benchlib.ratio(f["change"], f["bare"]) for n, f in figures.items()}
    at_size = ratios[sizes[-1]]
    benchlib.heading(f"growth from {sizes[0]:,} to {sizes[-1]:,} certificates (linear: {scale:g}x)")
    print(
        f"  change x{growth['change']:.1f}, bare x{growth['bare']:.1f}, "
        f"Cuttle's own share x{growth['own']:.1f}"
    )
    each = ", ".join(f"{n}: {r:.2f}" for n, r in ratios.items())
    print()
    print(
        f"SUMMARY trust_bundle change_ratio={at_size:.2f} (goal <={GOAL}; by size {each}) "
        f"change_{sizes[-1]}={large['change']:.2f}s bare_{sizes[-1]}={large['bare']:.2f}s "
        f"growth x{growth['change']:.1f} (bare x{growth['bare']:.1f}, linear x{scale:g}) "
        f"own_{sizes[-1]}={large['own'] * 1e3:.2f}ms own_growth x{growth['own']:.1f} "
        f"goal_met={'yes' if at_size <= GOAL else 'no'}",
        flush=True,
    )
    return 0


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1000, 2500, 5000],
        help="trusted-set sizes, comma-separated",
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [100, 250, 500], 1
    benchlib.run_main(lambda: run(args))


if __name__ == "__main__":
    main()
