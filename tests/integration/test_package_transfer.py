"""Package acquisition (issue 16): the server puts feed packages into real Tentacles' caches.

The server half is the product's `acquire` over the product's comms (the harness's
ServerComms, as in test_tentacle_client_contract.py); the agent is a real `tentacle` process,
listening and polling, reached through a TCP proxy the tests can cut. The deploy_package step
that will call `acquire` is not built yet, so the tests call it directly with a package file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import json
import multiprocessing
import random
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cuttle.protocol.v1 import tentacle_pb2 as pb
from cuttle.server.comms.client import TentacleClient
from cuttle.server.engine.package_acquisition import (
    AcquisitionOutcome,
    PackageAcquisitionFailed,
    acquire,
)
from cuttle.server.packages.feed import StoredPackage
from cuttle.server.store.packages import PackageRecord
from tests.integration.harness.clients import Link, tentacle_link

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHUNK = 256 * 1024


@pytest.fixture(scope="module", params=["listening", "polling"])
def link(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Link]:
    """A real Tentacle of each comms style behind a cuttable proxy."""
    style: str = request.param
    with tentacle_link(tmp_path_factory.mktemp(style), style, proxy=True) as linked:
        yield linked


def make_zip(path: Path, files: int, file_size: int, changed: set[int], seed: int = 7) -> None:
    """A zip of `files` deflated files of random bytes; those in `changed` get other bytes."""
    rng = random.Random(seed)  # noqa: S311 - test data, not a secret
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for number in range(files):
            content = rng.randbytes(file_size)
            if number in changed:
                content = random.Random(-number).randbytes(file_size)  # noqa: S311
            info = zipfile.ZipInfo(f"app/file-{number:05d}.bin", date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)


def stored(path: Path, package_id: str, version: str) -> StoredPackage:
    """The feed's view of a package file (what FeedPackages.open_sha256 returns)."""
    data = path.read_bytes()
    record = PackageRecord(
        id=f"{package_id}-{version}",
        space_id="Spaces-1",
        package_id=package_id,
        package_key=package_id.lower(),
        version=version,
        version_key=version,
        format="zip",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        pushed_by="test",
        pushed_ms=0,
    )
    return StoredPackage(record, path)


def run_acquire(
    link: Link, package: StoredPackage, client: TentacleClient | None = None, **options: Any
) -> tuple[AcquisitionOutcome, list[str]]:
    """`acquire` on the comms loop; returns the outcome and the lines it logged."""
    lines: list[str] = []

    async def log(line: str) -> None:
        lines.append(line)

    outcome = link.run(acquire(client or link.client, package, log, **options), timeout=150)
    return outcome, lines


def cached_file(link: Link, sha256: str) -> Path:
    """Where the Tentacle's cache keeps a package."""
    return link.tentacle.home / "files" / "packages" / sha256


def cache_index(link: Link) -> dict[str, Any]:
    """The Tentacle's cache index by SHA-256."""
    index = json.loads((link.tentacle.home / "files" / "packages" / "index.json").read_text())
    return {entry["sha256"]: entry for entry in index["packages"]}


class FaultyTransport:
    """Wraps the client's transport: runs `on_chunk(index, payload)` before each chunk is sent.

    It can cut the proxy (a real dropped connection) or change the chunk's bytes on the way.
    """

    def __init__(self, inner: Any, on_chunk: Any) -> None:
        self.inner = inner
        self.machine = inner.machine
        self.on_chunk = on_chunk
        self.chunks_sent: list[int] = []

    async def unary(self, method: str, payload: bytes, timeout: float | None) -> bytes:  # noqa: ASYNC109
        if method == "SendPackageChunk":
            request = pb.PackageChunkRequest.FromString(payload)
            self.chunks_sent.append(request.index)
            payload = self.on_chunk(request) or payload
        result: bytes = await self.inner.unary(method, payload, timeout)
        return result

    def stream(self, method: str, payload: bytes) -> Any:
        return self.inner.stream(method, payload)

    async def close(self) -> None:
        """The wrapped transport belongs to the link."""


