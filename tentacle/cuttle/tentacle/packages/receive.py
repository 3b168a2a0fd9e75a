"""Packages arriving from the server: cache lookups, delta signatures, resumable transfers.

The server asks `find` first: the exact content may be cached already, or an earlier version of
the same package may be, whose signature (`signature_chunk`) lets the server send only a delta.
Then `begin` opens a transfer (full file or encoded delta ops) after checking the cache has room,
`chunk` receives chunks by index, each checked against its own SHA-256 before it is written,
and `commit` rebuilds the file (delta) and verifies the whole file's SHA-256 before it enters the
cache. Nothing unverified is ever in the cache.

A transfer is named by what it produces (`<sha256>-full` or `<sha256>-<basis sha256>`), so when
the connection drops the server begins the same transfer again and is told from which chunk to
go on. Transfers live in memory and in `incoming/`, which the cache empties on start: after a
Tentacle restart a transfer starts over (the file on disk cannot be trusted to match what the
lost process had acknowledged).

Every method blocks (disk, hashing): the handlers call them on a worker thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from cuttle.protocol import delta
from cuttle.tentacle.errors import BadRequest
from cuttle.tentacle.packages.cache import CachedPackage, PackageCache
from cuttle.tentacle.packages.errors import NotEnoughSpace, PackageError, PackageHashMismatch

log = structlog.get_logger(__name__)

# Largest chunk accepted; the server sends chunks of at least delta.CHUNK_SIZE (256 KiB).
MAX_CHUNK_BYTES = 4 * 1024 * 1024
# Transfers left open by a server that gave up are dropped, oldest first, past this many.
MAX_OPEN_TRANSFERS = 16
# Signatures kept in memory between FindPackage and the GetPackageSignature calls that follow.
SIGNATURES_KEPT = 4


class TransferNotOpen(PackageError):
    """A chunk or commit names a transfer this Tentacle does not hold (restarted, or dropped)."""

    kind = "failed_precondition"


class BasisNotCached(PackageError):
    """The delta's basis is not (or no longer) in the cache: the server sends the full file."""

    kind = "failed_precondition"


@dataclass(frozen=True)
class Lookup:
    """What `find` answers: cached, or the best delta basis and its signature's size."""

    cached: bool
    basis: CachedPackage | None = None
    signature_size: int = 0


@dataclass(frozen=True)
class TransferState:
    """Where a transfer stands: the next chunk to send, and why the last was refused, if it was."""

    transfer_id: str
    next_chunk: int
    received_bytes: int
    rejected: str = ""


@dataclass
class _Transfer:
    transfer_id: str
    sha256: str
    package_id: str
    version: str
    size: int
    basis_sha256: str
    transfer_size: int
    block_size: int
    part: Path
    ends: list[int] = field(default_factory=list)  # byte offset after each chunk held
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def received(self) -> int:
        return self.ends[-1] if self.ends else 0

    def state(self, rejected: str = "") -> TransferState:
        return TransferState(self.transfer_id, len(self.ends), self.received, rejected)

    def same_request(self, other: _Transfer) -> bool:
        return (self.size, self.transfer_size, self.block_size, self.package_id) == (
            other.size,
            other.transfer_size,
            other.block_size,
            other.package_id,
        )


