"""Putting a package from the feed into one Tentacle's cache: found, delta, or full.

`acquire` asks the Tentacle whether it holds the package's SHA-256 ("found in cache": nothing
is sent). If not, and it holds an earlier version of the same package, the server fetches that
version's signature, builds the delta on a worker thread (CPU-bound) into a spool file, and sends
only that; the Tentacle rebuilds the file and verifies its SHA-256. On any delta or hash problem
the full file is sent instead, and the log says why. Either way the bytes travel in chunks,
each with its SHA-256 (a corrupt chunk is refused and sent again), and a dropped connection
resumes from the chunk the Tentacle asks for. Memory stays bounded: the package is read in
chunks (the one being sent and the next, read and hashed while the Tentacle stores the first),
and the delta goes through a file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TypeVar

import structlog

from cuttle.protocol import delta
from cuttle.protocol.backoff import Backoff
from cuttle.server.comms.client import CHUNK_BYTES, TentacleClient
from cuttle.server.domain.package_transfer import TransferBegin
from cuttle.server.errors import AgentError, AgentRejected, NotDelivered, ServerError, Unreachable
from cuttle.server.packages.feed import StoredPackage

log = structlog.get_logger(__name__)

T = TypeVar("T")

PackageLog = Callable[[str], Awaitable[None]]
"""Writes one line to the task log of the step acquiring the package."""

# How often a dropped connection is resumed, and a refused chunk sent again, before giving up.
MAX_RESUMES = 10
MAX_CHUNK_RESENDS = 5
# A signature larger than this is refused (about 44 bytes per block of at least 8 KiB: this is
# the signature of a package far larger than any feed holds).
MAX_SIGNATURE_BYTES = 64 * 1024 * 1024


class PackageAcquisitionFailed(ServerError):
    """The package could not be put into the machine's cache; the message says why."""

    def __init__(self, message: str, kind: str = "failed_precondition") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class AcquisitionOutcome:
    """How the package reached the machine and what it cost."""

    machine: str
    package_id: str
    version: str
    method: Literal["cached", "delta", "full"]
    bytes_sent: int
    package_size: int
    seconds: float
    fallback_reason: str = ""

    def summary(self) -> str:
        """One line for the task log."""
        name = f"{self.package_id} {self.version}"
        if self.method == "cached":
            return f"{name}: found in cache on {self.machine}"
        if self.method == "delta":
            return (
                f"{name}: delta of {self.bytes_sent} bytes of {self.package_size} sent to "
                f"{self.machine} in {self.seconds:.1f}s"
            )
        return (
            f"{name}: full {self.package_size} bytes sent to {self.machine} in {self.seconds:.1f}s"
        )


async def acquire(
    client: TentacleClient,
    package: StoredPackage,
    package_log: PackageLog,
    *,
    executor: concurrent.futures.Executor | None = None,
    spool_dir: Path | None = None,
    chunk_size: int = CHUNK_BYTES,
    retry_backoff: Backoff | None = None,
) -> AcquisitionOutcome:
    """Make sure the machine's package cache holds `package` (see the module docstring)."""
    record = package.record
    started = time.monotonic()
    name = f"{record.package_id} {record.version}"
    sender = _Sender(client, package_log, retry_backoff or Backoff(initial=0.2, maximum=5.0))

    def outcome(
        method: Literal["cached", "delta", "full"], sent: int, why: str = ""
    ) -> AcquisitionOutcome:
        return AcquisitionOutcome(
            client.machine,
            record.package_id,
            record.version,
            method,
            sent,
            record.size,
            time.monotonic() - started,
            why,
        )

    lookup = await sender.retrying(lambda: client.find_package(record.sha256, record.package_id))
    if lookup.cached:
        result = outcome("cached", 0)
        await package_log(result.summary())
        return result
    fallback = ""
    if lookup.basis_sha256:
        await package_log(
            f"{name}: {client.machine} has {record.package_id} {lookup.basis_version}; "
            "building a delta against it"
        )
        try:
            sent = await _send_delta(
                sender, package, lookup.basis_sha256, executor, spool_dir, chunk_size
            )
        except _FallBack as exc:
            fallback = str(exc)
            await package_log(f"{name}: {fallback}; sending the full file instead")
        else:
            result = outcome("delta", sent)
            await package_log(result.summary())
            return result
    sent = await _send_full(sender, package, chunk_size)
    result = outcome("full", sent, fallback)
    await package_log(result.summary())
    log.info(
        "package_acquired",
        machine=client.machine,
        package_id=record.package_id,
        version=record.version,
        method=result.method,
        bytes_sent=sent,
    )
    return result


class _FallBack(Exception):
    """The delta cannot be used; the message says why."""


