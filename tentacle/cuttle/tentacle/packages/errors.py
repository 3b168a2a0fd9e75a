"""Errors of the Tentacle's package handling, each with the wire kind the server sees.

TentacleError
└── PackageError (kind=invalid_argument)
    ├── UnsupportedArchive      not one of .zip .nupkg .tar.gz .tgz .tar.bz2 .tar, or unreadable
    ├── UnsafeArchive           an entry escapes the target, is a device/fifo, or a link outside
    ├── ArchiveTooLarge         over the total-size, ratio or entry-count limit (zip bombs)
    ├── PackageHashMismatch     a file's SHA-256 is not the one it was announced with
    ├── InstallPathExists       the extraction target exists already
    ├── NotEnoughSpace (kind=disk_full)   the disk is (or would be) full
    └── PackageInUse (kind=failed_precondition)   a running deployment holds it
"""

from __future__ import annotations

from cuttle.tentacle.errors import TentacleError


class PackageError(TentacleError):
    """Root of package errors: a package could not be stored, extracted or prepared."""

    kind = "invalid_argument"


class UnsupportedArchive(PackageError):
    """The file is not an archive of a supported format, or is corrupt."""


class UnsafeArchive(PackageError):
    """An entry would land outside the target or is not a plain file, directory or link."""


class ArchiveTooLarge(PackageError):
    """The archive expands past a configured limit (size, compression ratio, entry count)."""


class PackageHashMismatch(PackageError):
    """A package file's SHA-256 differs from the expected one; it is not used."""


class InstallPathExists(PackageError):
    """The folder a package should be extracted into exists already."""


class NotEnoughSpace(PackageError):
    """The disk holding the cache or the applications directory is full or would be."""

    kind = "disk_full"


class PackageInUse(PackageError):
    """The package is held by a running deployment and cannot be removed now."""

    kind = "failed_precondition"
