"""The Tentacle's package cache: verified package files by SHA-256 under `<home>/files/packages`.

Layout: `<sha256>` (one file per package content, no extension: the format travels with the
package's file name in the deployment), `index.json` (package id, version, size, added and last
used per hash; written atomically), `incoming/` (transfers in progress, on the same filesystem so
`add` is a rename).

The cache has a size limit: adding a package evicts the least recently used ones that no running
deployment holds (`hold`), so a package being extracted or used as a delta basis is never
removed under its user. A single package larger than the limit is still kept (it is needed now);
the others make way. `ensure_room` checks free disk before a transfer, evicting first.

The index and files agree after a crash: on open, files missing from the index (an interrupted
`add`) are deleted and index entries without a file are dropped.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from cuttle.tentacle.packages.errors import (
    NotEnoughSpace,
    PackageError,
    PackageHashMismatch,
    PackageInUse,
)

log = structlog.get_logger(__name__)

CACHE_FOLDER = Path("files") / "packages"
INDEX_FILE = "index.json"
INCOMING_FOLDER = "incoming"
DEFAULT_MAX_BYTES = 10 * 1024**3
DEFAULT_MIN_FREE_BYTES = 256 * 1024**2  # left free on the disk after a transfer
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class CachedPackage:
    """One package file in the cache."""

    sha256: str
    package_id: str
    version: str
    size: int
    added: float
    last_used: float


def cache_root(home: Path) -> Path:
    """Where a Tentacle home keeps its package cache."""
    return home / CACHE_FOLDER


class PackageCache:
    """Content-addressed package files with an LRU size limit and in-use holds (thread-safe)."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        clock: Callable[[], float] = time.time,
        free_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._free_bytes = free_bytes or (lambda path: shutil.disk_usage(path).free)
        self._lock = threading.RLock()
        self._holds: Counter[str] = Counter()
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._entries = self._load()
        self._reconcile()

    @property
    def incoming(self) -> Path:
        """Folder for transfers in progress (same filesystem as the cache)."""
        return self.root / INCOMING_FOLDER

    def path_of(self, sha256: str) -> Path:
        """Where the package with this hash is (or would be) stored."""
        return self.root / _check_sha256(sha256)

    def has(self, sha256: str) -> bool:
        """Whether the cache holds this exact content."""
        with self._lock:
            return _check_sha256(sha256) in self._entries

    def get(self, sha256: str) -> CachedPackage | None:
        """The cached package with this hash, if any."""
        with self._lock:
            return self._entries.get(_check_sha256(sha256))

    def packages(self) -> list[CachedPackage]:
        """Every cached package, most recently used first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda p: p.last_used, reverse=True)

    def used_bytes(self) -> int:
        """Total size of the cached packages."""
        with self._lock:
            return sum(p.size for p in self._entries.values())

    def add(self, path: Path, package_id: str, version: str, sha256: str) -> CachedPackage:
        """Verify `path` has SHA-256 `sha256` and move it into the cache (evicting to fit)."""
        sha256 = _check_sha256(sha256.lower())
        actual = _sha256_file(path)
        if actual != sha256:
            raise PackageHashMismatch(
                f"{package_id} {version}: {path.name} has SHA-256 {actual}, expected {sha256}; "
                "it was not cached"
            )
        size = path.stat().st_size
        now = self._clock()
        with self._lock:
            existing = self._entries.get(sha256)
            destination = self.root / sha256
            if existing is None:
                try:
                    _move_into(path, destination)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise NotEnoughSpace(
                            f"disk full while caching {package_id} {version} in {self.root}"
                        ) from exc
                    raise
            else:
                path.unlink(missing_ok=True)  # the same bytes are here already
            entry = CachedPackage(
                sha256,
                package_id,
                version,
                size,
                existing.added if existing else now,
                now,
            )
            self._entries[sha256] = entry
            self._evict(keep=sha256, need=0)
            self._save()
        log.info("package_cached", package_id=package_id, version=version, sha256=sha256)
        return entry

    def latest_version_of(self, package_id: str) -> CachedPackage | None:
        """The highest cached version of a package (the basis for a delta), if any."""
        with self._lock:
            candidates = [
                p for p in self._entries.values() if p.package_id.lower() == package_id.lower()
            ]
        if not candidates:
            return None
        return max(candidates, key=lambda p: (version_key(p.version), p.last_used))

    @contextlib.contextmanager
    def hold(self, sha256: str) -> Iterator[CachedPackage]:
        """Mark a package in use (never evicted) for the block, touching its last use."""
        entry = self.pin(sha256)
        try:
            yield entry
        finally:
            self.unpin(sha256)

    def pin(self, sha256: str) -> CachedPackage:
        """Mark a package in use until `unpin`; holds are counted. Raises if it is not cached."""
        sha256 = _check_sha256(sha256)
        with self._lock:
            entry = self._entries.get(sha256)
            if entry is None:
                raise PackageError(f"package {sha256} is not in the cache")
            self._holds[sha256] += 1
            entry = replace(entry, last_used=self._clock())
            self._entries[sha256] = entry
            self._save()
            return entry

    def unpin(self, sha256: str) -> None:
        """Release one hold taken by `pin`."""
        with self._lock:
            self._holds[sha256] -= 1
            if self._holds[sha256] <= 0:
                del self._holds[sha256]

    def in_use(self, sha256: str) -> bool:
        """Whether a running deployment holds this package."""
        with self._lock:
            return self._holds[sha256] > 0

    def remove(self, sha256: str) -> None:
        """Remove one package; refused while it is held."""
        sha256 = _check_sha256(sha256)
        with self._lock:
            if self._holds[sha256] > 0:
                raise PackageInUse(f"package {sha256} is in use by a running deployment")
            if self._entries.pop(sha256, None) is not None:
                (self.root / sha256).unlink(missing_ok=True)
                self._save()

    def clear(self) -> list[CachedPackage]:
        """Remove every package not in use; returns what was removed."""
        with self._lock:
            removed = [p for p in self._entries.values() if self._holds[p.sha256] <= 0]
            for entry in removed:
                self._entries.pop(entry.sha256)
                (self.root / entry.sha256).unlink(missing_ok=True)
            self._save()
        return removed

    def ensure_room(self, size: int) -> None:
        """Make sure `size` more bytes fit (limit and free disk), evicting; else NotEnoughSpace."""
        with self._lock:
            evicted = self._evict(keep=None, need=size)
            if evicted:
                self._save()
            free = self._free_bytes(self.root)
            if free - size < self.min_free_bytes:
                raise NotEnoughSpace(
                    f"not enough disk space for a {size}-byte package in {self.root}: {free} "
                    f"bytes free, {self.min_free_bytes} must stay free"
                    + (f" (after evicting {len(evicted)} cached packages)" if evicted else "")
                )

    # -- internals ---------------------------------------------------------------------------

    def _evict(self, *, keep: str | None, need: int) -> list[CachedPackage]:
        """Remove least recently used, unheld packages until `need` more bytes fit."""
        used = sum(p.size for p in self._entries.values())
        free = self._free_bytes(self.root) if need else None
        evicted: list[CachedPackage] = []
        for entry in sorted(self._entries.values(), key=lambda p: p.last_used):
            over_limit = used + need > self.max_bytes
            short_of_disk = free is not None and free - need < self.min_free_bytes
            if not (over_limit or short_of_disk):
                break
            if entry.sha256 == keep or self._holds[entry.sha256] > 0:
                continue
            self._entries.pop(entry.sha256)
            (self.root / entry.sha256).unlink(missing_ok=True)
            used -= entry.size
            if free is not None:
                free += entry.size
            evicted.append(entry)
            log.info("package_evicted", package_id=entry.package_id, version=entry.version)
        return evicted

    def _load(self) -> dict[str, CachedPackage]:
        return read_index(self.root)

    def _reconcile(self) -> None:
        changed = False
        for sha256, entry in list(self._entries.items()):
            try:
                size = (self.root / sha256).stat().st_size
            except FileNotFoundError:
                size = -1
            if size != entry.size:
                self._entries.pop(sha256)
                (self.root / sha256).unlink(missing_ok=True)
                changed = True
        for child in self.root.iterdir():
            if _SHA256.match(child.name) and child.name not in self._entries:
                child.unlink(missing_ok=True)  # an add interrupted before the index said so
        for child in self.incoming.iterdir():
            if child.is_file():
                child.unlink(missing_ok=True)  # a transfer from before a restart restarts
        if changed:
            self._save()

    def _save(self) -> None:
        document = {"packages": [asdict(p) for p in self._entries.values()]}
        data = json.dumps(document, indent=1, sort_keys=True).encode()
        try:
            with tempfile.NamedTemporaryFile(
                dir=self.root, prefix=".index-", suffix=".tmp", delete=False
            ) as handle:
                try:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                except BaseException:
                    os.unlink(handle.name)
                    raise
            os.replace(handle.name, self.root / INDEX_FILE)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NotEnoughSpace(
                    f"disk full while writing the package cache index in {self.root}"
                ) from exc
            raise


def read_index(root: Path) -> dict[str, CachedPackage]:
    """The cache's index as last written, by SHA-256, touching no file.

    Safe beside a running Tentacle, unlike opening a PackageCache, which tidies the folder.
    """
    path = root / INDEX_FILE
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("package_index_unreadable", path=str(path), error=str(exc))
        return {}
    entries: dict[str, CachedPackage] = {}
    for item in document.get("packages", []) if isinstance(document, dict) else []:
        try:
            entry = CachedPackage(**item)
            entries[_check_sha256(entry.sha256)] = entry
        except (TypeError, PackageError):
            log.warning("package_index_entry_skipped", path=str(path), entry=repr(item))
    return entries


def version_key(version: str) -> tuple[Any, ...]:
    """Order SemVer 2 and NuGet 4-part versions: numbers numerically, pre-releases first."""
    core, _, _metadata = version.partition("+")
    release, dash, prerelease = core.partition("-")
    numbers: list[int] = []
    for part in release.split("."):
        numbers.append(int(part) if part.isdigit() else -1)
    numbers += [0] * (4 - len(numbers))
    # A release sorts after its pre-releases; identifiers compare numbers below text.
    tags: tuple[tuple[int, int, str], ...] = tuple(
        (0, int(tag), "") if tag.isdigit() else (1, 0, tag.lower()) for tag in prerelease.split(".")
    )
    return (tuple(numbers), 0 if dash else 1, tags)


def _check_sha256(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise PackageError(f"{sha256!r} is not a SHA-256 in lowercase hex")
    return sha256


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(_READ_SIZE):
            digest.update(piece)
    return digest.hexdigest()


def _move_into(source: Path, destination: Path) -> None:
    """Rename into the cache; across filesystems copy to a temporary name first."""
    try:
        os.replace(source, destination)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temporary = destination.with_name(f".{destination.name}.copying")
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    source.unlink()
