"""The built-in feed's metadata: package versions per space, and the versions releases (and
runbook snapshots) recorded.

Ids and versions are looked up by their keys (domain/package_files.py: case-insensitive ids,
canonical versions); the bytes live in a content-addressed file named by `sha256`
(packages/blobs.py), and the rows naming a SHA-256 are that file's reference count.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cuttle.server.store.errors import Conflict, NotFound
from cuttle.server.store.models import (
    Document,
    Package,
    Release,
    ReleasePackage,
    RunbookSnapshot,
    RunbookSnapshotPackage,
)
from cuttle.server.store.records import now_ms


@dataclass(frozen=True, slots=True)
class PackageRecord:
    """One version of a package in a space's feed."""

    id: str
    space_id: str
    package_id: str
    package_key: str
    version: str
    version_key: str
    format: str
    size: int
    sha256: str
    pushed_by: str
    pushed_ms: int


@dataclass(frozen=True, slots=True)
class RecordedPackage:
    """A package version a release recorded."""

    package_id: str
    package_key: str
    version: str
    version_key: str
    sha256: str


def _record(row: Package) -> PackageRecord:
    return PackageRecord(
        id=row.id,
        space_id=row.space_id,
        package_id=row.package_id,
        package_key=row.package_key,
        version=row.version,
        version_key=row.version_key,
        format=row.format,
        size=row.size,
        sha256=row.sha256,
        pushed_by=row.pushed_by,
        pushed_ms=row.pushed_ms,
    )


def find(
    session: Session, space_id: str, package_key: str, version_key: str, *, lock: bool = False
) -> PackageRecord | None:
    """The version of a package in a space, or None; lock holds off other writers of the row."""
    query = select(Package).where(
        Package.space_id == space_id,
        Package.package_key == package_key,
        Package.version_key == version_key,
    )
    row = session.scalars(query.with_for_update() if lock else query).first()
    return None if row is None else _record(row)


def get(session: Session, space_id: str, package_key: str, version_key: str) -> PackageRecord:
    """The version of a package in a space, or NotFound."""
    found = find(session, space_id, package_key, version_key)
    if found is None:
        raise NotFound("package", f"{package_key} {version_key}")
    return found


def by_sha256(session: Session, sha256: str) -> PackageRecord | None:
    """Any version whose bytes have this SHA-256 (content is shared across spaces)."""
    row = session.scalars(select(Package).where(Package.sha256 == sha256).limit(1)).first()
    return None if row is None else _record(row)


def add(
    session: Session,
    *,
    space_id: str,
    package_id: str,
    package_key: str,
    version: str,
    version_key: str,
    format: str,
    size: int,
    sha256: str,
    pushed_by: str,
) -> PackageRecord:
    """Store a new version; Conflict when the space's feed already has it."""
    if find(session, space_id, package_key, version_key) is not None:
        raise Conflict(f"package {package_id} {version} already exists")
    row = Package(
        id=uuid.uuid4().hex,
        space_id=space_id,
        package_id=package_id,
        package_key=package_key,
        version=version,
        version_key=version_key,
        format=format,
        size=size,
        sha256=sha256,
        pushed_by=pushed_by,
        pushed_ms=now_ms(),
    )
    session.add(row)
    session.flush()
    return _record(row)


def replace(
    session: Session,
    record_id: str,
    *,
    package_id: str,
    version: str,
    format: str,
    size: int,
    sha256: str,
    pushed_by: str,
) -> PackageRecord:
    """Give an existing version new bytes (the caller checked no release recorded it)."""
    row = session.get(Package, record_id, with_for_update=True)
    if row is None:
        raise NotFound("package", record_id)
    row.package_id, row.version, row.format = package_id, version, format
    row.size, row.sha256, row.pushed_by, row.pushed_ms = size, sha256, pushed_by, now_ms()
    session.flush()
    return _record(row)


def remove(session: Session, record_id: str) -> None:
    """Delete a version's row (its file goes when no row names its SHA-256)."""
    session.execute(delete(Package).where(Package.id == record_id))


def list_versions(session: Session, space_id: str, package_key: str = "") -> list[PackageRecord]:
    """A space's package versions (of one package when package_key is given), by id."""
    query = select(Package).where(Package.space_id == space_id)
    if package_key:
        query = query.where(Package.package_key == package_key)
    rows = session.scalars(query.order_by(Package.package_key, Package.pushed_ms)).all()
    return [_record(r) for r in rows]


