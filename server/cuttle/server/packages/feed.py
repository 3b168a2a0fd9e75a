"""The built-in package feed: push, list, open, delete and prune, over the store and the files.

What the rest of the server uses:
- `push(...)` takes the bytes as an async iterator of chunks: streamed to a temporary file,
  hashed as they come, verified against what the client declared, then made visible in one
  transaction. A push that fails or is cut off leaves no row and no file.
- `open(space, package_id, version)` / `open_sha256(sha256)` give a stored package to stream
  out (deployments: the transfer to Tentacles reads `StoredPackage.path` in chunks).
- A version some release recorded is never replaced, deleted or pruned: a release deploys
  exactly the bytes it recorded.
Every push, replace, delete and prune is an audit event in the transaction that makes it.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog
from sqlalchemy.orm import Session

from cuttle.server.domain import package_files as pf
from cuttle.server.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServerError,
)
from cuttle.server.packages.blobs import BlobStore, Upload, is_sha256
from cuttle.server.store import documents as doc_store
from cuttle.server.store import events
from cuttle.server.store import packages as package_store
from cuttle.server.store.packages import PackageRecord
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

# Left in tmp/ this long, a file belongs to no push or removal still running (a day).
STALE_TEMP_SECONDS = 86400.0
# Kept free on the package root beyond a push's size, so the push cannot fill the disk.
FREE_MARGIN_BYTES = 64 * 1024 * 1024


class DiskFull(ServerError):
    """The package root has no room for the push; nothing was stored."""

    kind = "disk_full"


@dataclass(frozen=True, slots=True)
class PushHeader:
    """What a push says about the file before its bytes (a declared size is checked)."""

    space: str
    file_name: str
    package_id: str = ""
    version: str = ""
    size: int = -1
    replace: bool = False


@dataclass(frozen=True, slots=True)
class PushEnd:
    """The last item of a push: the SHA-256 the sender computed over what it sent."""

    sha256: str


@dataclass(frozen=True, slots=True)
class PushResult:
    """The stored version, and whether it replaced earlier bytes or was already identical."""

    record: PackageRecord
    replaced: bool
    stored_new_file: bool


@dataclass(frozen=True, slots=True)
class StoredPackage:
    """A package version and where its bytes are."""

    record: PackageRecord
    path: Path

    def open(self) -> BinaryIO:
        """Open the bytes for reading (blocking)."""
        return self.path.open("rb")

    async def chunks(self, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The bytes in chunks, each read on a worker thread."""
        handle = await asyncio.to_thread(self.open)
        try:
            while True:
                data = await asyncio.to_thread(handle.read, chunk_size)
                if not data:
                    return
                yield data
        finally:
            handle.close()


@dataclass(frozen=True, slots=True)
class PruneResult:
    """Versions pruned (or that would be, on a dry run) and the bytes their files held."""

    removed: tuple[PackageRecord, ...]
    kept_referenced: int
    freed_bytes: int