class PackageReceiver:
    """The Tentacle's side of package acquisition, over one PackageCache (thread-safe)."""

    def __init__(self, cache: PackageCache) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._transfers: OrderedDict[str, _Transfer] = OrderedDict()
        self._signatures: OrderedDict[str, bytes] = OrderedDict()

    # -- lookups -----------------------------------------------------------------------------

    def find(self, sha256: str, package_id: str) -> Lookup:
        """Whether `sha256` is cached (touching its last use); else the best delta basis."""
        sha256 = _sha256_argument(sha256, "sha256")
        if self.cache.has(sha256):
            try:
                with self.cache.hold(sha256):
                    return Lookup(cached=True)
            except PackageError:
                pass  # evicted between the two calls: not cached after all
        basis = self.cache.latest_version_of(package_id) if package_id else None
        if basis is None:
            return Lookup(cached=False)
        try:
            signature = self._signature(basis.sha256)
        except BasisNotCached:
            return Lookup(cached=False)
        return Lookup(cached=False, basis=basis, signature_size=len(signature))

    def signature_chunk(self, basis_sha256: str, offset: int, length: int) -> tuple[bytes, int]:
        """One piece of a cached package's delta signature: (data, total size)."""
        signature = self._signature(_sha256_argument(basis_sha256, "basis_sha256"))
        if offset > len(signature):
            raise BadRequest(
                f"offset {offset} is past the end of the signature ({len(signature)} bytes)"
            )
        length = min(length or MAX_CHUNK_BYTES, MAX_CHUNK_BYTES)
        return signature[offset : offset + length], len(signature)

    def _signature(self, basis_sha256: str) -> bytes:
        with self._lock:
            cached = self._signatures.get(basis_sha256)
            if cached is not None:
                self._signatures.move_to_end(basis_sha256)
                return cached
        try:
            with self.cache.hold(basis_sha256):
                signature = delta.signature_of_file(self.cache.path_of(basis_sha256)).to_bytes()
        except PackageError as exc:
            raise BasisNotCached(f"package {basis_sha256} is not in the cache") from exc
        with self._lock:
            self._signatures[basis_sha256] = signature
            while len(self._signatures) > SIGNATURES_KEPT:
                self._signatures.popitem(last=False)
        return signature

    # -- transfers ---------------------------------------------------------------------------

    def begin(
        self,
        *,
        sha256: str,
        package_id: str,
        version: str,
        size: int,
        basis_sha256: str = "",
        transfer_size: int,
        block_size: int = 0,
    ) -> TransferState:
        """Open a transfer, or find the open one with the same name (resume); checks room."""
        sha256 = _sha256_argument(sha256, "sha256")
        if not package_id:
            raise BadRequest("a package transfer needs the package id")
        if basis_sha256:
            basis_sha256 = _sha256_argument(basis_sha256, "basis_sha256")
            if not self.cache.has(basis_sha256):
                raise BasisNotCached(f"the delta basis {basis_sha256} is not in the cache")
            if not delta.MIN_BLOCK_SIZE <= block_size <= delta.MAX_BLOCK_SIZE:
                raise BadRequest(
                    f"block size {block_size} is outside {delta.MIN_BLOCK_SIZE}.."
                    f"{delta.MAX_BLOCK_SIZE}"
                )
        elif transfer_size != size:
            raise BadRequest(
                f"a full transfer sends the file: transfer_size {transfer_size} != size {size}"
            )
        transfer_id = f"{sha256}-{basis_sha256 or 'full'}"
        wanted = _Transfer(
            transfer_id,
            sha256,
            package_id,
            version,
            size,
            basis_sha256,
            transfer_size,
            block_size,
            self.cache.incoming / f"{transfer_id}.part",
        )
        with self._lock:
            existing = self._transfers.get(transfer_id)
            if existing is not None and existing.same_request(wanted):
                self._transfers.move_to_end(transfer_id)
                return existing.state()
        if existing is not None:
            self._discard(existing)
        # The delta's ops and the rebuilt file are both on disk until the commit ends.
        self.cache.ensure_room(size + (transfer_size if basis_sha256 else 0))
        _create_empty(wanted.part)
        with self._lock:
            self._transfers[transfer_id] = wanted
            stale = list(self._transfers.values())[:-MAX_OPEN_TRANSFERS]
        for transfer in stale:
            self._discard(transfer)
        log.info(
            "package_transfer_begun",
            package_id=package_id,
            version=version,
            delta=bool(basis_sha256),
            bytes=transfer_size,
        )
        return wanted.state()

    def chunk(self, transfer_id: str, index: int, data: bytes, sha256: str) -> TransferState:
        """Take chunk `index` if it is the next one and intact; say what to send next."""
        transfer = self._open(transfer_id)
        if len(data) > MAX_CHUNK_BYTES:
            raise BadRequest(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK_BYTES}")
        with transfer.lock:
            if index < len(transfer.ends):
                return transfer.state()  # a chunk resent after its answer was lost
            if index > len(transfer.ends):
                return transfer.state(
                    f"chunk {index} is out of order: send chunk {len(transfer.ends)}"
                )
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha256.lower():
                log.warning("package_chunk_corrupt", transfer=transfer_id, index=index)
                return transfer.state(
                    f"chunk {index} arrived corrupt (SHA-256 {actual}, expected {sha256}): "
                    "send it again"
                )
            if transfer.received + len(data) > transfer.transfer_size:
                raise BadRequest(
                    f"chunk {index} runs past the announced {transfer.transfer_size} bytes"
                )
            _write_at(transfer.part, transfer.received, data)
            transfer.ends.append(transfer.received + len(data))
            return transfer.state()

    def commit(self, transfer_id: str) -> str:
        """Verify (and for a delta rebuild) the file and cache it; returns why not, or ""."""
        transfer = self._open(transfer_id)
        with transfer.lock:
            try:
                return self._commit(transfer)
            finally:
                self._discard(transfer)

    def open_transfers(self) -> list[TransferState]:
        """The transfers in progress (for tests and diagnostics)."""
        with self._lock:
            return [t.state() for t in self._transfers.values()]

    def _commit(self, transfer: _Transfer) -> str:
        if transfer.received != transfer.transfer_size:
            return (
                f"the transfer is truncated: {transfer.received} of {transfer.transfer_size} "
                "bytes arrived"
            )
        if not transfer.basis_sha256:
            try:
                self.cache.add(
                    transfer.part, transfer.package_id, transfer.version, transfer.sha256
                )
            except PackageHashMismatch as exc:
                return str(exc)
            return ""
        rebuilt = transfer.part.with_suffix(".rebuilt")
        try:
            with self.cache.hold(transfer.basis_sha256):
                delta.patch_file(
                    self.cache.path_of(transfer.basis_sha256),
                    delta.decode_ops(_chunks_of(transfer)),
                    rebuilt,
                    transfer.block_size,
                    transfer.sha256,
                )
        except PackageError:
            return f"the delta basis {transfer.basis_sha256} is no longer in the cache"
        except delta.DeltaError as exc:
            return f"the delta did not rebuild {transfer.package_id} {transfer.version}: {exc}"
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NotEnoughSpace(
                    f"disk full while rebuilding {transfer.package_id} {transfer.version} in "
                    f"{self.cache.incoming}"
                ) from exc
            raise
        try:
            self.cache.add(rebuilt, transfer.package_id, transfer.version, transfer.sha256)
        finally:
            rebuilt.unlink(missing_ok=True)
        return ""

    def _open(self, transfer_id: str) -> _Transfer:
        with self._lock:
            transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise TransferNotOpen(
                f"no package transfer {transfer_id} is open here (the Tentacle restarted or "
                "dropped it): begin it again"
            )
        return transfer

    def _discard(self, transfer: _Transfer) -> None:
        with self._lock:
            if self._transfers.get(transfer.transfer_id) is transfer:
                del self._transfers[transfer.transfer_id]
        transfer.part.unlink(missing_ok=True)


def _chunks_of(transfer: _Transfer) -> Iterator[bytes]:
    """The received chunks as they were sent: each holds whole delta ops."""
    with transfer.part.open("rb") as handle:
        start = 0
        for end in transfer.ends:
            yield handle.read(end - start)
            start = end


def _create_empty(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NotEnoughSpace(f"disk full: cannot create {path}") from exc
        raise


def _write_at(path: Path, offset: int, data: bytes) -> None:
    """Write a chunk at its offset and cut anything after it (a half write before a crash)."""
    try:
        with path.open("r+b") as handle:
            handle.seek(offset)
            handle.write(data)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
    except FileNotFoundError:
        raise TransferNotOpen(f"{path.name} vanished: begin the transfer again") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NotEnoughSpace(f"disk full while receiving into {path}") from exc
        raise


def _sha256_argument(value: str, name: str) -> str:
    lowered = value.lower()
    if len(lowered) != 64 or any(c not in "0123456789abcdef" for c in lowered):
        raise BadRequest(f"{name} {value!r} is not a SHA-256 in hex")
    return lowered