def versions_of(
    session: Session, space_id: str, package_keys: Iterable[str], *, lock: bool = False
) -> dict[str, list[PackageRecord]]:
    """Every version of each named package, by package key.

    lock (FOR SHARE on PostgreSQL) makes a delete of one of them wait for this transaction,
    whose release may record it: the delete then sees the release and refuses.
    """
    keys = sorted(set(package_keys))
    found: dict[str, list[PackageRecord]] = {k: [] for k in keys}
    if not keys:
        return found
    query = select(Package).where(Package.space_id == space_id, Package.package_key.in_(keys))
    rows = session.scalars(query.with_for_update(read=True) if lock else query).all()
    for row in rows:
        found[row.package_key].append(_record(row))
    return found


def count_in_space(session: Session, space_id: str) -> int:
    """How many package versions a space's feed holds."""
    query = select(func.count()).where(Package.space_id == space_id)
    return int(session.scalar(query) or 0)


def count_sha256(session: Session, sha256: str) -> int:
    """How many versions (in any space) name this SHA-256: the file's reference count."""
    return int(session.scalar(select(func.count()).where(Package.sha256 == sha256)) or 0)


def releases_using(
    session: Session, space_id: str, package_key: str, version_key: str, limit: int = 20
) -> list[str]:
    """'<project> <version>' of the releases that recorded this package version."""
    rows = session.execute(
        select(Document.name, Release.version)
        .select_from(ReleasePackage)
        .join(Release, Release.id == ReleasePackage.release_id)
        .join(Document, Document.id == Release.project_id)
        .where(
            ReleasePackage.space_id == space_id,
            ReleasePackage.package_key == package_key,
            ReleasePackage.version_key == version_key,
        )
        .order_by(Document.name, Release.created_ms)
        .limit(limit)
    ).all()
    return [f"{project} {version}" for project, version in rows]


def snapshots_using(
    session: Session, space_id: str, package_key: str, version_key: str, limit: int = 20
) -> list[str]:
    """'<project> runbook <runbook> (<snapshot>)' of the runbook snapshots that recorded it."""
    rows = session.execute(
        select(Document.name, RunbookSnapshot.runbook, RunbookSnapshot.name)
        .select_from(RunbookSnapshotPackage)
        .join(RunbookSnapshot, RunbookSnapshot.id == RunbookSnapshotPackage.snapshot_id)
        .join(Document, Document.id == RunbookSnapshot.project_id)
        .where(
            RunbookSnapshotPackage.space_id == space_id,
            RunbookSnapshotPackage.package_key == package_key,
            RunbookSnapshotPackage.version_key == version_key,
        )
        .order_by(Document.name, RunbookSnapshot.created_ms)
        .limit(limit)
    ).all()
    return [f"{project} runbook {runbook} ({name})" for project, runbook, name in rows]


def users_of(session: Session, space_id: str, package_key: str, version_key: str) -> str:
    """Who recorded a version, for a refusal ("releases A, B; runbook snapshots C"); or ""."""
    parts = []
    releases = releases_using(session, space_id, package_key, version_key)
    if releases:
        parts.append(f"releases {', '.join(releases)}")
    snapshots = snapshots_using(session, space_id, package_key, version_key)
    if snapshots:
        parts.append(f"runbook snapshots {', '.join(snapshots)}")
    return "; ".join(parts)


def referenced(session: Session, space_id: str) -> set[tuple[str, str]]:
    """(package key, version key) of every version a release or runbook snapshot recorded."""
    used: set[tuple[str, str]] = set()
    for table in (ReleasePackage, RunbookSnapshotPackage):
        rows = session.execute(
            select(table.package_key, table.version_key)
            .where(table.space_id == space_id)
            .distinct()
        ).all()
        used.update((p, v) for p, v in rows)
    return used


def record_for_release(
    session: Session, release_id: str, space_id: str, packages: Iterable[RecordedPackage]
) -> None:
    """Note the package versions a new release recorded (each once)."""
    _add_recorded(session, space_id, packages, lambda: ReleasePackage(release_id=release_id))


def record_for_snapshot(
    session: Session, snapshot_id: str, space_id: str, packages: Iterable[RecordedPackage]
) -> None:
    """Note the package versions a new runbook snapshot recorded (each once)."""
    _add_recorded(
        session, space_id, packages, lambda: RunbookSnapshotPackage(snapshot_id=snapshot_id)
    )


def _add_recorded(
    session: Session,
    space_id: str,
    packages: Iterable[RecordedPackage],
    row: Callable[[], ReleasePackage | RunbookSnapshotPackage],
) -> None:
    seen: set[tuple[str, str]] = set()
    for p in packages:
        if (p.package_key, p.version_key) in seen:
            continue
        seen.add((p.package_key, p.version_key))
        entry = row()
        entry.package_key = p.package_key
        entry.version_key = p.version_key
        entry.space_id = space_id
        entry.package_id = p.package_id
        entry.version = p.version
        entry.sha256 = p.sha256
        session.add(entry)
    session.flush()