class PackageFeed:
    """The built-in feed of every space, on one package root."""

    def __init__(self, tx: Transactions, root: Path) -> None:
        self._tx = tx
        self.blobs = BlobStore(root)

    async def start(self) -> None:
        """Make the root and clear what a crashed node left behind."""
        await asyncio.to_thread(self.blobs.prepare)
        swept = await asyncio.to_thread(self.blobs.sweep, STALE_TEMP_SECONDS)
        if swept:
            log.info("package_temp_files_swept", count=swept)

    # -- push --------------------------------------------------------------------------------

    async def push(
        self, header: PushHeader, chunks: AsyncIterator[bytes | PushEnd], actor: str
    ) -> PushResult:
        """Store a pushed package; see the module docstring for what is checked and when.

        chunks yields the bytes, then one PushEnd; a stream that ends without it was cut short.
        """
        name = pf.package_name(header.file_name, header.package_id, header.version)
        # Refuse before any byte is read: a duplicate of a 200 MiB file fails at once.
        await self._tx.read(lambda s: self._check_push(s, header, name))
        if header.size >= 0:
            await asyncio.to_thread(self._check_room, header.size)
        upload = await asyncio.to_thread(self.blobs.begin)
        linked = False
        sha256 = ""
        try:
            end: PushEnd | None = None
            async for chunk in chunks:
                if end is not None:
                    raise InvalidArgument(f"{header.file_name}: bytes arrived after the trailer")
                if isinstance(chunk, PushEnd):
                    end = chunk
                    continue
                if header.size >= 0 and upload.size + len(chunk) > header.size:
                    raise InvalidArgument(
                        f"{header.file_name}: more bytes arrived than the {header.size} declared"
                    )
                await asyncio.to_thread(upload.write, chunk)
            if end is None:
                raise InvalidArgument(
                    f"{header.file_name}: the push ended after {upload.size} bytes without its "
                    "trailer (cut short); nothing was stored"
                )
            sha256 = await asyncio.to_thread(upload.finish)
            self._verify(header, upload, sha256, end.sha256)
            linked = await asyncio.to_thread(self.blobs.link, upload, sha256)
            size = upload.size

            def commit(session: Session) -> tuple[PackageRecord, str | None]:
                return self._commit_push(session, header, name, sha256, size, actor)

            record, previous = await self._tx.run(commit)
            # A removal may have retired the file between our link and our commit.
            if not await asyncio.to_thread(self.blobs.exists, sha256):
                await asyncio.to_thread(self.blobs.link, upload, sha256)
        except BaseException:
            if linked:
                await self._remove_unreferenced(sha256)
            raise
        finally:
            upload.discard()
        if previous is not None and previous != sha256:
            await self._remove_unreferenced(previous)
        log.info(
            "package_pushed",
            package_id=record.package_id,
            version=record.version,
            sha256=sha256,
            size=record.size,
            replaced=previous is not None,
        )
        return PushResult(record, previous is not None, linked)

    def _check_push(
        self, session: Session, header: PushHeader, name: pf.PackageName, *, lock: bool = False
    ) -> PackageRecord | None:
        space = doc_store.get_space(session, header.space or doc_store.DEFAULT_SPACE)
        existing = package_store.find(session, space.id, name.key, name.version_key, lock=lock)
        if existing is None:
            return None
        shown = f"{existing.package_id} {existing.version}"
        if not header.replace:
            raise Conflict(pf.already_in_feed(shown, existing.sha256))
        users = package_store.users_of(session, space.id, name.key, name.version_key)
        if users:
            raise FailedPrecondition(
                f"package {shown} cannot be replaced: {users} recorded it and deploy "
                "exactly the bytes they recorded; push a new version instead"
            )
        return existing

    def _commit_push(
        self,
        session: Session,
        header: PushHeader,
        name: pf.PackageName,
        sha256: str,
        size: int,
        actor: str,
    ) -> tuple[PackageRecord, str | None]:
        space = doc_store.get_space(session, header.space or doc_store.DEFAULT_SPACE)
        existing = self._check_push(session, header, name, lock=True)
        if existing is None:
            record = package_store.add(
                session,
                space_id=space.id,
                package_id=name.package_id,
                package_key=name.key,
                version=str(name.version),
                version_key=name.version_key,
                format=name.format,
                size=size,
                sha256=sha256,
                pushed_by=actor,
            )
            category, verb = "pushed", "Pushed"
        else:
            record = package_store.replace(
                session,
                existing.id,
                package_id=name.package_id,
                version=str(name.version),
                format=name.format,
                size=size,
                sha256=sha256,
                pushed_by=actor,
            )
            category, verb = "replaced", "Replaced"
        _audit(
            session,
            record,
            actor,
            category,
            verb,
            {"format": record.format}
            | ({"previous_sha256": existing.sha256} if existing is not None else {}),
        )
        return record, None if existing is None else existing.sha256

    def _check_room(self, size: int) -> None:
        free = shutil.disk_usage(self.blobs.root).free
        if size + FREE_MARGIN_BYTES > free:
            raise DiskFull(
                f"the package root {self.blobs.root} has {free} bytes free, not enough for a "
                f"{size}-byte package; nothing was stored"
            )

    @staticmethod
    def _verify(header: PushHeader, upload: Upload, sha256: str, declared: str) -> None:
        if header.size >= 0 and upload.size != header.size:
            raise InvalidArgument(
                f"{header.file_name}: {upload.size} bytes arrived, not the {header.size} "
                "declared (the push was cut short?); nothing was stored"
            )
        if not is_sha256(declared):
            raise InvalidArgument(
                f"{header.file_name}: the trailer's sha256 {declared!r} is not a lower-case "
                "hex SHA-256; nothing was stored"
            )
        if declared != sha256:
            raise InvalidArgument(
                f"{header.file_name}: the bytes received have SHA-256 {sha256}, not the "
                f"{declared} the sender computed (corrupted in transit?); nothing was stored"
            )

    # -- read --------------------------------------------------------------------------------

    async def list(self, space: str, package_id: str = "") -> list[PackageRecord]:
        """A space's versions (of one package), by id then newest version first."""

        def work(session: Session) -> list[PackageRecord]:
            space_record = doc_store.get_space(session, space or doc_store.DEFAULT_SPACE)
            key = pf.package_key(package_id) if package_id else ""
            return package_store.list_versions(session, space_record.id, key)

        return _newest_first(await self._tx.read(work))

    async def open(self, space: str, package_id: str, version: str) -> StoredPackage:
        """A stored version by id and version; NotFound naming them."""
        parsed = pf.check_version(version)

        def work(session: Session) -> PackageRecord | None:
            space_record = doc_store.get_space(session, space or doc_store.DEFAULT_SPACE)
            return package_store.find(
                session, space_record.id, pf.package_key(package_id), pf.version_key(parsed)
            )

        record = await self._tx.read(work)
        if record is None:
            raise NotFound(f"package {package_id} {version} is not in the feed")
        return await self._stored(record)

    async def open_sha256(self, sha256: str) -> StoredPackage:
        """A stored version by its SHA-256 (what a release recorded)."""
        record = await self._tx.read(lambda s: package_store.by_sha256(s, sha256))
        if record is None:
            raise NotFound(f"no package in the feed has SHA-256 {sha256}")
        return await self._stored(record)

    async def _stored(self, record: PackageRecord) -> StoredPackage:
        path = self.blobs.path_of(record.sha256)
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(
                f"package {record.package_id} {record.version}: its file {path} is missing "
                "from the package root (is package_root the same on every server node?)"
            )
        return StoredPackage(record, path)

    # -- delete and prune --------------------------------------------------------------------

    async def delete(self, space: str, package_id: str, version: str, actor: str) -> PackageRecord:
        """Delete one version, unless a release recorded it (the refusal names them)."""
        parsed = pf.check_version(version)

        def work(session: Session) -> PackageRecord:
            space_record = doc_store.get_space(session, space or doc_store.DEFAULT_SPACE)
            key, vkey = pf.package_key(package_id), pf.version_key(parsed)
            record = package_store.find(session, space_record.id, key, vkey, lock=True)
            if record is None:
                raise NotFound(f"package {package_id} {version} is not in the feed")
            users = package_store.users_of(session, space_record.id, key, vkey)
            if users:
                raise FailedPrecondition(
                    f"package {record.package_id} {record.version} is used by {users}; "
                    "delete those first"
                )
            package_store.remove(session, record.id)
            _audit(session, record, actor, "deleted", "Deleted")
            return record

        record = await self._tx.run(work)
        await self._remove_unreferenced(record.sha256)
        log.info("package_deleted", package_id=record.package_id, version=record.version)
        return record

    async def prune(self, space: str, actor: str, *, dry_run: bool) -> PruneResult:
        """Remove every version no release or runbook snapshot recorded (dry run: say which)."""

        def work(session: Session) -> PruneResult:
            space_record = doc_store.get_space(session, space or doc_store.DEFAULT_SPACE)
            used = package_store.referenced(session, space_record.id)
            every = package_store.list_versions(session, space_record.id)
            unused = [r for r in every if (r.package_key, r.version_key) not in used]
            removed: list[PackageRecord] = []
            for candidate in unused:
                if dry_run:
                    removed.append(candidate)
                    continue
                # Locked and checked again: a release made meanwhile may have recorded it.
                record = package_store.find(
                    session,
                    space_record.id,
                    candidate.package_key,
                    candidate.version_key,
                    lock=True,
                )
                if record is None or package_store.users_of(
                    session, space_record.id, record.package_key, record.version_key
                ):
                    continue
                package_store.remove(session, record.id)
                _audit(session, record, actor, "pruned", "Pruned")
                removed.append(record)
            freed = sum({r.sha256: r.size for r in removed}.values())
            return PruneResult(tuple(removed), len(every) - len(unused), freed)

        result = await self._tx.read(work) if dry_run else await self._tx.run(work)
        if not dry_run:
            for sha256 in {r.sha256 for r in result.removed}:
                await self._remove_unreferenced(sha256)
            log.info("packages_pruned", count=len(result.removed), freed=result.freed_bytes)
        return result

    async def _remove_unreferenced(self, sha256: str) -> None:
        """Remove a file no row names; put it back if a push named it meanwhile."""

        def count(session: Session) -> int:
            return package_store.count_sha256(session, sha256)

        if await self._tx.read(count):
            return
        aside = await asyncio.to_thread(self.blobs.retire, sha256)
        if aside is None:
            return
        if await self._tx.read(count):
            await asyncio.to_thread(self.blobs.restore, aside, sha256)
            return
        await asyncio.to_thread(aside.unlink, missing_ok=True)


def _newest_first(records: list[PackageRecord]) -> list[PackageRecord]:
    """By package id, and within one package newest version first."""
    by_version = sorted(records, key=lambda r: pf.check_version(r.version).sort_key(), reverse=True)
    return sorted(by_version, key=lambda r: r.package_key)


def _audit(
    session: Session,
    record: PackageRecord,
    actor: str,
    category: str,
    verb: str,
    extra: dict[str, str] | None = None,
) -> None:
    """One audit event per push, replace, delete or prune of a package version."""
    events.record(
        session,
        space_id=record.space_id,
        actor=actor,
        category=category,
        kind="package",
        document_id=record.id,
        document_name=f"{record.package_id} {record.version}",
        message=f"{verb} package {record.package_id} {record.version}",
        details={
            "package_id": record.package_id,
            "version": record.version,
            "sha256": record.sha256,
            "size": record.size,
            **(extra or {}),
        },
    )