async def _send_delta(
    sender: _Sender,
    package: StoredPackage,
    basis_sha256: str,
    executor: concurrent.futures.Executor | None,
    spool_dir: Path | None,
    chunk_size: int,
) -> int:
    record = package.record
    client = sender.client
    try:
        raw = await sender.retrying(
            lambda: client.package_signature(basis_sha256, MAX_SIGNATURE_BYTES)
        )
        signature = delta.Signature.from_bytes(raw)
    except delta.DeltaError as exc:
        raise _FallBack(f"the signature of the cached version is unusable: {exc}") from exc
    except AgentRejected as exc:
        raise _FallBack(f"the cached version cannot be signed: {exc}") from exc
    loop = asyncio.get_running_loop()
    spool = await asyncio.to_thread(
        # Closed in the finally below (it spans awaits, so no with-block on this thread).
        lambda: tempfile.NamedTemporaryFile(mode="w+b", dir=spool_dir, prefix="delta-")  # noqa: SIM115
    )
    try:
        try:
            ends = await loop.run_in_executor(
                executor, write_delta, raw, package.path, spool.name, chunk_size
            )
        except (delta.DeltaError, OSError) as exc:
            raise _FallBack(f"the delta could not be built: {exc}") from exc
        total = ends[-1] if ends else 0
        if total >= record.size:
            raise _FallBack(f"the delta ({total} bytes) is no smaller than the file")
        begin = TransferBegin(
            sha256=record.sha256,
            package_id=record.package_id,
            version=record.version,
            size=record.size,
            transfer_size=total,
            basis_sha256=basis_sha256,
            block_size=signature.block_size,
        )
        starts = [0, *ends[:-1]]
        failure = await sender.send(
            begin,
            len(ends),
            lambda index: _read_at(spool, starts[index], ends[index] - starts[index]),
        )
    except AgentRejected as exc:
        raise _FallBack(str(exc)) from exc
    except PackageAcquisitionFailed as exc:
        if exc.kind != "disk_full":
            raise
        # The delta and the rebuilt file side by side need more room than the file alone.
        raise _FallBack(str(exc)) from exc
    finally:
        await asyncio.to_thread(spool.close)
    if failure:
        raise _FallBack(f"the machine refused the rebuilt file: {failure}")
    return total


def write_delta(signature: bytes, package: Path, spool: str, chunk_size: int) -> list[int]:
    """Encode the delta of `package` against a signature into the file `spool` (overwritten).

    Returns where each wire chunk ends. Takes and returns plain values so that a process pool
    can run it: building a delta is CPU-bound, and a thread would hold the event loop's GIL.
    """
    ends: list[int] = []
    at = 0
    parsed = delta.Signature.from_bytes(signature)
    with package.open("rb") as new, open(spool, "wb") as out:
        for chunk in delta.encode_ops(delta.delta(parsed, new), chunk_size):
            out.write(chunk)
            at += len(chunk)
            ends.append(at)
    return ends


