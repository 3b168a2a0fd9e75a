"""Safe extraction of package archives (.zip, .nupkg, .tar, .tar.gz/.tgz, .tar.bz2).

Nothing of an archive lands outside its target, and nothing of a refused archive is left:

- entries are written into a hidden sibling folder, renamed onto the target only when every
  entry succeeded; any failure removes the sibling;
- names are checked before anything is written: absolute paths, drive letters, `..` components
  and NUL bytes are refused, backslashes count as separators (zips made on Windows);
- devices, fifos and unknown entry types are refused; hard links must name a regular file the
  archive already extracted;
- symbolic links are created last, once every file and directory exists, so no entry is ever
  written through a link; then every link is resolved on disk and one that leads outside the
  target is refused (a lexical check alone misses `a -> .` followed by `b -> a/..`);
- the total expanded size, the entry count and, past `ratio_floor` bytes, the expansion ratio
  against the archive's size are limited, checked on the bytes actually written (an archive's
  headers can lie).

A .nupkg is a zip whose packaging files (`[Content_Types].xml`, `_rels/`,
`package/services/metadata/`) are left out, as NuGet and Octopus do; the .nuspec stays.

Modes: tar keeps each file's permission bits without setuid, setgid and sticky; zips made on
Unix keep theirs the same way, others get 0644 (0755 for directories). Directories keep at least
owner rwx while being filled and get their own mode at the end. Files are owned by the
Tentacle's user, or by `owner=(uid, gid)` when the deployment runs scripts as another user.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog

from cuttle.tentacle.packages.errors import (
    ArchiveTooLarge,
    InstallPathExists,
    NotEnoughSpace,
    UnsafeArchive,
    UnsupportedArchive,
)

log = structlog.get_logger(__name__)

_COPY_SIZE = 1024 * 1024
_PERMISSIONS = 0o777  # what is kept of a mode: no setuid, setgid or sticky bit
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# The Open Packaging Conventions files NuGet adds around a package's content; NuGet's own
# extraction leaves them out, and so does Octopus.
_NUPKG_PACKAGING = re.compile(r"^(\[Content_Types\]\.xml|_rels/.*|package/services/metadata/.*)$")


class ArchiveFormat(enum.Enum):
    """The archive formats a package may come in."""

    ZIP = "zip"
    NUPKG = "nupkg"  # a zip whose packaging files (see _NUPKG_PACKAGING) are not extracted
    TAR = "tar"
    TAR_GZ = "tar.gz"
    TAR_BZ2 = "tar.bz2"


_SUFFIXES: tuple[tuple[str, ArchiveFormat], ...] = (
    (".zip", ArchiveFormat.ZIP),
    (".nupkg", ArchiveFormat.NUPKG),
    (".tar.gz", ArchiveFormat.TAR_GZ),
    (".tgz", ArchiveFormat.TAR_GZ),
    (".tar.bz2", ArchiveFormat.TAR_BZ2),
    (".tbz2", ArchiveFormat.TAR_BZ2),
    (".tar", ArchiveFormat.TAR),
)


@dataclass(frozen=True)
class ExtractionLimits:
    """How far an archive may expand before it is refused as a bomb (all settings)."""

    max_total_bytes: int = 10 * 1024**3
    max_entries: int = 1_000_000
    max_ratio: float = 200.0  # expanded bytes per archive byte
    ratio_floor: int = 100 * 1024**2  # the ratio applies only past this many expanded bytes


@dataclass(frozen=True)
class ExtractionResult:
    """What an extraction produced."""

    path: Path
    files: int
    directories: int
    links: int
    total_bytes: int


def archive_format(file_name: str) -> ArchiveFormat:
    """The format a package file name announces; raises UnsupportedArchive otherwise."""
    lower = file_name.lower()
    for suffix, kind in _SUFFIXES:
        if lower.endswith(suffix):
            return kind
    known = " ".join(suffix for suffix, _ in _SUFFIXES)
    raise UnsupportedArchive(f"{file_name!r} is not a supported package archive ({known})")


def extract(
    archive: Path,
    target: Path,
    *,
    kind: ArchiveFormat | None = None,
    limits: ExtractionLimits | None = None,
    owner: tuple[int, int] | None = None,
) -> ExtractionResult:
    """Extract `archive` into the new folder `target` (which must not exist), all or nothing."""
    kind = kind or archive_format(archive.name)
    limits = limits or ExtractionLimits()
    if os.path.lexists(target):
        raise InstallPathExists(f"cannot extract {archive.name}: {target} exists already")
    made = _make_parents(target.parent)
    staging = target.parent / f".{target.name}.extracting-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    writer = _Writer(staging, archive.name, archive.stat().st_size, limits, owner)
    started = time.monotonic()
    try:
        try:
            if kind in (ArchiveFormat.ZIP, ArchiveFormat.NUPKG):
                _extract_zip(archive, writer, nupkg=kind is ArchiveFormat.NUPKG)
            else:
                _extract_tar(archive, kind, writer)
            writer.finish()
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise NotEnoughSpace(
                    f"disk full while extracting {archive.name} entry {writer.current!r} into "
                    f"{target.parent}"
                ) from exc
            raise
        try:
            os.rename(staging, target)
        except OSError as exc:
            # Another extraction chose the same folder after the check above and got there
            # first (a folder that is not empty is never replaced).
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise InstallPathExists(
                    f"cannot extract {archive.name}: {target} appeared meanwhile"
                ) from exc
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # deepest first; left alone if something else appeared in it
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    log.info(
        "package_extracted",
        archive=archive.name,
        target=str(target),
        files=writer.files,
        total_bytes=writer.total,
        seconds=round(time.monotonic() - started, 3),
    )
    return ExtractionResult(target, writer.files, writer.directories, writer.links, writer.total)


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and missing ancestors; returns those created, deepest first."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return missing


# -- names -------------------------------------------------------------------------------------


def safe_relative_path(name: str, archive: str) -> str | None:
    """The entry's path inside the target ('a/b'), None for the root itself; refuses escapes."""
    if "\x00" in name:
        raise UnsafeArchive(f"{archive}: entry {name!r} has a NUL byte in its name")
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) >= 2 and cleaned[1] == ":"):
        raise UnsafeArchive(f"{archive}: entry {name!r} is an absolute path")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: entry {name!r} escapes the target folder (..)")
    return "/".join(parts) or None


