"""Benchmark: a package to one Tentacle in full, then its next version as a delta (issue 16).

The server half is the product's `acquire` (server/cuttle/server/engine/package_acquisition.py)
over the product's comms in this process; the Tentacle is a real `tentacle` process, listening
or polling, over mTLS on loopback, through a counting TCP proxy (bytes on the wire, TLS
included). Package: a .zip of N deflated files of random bytes (~50 MiB by default); the next
version changes 1% of the files. The same is measured for a .tar.gz (which deltas badly: a
change shifts the compressed stream after it).

Goal (issue 16): the delta of a 1%-changed .zip is at most 3% of the package.

Its figure is a share of bytes (delta against full, same run), which needs no bare side. It has
no bare baseline for speed yet: the throughput goal of issue 16 (a 200 MiB package against a
bare gRPC stream of the same bytes in the same chunks over the same mTLS loopback) is still to
be written, so the times it prints are for reading, not for a ratio.

Run: .venv/bin/python scripts/bench/bench_package_transfer.py [--mib 50]
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
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--styles", default="listening,polling")
    args = parser.parse_args()
    files = args.mib * 1024 * 1024 // FILE_SIZE
    changed = set(random.Random(1).sample(range(files), max(1, files // 100)))  # noqa: S311

    def stored(path: Path, package_id: str, version: str) -> StoredPackage:
        data = path.read_bytes()
        record = PackageRecord(
            id=f"{package_id}-{version}",
            space_id="Spaces-1",
            package_id=package_id,
            package_key=package_id,
            version=version,
            version_key=version,
            format=path.suffix,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            pushed_by="bench",
            pushed_ms=0,
        )
        return StoredPackage(record, path)

    async def quiet(_line: str) -> None:
        return None

    with tempfile.TemporaryDirectory(prefix="bench-package-") as work:
        root = Path(work)
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
                with tentacle_link(root / f"{style}-{kind}", style, proxy=True) as link:
                    proxy = link.proxy
                    assert proxy is not None
                    for path, version in ((v1, "1.0.0"), (v2, "1.0.1")):
                        package = stored(path, "web", version)
                        before = proxy.forwarded
                        started = time.monotonic()
                        outcome = link.run(acquire(link.client, package, quiet), timeout=600)
                        seconds = time.monotonic() - started
                        wire = proxy.forwarded - before
                        cached = link.tentacle.home / "files" / "packages" / package.record.sha256
                        same = cached.read_bytes() == path.read_bytes()
                        print(
                            f"{style:<9} {kind:<6} {version}  {outcome.method:<5} size "
                            f"{package.record.size / 2**20:7.2f} MiB  sent "
                            f"{outcome.bytes_sent / 2**20:7.2f} MiB "
                            f"({outcome.bytes_sent / package.record.size:6.1%})  on the wire "
                            f"{wire / 2**20:7.2f} MiB  {seconds:6.2f} s  identical={same}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
