"""Package ids, versions and formats as the built-in feed reads them from a file name.

Octopus names a package file `<PackageId>.<Version><extension>`: `web.1.4.0.tar.gz`,
`My.App.2.0.0-beta.1.zip`. The id may itself hold dots and digits, so the split is the first
dot after which the rest is a valid version (the id is as short as it can be). Ids compare
without regard to case, as NuGet's do; versions compare as the channel rules compare them
(domain/versions.py), and build metadata is not part of a package version's identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cuttle.server.domain.versions import InvalidVersion, Version, parse_version
from cuttle.server.errors import InvalidArgument

# Longest first, so `.tar.gz` wins over a bare `.gz` and `.tar.bz2` over `.tar`.
FORMATS: tuple[tuple[str, str], ...] = (
    (".tar.bz2", "tar.bz2"),
    (".tar.gz", "tar.gz"),
    (".nupkg", "nupkg"),
    (".tgz", "tar.gz"),
    (".zip", "zip"),
    (".tar", "tar"),
)
SUPPORTED = ", ".join(ext for ext, _ in sorted(FORMATS, key=lambda f: f[0]))
MAX_ID_LENGTH = 100
_ID = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


class InvalidPackage(InvalidArgument):
    """A file name, package id, version or format the feed cannot take."""


@dataclass(frozen=True, slots=True)
class PackageName:
    """What a package file is: its id, its version and its archive format."""

    package_id: str
    version: Version
    format: str

    @property
    def key(self) -> str:
        """The id as the feed compares it (case-insensitive)."""
        return package_key(self.package_id)

    @property
    def version_key(self) -> str:
        """The version as the feed compares it (see version_key())."""
        return version_key(self.version)


def package_key(package_id: str) -> str:
    """An id as the feed compares it: NuGet ids are case-insensitive."""
    return package_id.casefold()


def version_key(version: Version) -> str:
    """The canonical spelling without build metadata: 1.0 == 1.0.0.0 == 1.0.0+build.7."""
    text = version.normalized
    return text.split("+", 1)[0]


def already_in_feed(shown: str, sha256: str) -> str:
    """Why a push of a version the feed holds is refused (the server's and the CLI's words)."""
    return (
        f"package {shown} is already in the feed (sha256 {sha256[:12]}…); "
        "push it with --replace to overwrite it, or push a new version"
    )


def split_format(file_name: str) -> tuple[str, str]:
    """(stem, format) of a package file name; InvalidPackage for an unsupported extension."""
    lowered = file_name.lower()
    for extension, kind in FORMATS:
        if lowered.endswith(extension) and len(file_name) > len(extension):
            return file_name[: -len(extension)], kind
    raise InvalidPackage(
        f"{file_name!r} is not a supported package file: its name must end in one of {SUPPORTED}"
    )


def check_package_id(package_id: str, where: str = "package id") -> str:
    """The id, or InvalidPackage saying what is wrong with it."""
    if not package_id:
        raise InvalidPackage(f"{where}: a package id cannot be empty")
    if len(package_id) > MAX_ID_LENGTH:
        raise InvalidPackage(f"{where}: {package_id!r} is longer than {MAX_ID_LENGTH} characters")
    if not _ID.fullmatch(package_id) or ".." in package_id:
        raise InvalidPackage(
            f"{where}: {package_id!r} is not a package id (letters, digits, '.', '-' and '_', "
            "starting and ending with a letter, digit or '_')"
        )
    return package_id


def check_version(text: str, where: str = "version") -> Version:
    """A package version, or InvalidPackage naming where it came from."""
    try:
        return parse_version(text)
    except InvalidVersion as exc:
        raise InvalidPackage(f"{where}: {exc}") from None


def parse_file_name(file_name: str) -> PackageName:
    """Id, version and format from `<id>.<version><extension>`; InvalidPackage otherwise."""
    stem, kind = split_format(file_name)
    for index, char in enumerate(stem):
        if char != "." or index == 0:
            continue
        rest = stem[index + 1 :]
        if not rest or not (rest[0].isdigit() or (rest[0] in "vV" and rest[1:2].isdigit())):
            continue
        try:
            version = parse_version(rest)
        except InvalidVersion:
            continue
        package_id = stem[:index]
        try:
            check_package_id(package_id)
        except InvalidPackage:
            continue
        return PackageName(package_id, version, kind)
    raise InvalidPackage(
        f"{file_name!r} has no version in its name: name the file <PackageId>.<Version>"
        f"{file_name[len(stem) :]} (e.g. web.1.4.0{file_name[len(stem) :]}), "
        "or give --package-id and --version"
    )


def package_name(file_name: str, package_id: str = "", version: str = "") -> PackageName:
    """What a pushed file is: the file name says, unless the id and/or version are given."""
    _, kind = split_format(file_name)
    if package_id and version:
        return PackageName(
            check_package_id(package_id, "--package-id"), check_version(version, "--version"), kind
        )
    parsed = parse_file_name(file_name)
    return PackageName(
        check_package_id(package_id, "--package-id") if package_id else parsed.package_id,
        check_version(version, "--version") if version else parsed.version,
        kind,
    )