# -- the writer shared by both formats ---------------------------------------------------------


@dataclass
class _Writer:
    """Writes entries under the staging folder, counting against the limits."""

    root: Path
    archive: str
    archive_size: int
    limits: ExtractionLimits
    owner: tuple[int, int] | None
    current: str = ""
    total: int = 0
    entries: int = 0
    files: int = 0
    directories: int = 0
    links: int = 0
    dir_modes: dict[str, int] = field(default_factory=dict)
    folders: set[str] = field(default_factory=lambda: {""})  # checked parents, relative
    root_mode: int = 0o755
    symlinks: list[tuple[str, str, str]] = field(default_factory=list)  # (path, target, name)

    def _begin(self, name: str) -> str | None:
        self.current = name
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveTooLarge(
                f"{self.archive}: more than {self.limits.max_entries} entries (at {name!r})"
            )
        return safe_relative_path(name, self.archive)

    def _count(self, size: int) -> None:
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise ArchiveTooLarge(
                f"{self.archive}: expands past {self.limits.max_total_bytes} bytes "
                f"(at entry {self.current!r})"
            )
        if self.total > self.limits.ratio_floor and self.total > self.limits.max_ratio * max(
            1, self.archive_size
        ):
            raise ArchiveTooLarge(
                f"{self.archive}: expands more than {self.limits.max_ratio:g} times its "
                f"{self.archive_size} bytes (at entry {self.current!r}); a zip bomb?"
            )

    def _parent(self, relative: str) -> Path:
        """Create the entry's parent folders (never through a link) and return the parent."""
        parent = posixpath.dirname(relative)
        if parent in self.folders:
            return self.root / parent
        path = self.root
        for part in parent.split("/") if parent else ():
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                self._chown(path)
                self.directories += 1
                continue
            if not stat.S_ISDIR(mode):
                raise UnsafeArchive(
                    f"{self.archive}: entry {self.current!r} needs {parent!r} to be a folder, "
                    "but the archive made it something else"
                )
        # Known folders stay folders: nothing replaces a folder (see _clear) and no link
        # exists until finish(), so the checks above need not be repeated.
        self.folders.add(parent)
        return path

    def _chown(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, self.owner[0], self.owner[1], follow_symlinks=False)

    def _clear(self, path: Path) -> None:
        """A later entry with the same name replaces a file or link, never a folder."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            raise UnsafeArchive(
                f"{self.archive}: entry {self.current!r} would replace a folder of the archive"
            )
        os.unlink(path)

    def directory(self, name: str, mode: int) -> None:
        relative = self._begin(name)
        if relative is None:  # "./": the mode of the target folder itself
            self.root_mode = mode & _PERMISSIONS
            return
        path = self._parent(relative) / posixpath.basename(relative)
        try:
            existing = os.lstat(path).st_mode
        except FileNotFoundError:
            os.mkdir(path, 0o700)
            self._chown(path)
            self.directories += 1
        else:
            if not stat.S_ISDIR(existing):
                raise UnsafeArchive(
                    f"{self.archive}: entry {name!r} is a folder but an earlier entry made "
                    "a file there"
                )
        os.chmod(path, (mode & _PERMISSIONS) | 0o700)
        self.dir_modes[relative] = mode & _PERMISSIONS

    def file(self, name: str, mode: int, source: IO[bytes], mtime: float | None) -> None:
        relative = self._begin(name)
        if relative is None:
            raise UnsafeArchive(f"{self.archive}: entry {name!r} is a file named like the root")
        path = self._parent(relative) / posixpath.basename(relative)
        self._clear(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(path, flags, 0o600)
        try:
            while piece := source.read(_COPY_SIZE):
                self._count(len(piece))
                view = memoryview(piece)
                while view:
                    view = view[os.write(descriptor, view) :]
            if self.owner is not None:
                os.fchown(descriptor, self.owner[0], self.owner[1])
            os.fchmod(descriptor, mode & _PERMISSIONS)
            if mtime is not None:
                os.utime(descriptor, (mtime, mtime))
        finally:
            os.close(descriptor)
        self.files += 1

    def hard_link(self, name: str, link_target: str) -> None:
        relative = self._begin(name)
        source = safe_relative_path(link_target, self.archive)
        if relative is None or source is None:
            raise UnsafeArchive(f"{self.archive}: hard link {name!r} -> {link_target!r}")
        source_path = self.root / source
        try:
            source_mode = os.lstat(source_path).st_mode
        except FileNotFoundError:
            source_mode = 0
        if not stat.S_ISREG(source_mode):
            raise UnsafeArchive(
                f"{self.archive}: hard link {name!r} points at {link_target!r}, which is not a "
                "file extracted from this archive"
            )
        path = self._parent(relative) / posixpath.basename(relative)
        self._clear(path)
        os.link(source_path, path, follow_symlinks=False)
        self.files += 1

    def symlink(self, name: str, link_target: str) -> None:
        relative = self._begin(name)
        if relative is None:
            raise UnsafeArchive(f"{self.archive}: entry {name!r} is a link named like the root")
        if not link_target or "\x00" in link_target:
            raise UnsafeArchive(f"{self.archive}: link {name!r} has an empty or invalid target")
        if link_target.startswith("/"):
            raise UnsafeArchive(
                f"{self.archive}: link {name!r} points at the absolute path {link_target!r}"
            )
        lexical = posixpath.normpath(posixpath.join(posixpath.dirname(relative), link_target))
        if lexical == ".." or lexical.startswith("../"):
            raise UnsafeArchive(
                f"{self.archive}: link {name!r} -> {link_target!r} points outside the target"
            )
        self.symlinks.append((relative, link_target, name))

    def finish(self) -> None:
        """Create the links, check where they lead, then give folders their modes."""
        for relative, link_target, name in self.symlinks:
            self.current = name
            path = self._parent(relative) / posixpath.basename(relative)
            self._clear(path)
            os.symlink(link_target, path)
            if self.owner is not None:
                os.chown(path, self.owner[0], self.owner[1], follow_symlinks=False)
            self.links += 1
        root = os.path.realpath(self.root)
        for relative, link_target, name in self.symlinks:
            resolved = os.path.realpath(self.root / relative)
            if resolved != root and not resolved.startswith(root + os.sep):
                raise UnsafeArchive(
                    f"{self.archive}: link {name!r} -> {link_target!r} leads outside the target"
                )
        for relative in sorted(self.dir_modes, key=lambda r: r.count("/"), reverse=True):
            os.chmod(self.root / relative, self.dir_modes[relative])
        # The staging folder was made owner-only; the target gets the archive's or 0755.
        self._chown(self.root)
        os.chmod(self.root, self.root_mode)


# -- formats -----------------------------------------------------------------------------------


def _extract_tar(archive: Path, kind: ArchiveFormat, writer: _Writer) -> None:
    try:
        with _open_tar(archive, kind) as tar:
            for member in _tar_members(tar):
                if member.isdir():
                    writer.directory(member.name, member.mode)
                elif member.isreg():
                    source = tar.extractfile(member)
                    if source is None:  # pragma: no cover - isreg members always have data
                        raise UnsupportedArchive(f"{archive.name}: no data for {member.name!r}")
                    with source:
                        writer.file(member.name, member.mode, source, float(member.mtime))
                elif member.issym():
                    writer.symlink(member.name, member.linkname)
                elif member.islnk():
                    writer.hard_link(member.name, member.linkname)
                else:
                    writer.current = member.name
                    raise UnsafeArchive(
                        f"{archive.name}: entry {member.name!r} is a "
                        f"{_tar_type_name(member)}, which a package may not contain"
                    )
    except (tarfile.TarError, EOFError) as exc:
        raise UnsupportedArchive(
            f"{archive.name} is not a readable {kind.value} file: {exc}"
        ) from exc


def _open_tar(archive: Path, kind: ArchiveFormat) -> tarfile.TarFile:
    """Read in one forward pass (next() then extractfile() of that member, never back).

    Not the "r|" stream modes: their pure-Python buffering is several times slower than
    GzipFile/BZ2File, and reading forward in member order never seeks back either way.
    """
    if kind is ArchiveFormat.TAR_GZ:
        return tarfile.open(archive, "r:gz")
    if kind is ArchiveFormat.TAR_BZ2:
        return tarfile.open(archive, "r:bz2")
    return tarfile.open(archive, "r:")


def _tar_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members one at a time (no second pass over a compressed stream)."""
    while (member := tar.next()) is not None:
        yield member
        # keep memory flat on archives with many entries (the list only serves getmember)
        members: list[tarfile.TarInfo] = tar.members  # type: ignore[attr-defined]
        members.clear()