async def _send_full(sender: _Sender, package: StoredPackage, chunk_size: int) -> int:
    record = package.record
    begin = TransferBegin(
        sha256=record.sha256,
        package_id=record.package_id,
        version=record.version,
        size=record.size,
        transfer_size=record.size,
    )
    count = max(1, -(-record.size // chunk_size))
    handle = await asyncio.to_thread(package.open)
    try:
        for attempt in (1, 2):
            failure = await sender.send(
                begin, count, lambda index: _read_at(handle, index * chunk_size, chunk_size)
            )
            if not failure:
                return record.size
            await sender.package_log(
                f"{record.package_id} {record.version}: {sender.client.machine} refused the "
                f"file ({failure})" + ("; sending it again" if attempt == 1 else "")
            )
    finally:
        await asyncio.to_thread(handle.close)
    raise PackageAcquisitionFailed(
        f"{record.package_id} {record.version} could not be put on {sender.client.machine}: "
        f"{failure}"
    )


@dataclass(frozen=True, slots=True)
class _Chunk:
    data: bytes
    sha256: str


def _read_chunk(fd: int, offset: int, length: int) -> _Chunk:
    data = os.pread(fd, length, offset)
    # Hashed here, off the event loop: hashlib lets go of the GIL for data this large.
    return _Chunk(data, hashlib.sha256(data).hexdigest())


async def _read_at(handle: IO[bytes], offset: int, length: int) -> _Chunk:
    return await asyncio.to_thread(_read_chunk, handle.fileno(), offset, length)


class _ReadAhead:
    """Reads (and hashes) chunk i+1 while chunk i is on its way and being stored.

    The transfer is one chunk at a time, so without this the server's reading and hashing and
    the Tentacle's storing take turns. When the Tentacle asks for another chunk than the one
    read ahead (a refused chunk, a resume), that one is dropped and the wanted one read.
    """

    def __init__(self, read: Callable[[int], Awaitable[_Chunk]], count: int) -> None:
        self._read = read
        self._count = count
        self._ahead: tuple[int, asyncio.Future[_Chunk]] | None = None

    async def take(self, index: int) -> _Chunk:
        """Chunk `index`, then start reading the one after it."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == index:
            chunk = await ahead[1]  # an error reading it is raised here, as a read's would be
        else:
            if ahead is not None:
                await _settled(ahead[1])
            chunk = await self._read(index)
        if index + 1 < self._count:
            self._ahead = (index + 1, asyncio.ensure_future(self._read(index + 1)))
        return chunk

    async def close(self) -> None:
        """Wait out the read in progress: the caller closes the file after this."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            await _settled(ahead[1])


async def _settled(future: asyncio.Future[_Chunk]) -> None:
    # Awaited, not cancelled: cancelling would not stop the worker thread's read, and the file
    # may be closed as soon as this returns. The chunk (or the error) is not wanted.
    with contextlib.suppress(OSError):
        await future


class _Sender:
    """Sends one transfer's chunks, resuming after lost connections and resending refusals."""

    def __init__(self, client: TentacleClient, package_log: PackageLog, backoff: Backoff) -> None:
        self.client = client
        self.package_log = package_log
        self._backoff = backoff

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """A call retried while the connection is down (idempotent lookups only)."""
        for attempt in range(MAX_RESUMES + 1):
            try:
                return await call()
            except (Unreachable, NotDelivered) as exc:
                if attempt == MAX_RESUMES:
                    raise
                await self._lost(exc)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def send(
        self, begin: TransferBegin, count: int, read: Callable[[int], Awaitable[_Chunk]]
    ) -> str:
        """All chunks, then the commit; returns the Tentacle's reason for refusing, or ""."""
        chunks = _ReadAhead(read, count)
        try:
            return await self._send(begin, count, chunks)
        finally:
            await chunks.close()

    async def _send(self, begin: TransferBegin, count: int, chunks: _ReadAhead) -> str:
        resumes = 0
        resends = 0
        index = 0
        while True:
            try:
                state = await self.client.begin_package_transfer(begin)
                if state.next_chunk == 0 and index > 0:
                    await self.package_log(
                        f"{begin.package_id} {begin.version}: {self.client.machine} no longer "
                        f"holds the {index} chunks it had received (restarted?): starting over"
                    )
                elif state.next_chunk:
                    await self.package_log(
                        f"{begin.package_id} {begin.version}: resuming at chunk "
                        f"{state.next_chunk} of {count} ({state.received_bytes} bytes were "
                        "already received)"
                    )
                index = state.next_chunk
                while index < count:
                    chunk = await chunks.take(index)
                    state = await self.client.send_package_chunk(
                        state.transfer_id, index, chunk.data, chunk.sha256
                    )
                    if state.rejected:
                        resends += 1
                        if resends > MAX_CHUNK_RESENDS:
                            raise PackageAcquisitionFailed(
                                f"{self.client.machine} refused {resends} chunks of "
                                f"{begin.package_id} {begin.version}; the last: {state.rejected}"
                            )
                        await self.package_log(
                            f"{begin.package_id} {begin.version}: {state.rejected}"
                        )
                    index = state.next_chunk
                return await self.client.commit_package_transfer(state.transfer_id)
            except (Unreachable, NotDelivered) as exc:
                resumes += 1
                if resumes > MAX_RESUMES:
                    raise
                await self._lost(exc, index)
            except AgentRejected as exc:
                if exc.kind == "disk_full":
                    raise PackageAcquisitionFailed(
                        f"{begin.package_id} {begin.version} cannot be put on "
                        f"{self.client.machine}: disk full: {exc}",
                        kind="disk_full",
                    ) from exc
                if exc.kind != "failed_precondition" or begin.basis_sha256:
                    raise
                # The transfer was dropped on the agent (it restarted, or another acquisition
                # of the same package finished it): done if it is cached now, else begin again.
                resumes += 1
                if resumes > MAX_RESUMES:
                    raise
                await self.package_log(f"{begin.package_id} {begin.version}: {exc}")
                lookup = await self.client.find_package(begin.sha256, begin.package_id)
                if lookup.cached:
                    return ""

    async def _lost(self, exc: AgentError, index: int | None = None) -> None:
        where = f" at chunk {index}" if index is not None else ""
        await self.package_log(f"connection to {self.client.machine} lost{where} ({exc}); resuming")
        await asyncio.sleep(self._backoff.next_delay())