def test_full_then_found_in_cache_then_a_byte_identical_delta(link: Link, tmp_path: Path) -> None:
    v1, v2 = tmp_path / "web.1.0.0.zip", tmp_path / "web.1.0.1.zip"
    make_zip(v1, files=200, file_size=20_000, changed=set())
    make_zip(v2, files=200, file_size=20_000, changed={17, 140})  # 1% of the files
    first = stored(v1, "web", "1.0.0")
    outcome, lines = run_acquire(link, first)
    assert (outcome.method, outcome.bytes_sent) == ("full", first.record.size)
    assert lines[-1].startswith(f"web 1.0.0: full {first.record.size} bytes sent to")
    assert hashlib.sha256(cached_file(link, first.record.sha256).read_bytes()).hexdigest() == (
        first.record.sha256
    )

    again, lines = run_acquire(link, first)
    assert (again.method, again.bytes_sent) == ("cached", 0)
    assert lines == [f"web 1.0.0: found in cache on {link.client.machine}"]

    second = stored(v2, "web", "1.0.1")
    assert link.proxy is not None
    before = link.proxy.forwarded
    outcome, lines = run_acquire(link, second)
    on_wire = link.proxy.forwarded - before
    assert outcome.method == "delta", lines
    assert outcome.bytes_sent < second.record.size // 10, outcome
    assert on_wire < second.record.size // 5, on_wire  # TLS and framing included
    assert "has web 1.0.0; building a delta against it" in lines[0]
    assert hashlib.sha256(cached_file(link, second.record.sha256).read_bytes()).hexdigest() == (
        second.record.sha256
    )
    assert cached_file(link, second.record.sha256).read_bytes() == v2.read_bytes()
    assert cache_index(link)[second.record.sha256]["version"] == "1.0.1"


def test_a_connection_killed_mid_transfer_resumes(link: Link, tmp_path: Path) -> None:
    path = tmp_path / "api.2.0.0.zip"
    path.write_bytes(random.Random(3).randbytes(24 * CHUNK))  # noqa: S311
    package = stored(path, "api", "2.0.0")
    proxy = link.proxy
    assert proxy is not None

    def cut_at_ten(request: pb.PackageChunkRequest) -> None:
        if request.index == 10 and proxy.cuts == 0 and proxy.cut_at is None:
            # Half of chunk 10 reaches the Tentacle, then the connection resets.
            proxy.cut_at = proxy.forwarded + CHUNK // 2

    faulty = FaultyTransport(link.client.transport, cut_at_ten)
    outcome, lines = run_acquire(link, package, TentacleClient(faulty), chunk_size=CHUNK)
    assert outcome.method == "full"
    assert proxy.cuts == 1
    assert any("lost at chunk" in line for line in lines), lines
    assert any("resuming at chunk" in line for line in lines), lines
    # Resumed, not restarted: only the chunk cut in half went twice.
    assert faulty.chunks_sent == [*range(11), *range(10, 24)]
    assert cached_file(link, package.record.sha256).read_bytes() == path.read_bytes()


def test_a_corrupted_chunk_is_detected_and_resent(link: Link, tmp_path: Path) -> None:
    path = tmp_path / "worker.3.0.0.zip"
    path.write_bytes(random.Random(4).randbytes(6 * CHUNK))  # noqa: S311
    package = stored(path, "worker", "3.0.0")
    corrupted: list[int] = []

    def flip_chunk_three(request: pb.PackageChunkRequest) -> bytes | None:
        if request.index != 3 or corrupted:
            return None
        corrupted.append(3)
        request.data = bytes([request.data[0] ^ 0xFF]) + request.data[1:]
        return request.SerializeToString()

    faulty = FaultyTransport(link.client.transport, flip_chunk_three)
    outcome, lines = run_acquire(link, package, TentacleClient(faulty), chunk_size=CHUNK)
    assert outcome.method == "full"
    assert any("chunk 3 arrived corrupt" in line for line in lines), lines
    assert faulty.chunks_sent == [0, 1, 2, 3, 3, 4, 5]
    assert cached_file(link, package.record.sha256).read_bytes() == path.read_bytes()


def test_no_room_on_the_tentacle_is_a_clear_error_and_the_cache_stays_whole(
    tmp_path: Path,
) -> None:
    # Everything on the disk must stay free: any transfer would fill it.
    settings = {"package_cache_min_free_bytes": 2**62}
    with tentacle_link(tmp_path / "full", "listening", settings=settings) as link:
        path = tmp_path / "big.1.0.0.zip"
        path.write_bytes(random.Random(5).randbytes(CHUNK))  # noqa: S311
        package = stored(path, "big", "1.0.0")
        with pytest.raises(PackageAcquisitionFailed, match="disk full") as caught:
            run_acquire(link, package)
        assert caught.value.kind == "disk_full"
        assert "not enough disk space" in str(caught.value)
        packages = link.tentacle.home / "files" / "packages"
        assert list((packages / "incoming").iterdir()) == []
        assert not (packages / package.record.sha256).exists()
        assert link.run(link.client.get_info()).version  # still healthy


