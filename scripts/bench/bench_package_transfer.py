"""Benchmark: a package to one Tentacle in full, then its next version as a delta (issue 16).

The server half is the product's `acquire` (server/cuttle/server/engine/package_acquisition.py)
over the product's comms in this process; the Tentacle is a real `tentacle` process, listening
or polling, over mTLS on loopback, through a counting TCP proxy (bytes on the wire, TLS
included). Package: a .zip of N deflated files of random bytes (200 MiB by default, the size
issue 16 names); the next version changes 1% of the files. The same is measured for a .tar.gz
(which deltas badly: a change shifts the compressed stream after it).

Goal (issue 16): the delta of a 1%-changed .zip is at most 3% of the package. Printed per
format: the delta's bytes (what `acquire` sent) and what crossed the wire (the signature going
up and TLS included) as shares of the package, and the delta's time against the full
transfer's time in the same run (the whole `acquire` call each time: for the delta that
includes the Tentacle signing its cached version, the server building the delta, the Tentacle
rebuilding the file and verifying it).

Its figures are shares against the full transfer in the same run, which need no bare side. The
full transfer's speed against a bare gRPC stream is bench_package_throughput.py.

Run: .venv/bin/python scripts/bench/bench_package_transfer.py [--mib 200]
     [--styles listening,polling]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FILE_SIZE = 20 * 1024
# Bounds each acquire (a 200 MiB delta takes seconds; a hang must not hold the machine).
ACQUIRE_TIMEOUT = 300.0


def _content(number: int, version: int, changed: set[int]) -> bytes:
    seed = number if number not in changed else -number - version * 1_000_000
    return random.Random(seed).randbytes(FILE_SIZE)  # noqa: S311 - test data


def make_zip(path: Path, files: int, version: int, changed: set[int]) -> None:
    """A zip of deflated files; `changed` ones differ in `version`."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for number in range(files):
            info = zipfile.ZipInfo(f"app/f{number:05d}.bin", date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, _content(number, version, changed), zipfile.ZIP_DEFLATED)


def make_tar_gz(path: Path, files: int, version: int, changed: set[int]) -> None:
    """The same files as a .tar.gz."""
    with tarfile.open(path, "w:gz") as archive:
        for number in range(files):
            data = _content(number, version, changed)
            info = tarfile.TarInfo(f"app/f{number:05d}.bin")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def main() -> None:
    """Run the measurements and print them."""
    from cuttle.server.engine.package_acquisition import acquire
    from cuttle.server.packages.feed import StoredPackage
    from cuttle.server.store.packages import PackageRecord
    from tests.integration.harness.clients import tentacle_link

    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--styles", default="listening,polling")
    args = parser.parse_args()
    files = args.mib * 1024 * 1024 // FILE_SIZE
    changed = set(random.Random(1).sample(range(files), max(1, files // 100)))  # noqa: S311

    def stored(path: Path, package_id: str, version: str) -> StoredPackage:
        record = PackageRecord(
            id=f"{package_id}-{version}",
            space_id="Spaces-1",
            package_id=package_id,
            package_key=package_id,
            version=version,
            version_key=version,
            format=path.suffix,
            size=path.stat().st_size,
            sha256=_sha256(path),
            pushed_by="bench",
            pushed_ms=0,
        )
        return StoredPackage(record, path)

    async def quiet(_line: str) -> None:
        return None

    from cuttle.protocol.logconfig import configure_logging

    shares: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-package-") as work:
        root = Path(work)
        log = (root / "server.log").open("a", buffering=1)
        configure_logging("info", stream=log)
        packages = {}
        for kind, make in (("zip", make_zip), ("tar.gz", make_tar_gz)):
            v1, v2 = root / f"web.1.0.0.{kind}", root / f"web.1.0.1.{kind}"
            make(v1, files, 1, changed)
            make(v2, files, 2, changed)
            packages[kind] = (v1, v2)
        print(
            f"package: {files} files of {FILE_SIZE // 1024} KiB, {len(changed)} changed "
            f"({len(changed) / files:.1%})",
            flush=True,
        )
        for style in args.styles.split(","):
            for kind, (v1, v2) in packages.items():
                times: list[float] = []
                with tentacle_link(root / f"{style}-{kind}", style, proxy=True) as link:
                    proxy = link.proxy
                    assert proxy is not None
                    for path, version in ((v1, "1.0.0"), (v2, "1.0.1")):
                        package = stored(path, "web", version)
                        before = proxy.forwarded
                        started = time.monotonic()
                        outcome = link.run(
                            acquire(link.client, package, quiet), timeout=ACQUIRE_TIMEOUT
                        )
                        seconds = time.monotonic() - started
                        times.append(seconds)
                        wire = proxy.forwarded - before
                        cached = link.tentacle.home / "files" / "packages" / package.record.sha256
                        if _sha256(cached) != package.record.sha256:
                            raise RuntimeError(f"{cached} is not {path.name}")
                        print(
                            f"{style:<9} {kind:<6} {version}  {outcome.method:<5} size "
                            f"{package.record.size / 2**20:7.2f} MiB  sent "
                            f"{outcome.bytes_sent / 2**20:7.2f} MiB "
                            f"({outcome.bytes_sent / package.record.size:6.1%})  on the wire "
                            f"{wire / 2**20:7.2f} MiB ({wire / package.record.size:6.1%})  "
                            f"{seconds:6.2f} s",
                            flush=True,
                        )
                    size = package.record.size
                    if outcome.method != "delta":
                        shares.setdefault(style, []).append(f"{kind} no delta ({outcome.method})")
                        continue
                    print(
                        f"{style:<9} {kind:<6} delta time / full time {times[1] / times[0]:5.2f}x",
                        flush=True,
                    )
                    shares.setdefault(style, []).append(
                        f"{kind} {outcome.bytes_sent / size:.1%} sent ({wire / size:.1%} on the "
                        f"wire) in {times[1] / times[0]:.2f}x the full time"
                    )
        log.close()
    print(
        f"\nsummary: {args.mib} MiB, 1% of the files changed: "
        + "; ".join(f"{style}: {', '.join(parts)}" for style, parts in shares.items())
        + " (goal for .zip <= 3% sent)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(4 * 1024 * 1024):
            digest.update(piece)
    return digest.hexdigest()


if __name__ == "__main__":
    main()