def _tar_type_name(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "fifo"
    return f"entry of type {member.type!r}"


def _extract_zip(archive: Path, writer: _Writer, *, nupkg: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as package:
            infos = package.infolist()
            declared = sum(info.file_size for info in infos)
            if declared > writer.limits.max_total_bytes:
                raise ArchiveTooLarge(
                    f"{archive.name}: its entries declare {declared} bytes, more than the "
                    f"limit of {writer.limits.max_total_bytes}"
                )
            for info in infos:
                if nupkg and _NUPKG_PACKAGING.match(info.filename.replace("\\", "/")):
                    continue
                _zip_entry(package, info, writer)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise UnsupportedArchive(f"{archive.name} is not a readable zip file: {exc}") from exc


def _zip_entry(package: zipfile.ZipFile, info: zipfile.ZipInfo, writer: _Writer) -> None:
    unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
    file_type = stat.S_IFMT(unix_mode)
    if info.is_dir():
        writer.directory(info.filename, unix_mode if unix_mode else 0o755)
    elif file_type == stat.S_IFLNK:
        link_target = package.read(info).decode("utf-8", "surrogateescape")
        writer.symlink(info.filename, link_target)
    elif file_type in (0, stat.S_IFREG):
        mode = (unix_mode & _PERMISSIONS) or 0o644
        mtime = _zip_mtime(info)
        with package.open(info) as source:
            writer.file(info.filename, mode, source, mtime)
    else:
        writer.current = info.filename
        raise UnsafeArchive(
            f"{package.filename}: entry {info.filename!r} is a special file (mode "
            f"{oct(unix_mode)}), which a package may not contain"
        )


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None