def test_tar_gz_is_sent_as_a_delta_or_in_full_byte_identical(link: Link, tmp_path: Path) -> None:
    # Compressed tarballs delta badly (a change early in the stream shifts all after it);
    # whatever acquire picks, the result is the exact bytes.
    def tarball(path: Path, marker: bytes) -> None:
        with tarfile.open(path, "w:gz") as archive:
            for number in range(20):
                data = random.Random(number).randbytes(30_000)  # noqa: S311
                if number == 10:
                    data = marker + data
                info = tarfile.TarInfo(f"app/{number}.bin")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

    v1, v2 = tmp_path / "cli.1.0.0.tar.gz", tmp_path / "cli.1.1.0.tar.gz"
    tarball(v1, b"one")
    tarball(v2, b"two")
    run_acquire(link, stored(v1, "cli", "1.0.0"))
    second = stored(v2, "cli", "1.1.0")
    outcome, lines = run_acquire(link, second)
    assert outcome.method in ("delta", "full"), lines
    assert cached_file(link, second.record.sha256).read_bytes() == v2.read_bytes()


def test_a_delta_that_rebuilds_wrong_bytes_falls_back_to_the_full_file(
    link: Link, tmp_path: Path
) -> None:
    v1, v2 = tmp_path / "jobs.1.0.0.zip", tmp_path / "jobs.1.0.1.zip"
    make_zip(v1, files=40, file_size=20_000, changed=set(), seed=11)
    make_zip(v2, files=40, file_size=20_000, changed={5}, seed=11)
    run_acquire(link, stored(v1, "jobs", "1.0.0"))

    def tamper_with_delta(request: pb.PackageChunkRequest) -> bytes | None:
        if request.transfer_id.endswith("-full"):
            return None
        # Consistent with its own SHA-256, so only the whole file's hash can catch it.
        request.data = request.data[:-1] + bytes([request.data[-1] ^ 0x01])
        request.sha256 = hashlib.sha256(request.data).hexdigest()
        return request.SerializeToString()

    faulty = FaultyTransport(link.client.transport, tamper_with_delta)
    second = stored(v2, "jobs", "1.0.1")
    # The delta is built in another process here, as a server may choose to (CPU-bound work).
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        outcome, lines = run_acquire(link, second, TentacleClient(faulty), executor=pool)
    assert outcome.method == "full", lines
    assert "the machine refused the rebuilt file" in outcome.fallback_reason
    assert any("sending the full file instead" in line for line in lines), lines
    assert cached_file(link, second.record.sha256).read_bytes() == v2.read_bytes()
    assert not list((link.tentacle.home / "files" / "packages" / "incoming").iterdir())


def test_a_tentacle_restarted_mid_transfer_gets_the_whole_package_again(
    link: Link, tmp_path: Path
) -> None:
    path = tmp_path / "batch.4.0.0.zip"
    path.write_bytes(random.Random(6).randbytes(24 * CHUNK))  # noqa: S311
    package = stored(path, "batch", "4.0.0")
    killed = threading.Event()

    def kill_at_ten(request: pb.PackageChunkRequest) -> None:
        if request.index == 10 and not killed.is_set():
            assert link.tentacle.process is not None
            link.tentacle.process.kill()  # a crash: what it had received is not trusted
            killed.set()

    faulty = FaultyTransport(link.client.transport, kill_at_ten)
    lines: list[str] = []

    async def log(line: str) -> None:
        lines.append(line)

    running = asyncio.run_coroutine_threadsafe(
        acquire(TentacleClient(faulty), package, log, chunk_size=CHUNK), link.loop.loop
    )
    assert killed.wait(60)
    link.tentacle.start()
    outcome = running.result(120)
    assert outcome.method == "full"
    assert any("lost at chunk 10" in line for line in lines), lines
    assert any("no longer holds the 10 chunks" in line for line in lines), lines
    assert faulty.chunks_sent[-24:] == list(range(24))
    assert cached_file(link, package.record.sha256).read_bytes() == path.read_bytes()
    assert not list((link.tentacle.home / "files" / "packages" / "incoming").iterdir())
