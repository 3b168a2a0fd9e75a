"""Where packages are extracted on a machine, and how many extracted versions stay.

The path rule is Octopus's: `<applications>/<Environment>/<PackageId>/<Version>`, with the
tenant first for tenanted deployments (`<applications>/<Tenant>/<Environment>/...`), and a
`_1`, `_2`, ... suffix when that folder exists already (the same version deployed again gets a
fresh folder; the old one stays until retention removes it).

Retention keeps the N most recent folders of a package in an environment, ordered by version
(SemVer/NuGet order) then suffix, and never removes the folder currently deployed nor any other
folder the caller protects, even beyond N (a rollback to an old version keeps it). Version order
rather than modification times: deploy scripts write into their folder and would reorder them.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cuttle.tentacle.packages.cache import version_key
from cuttle.tentacle.packages.errors import PackageError

log = structlog.get_logger(__name__)

DEFAULT_KEEP = 3
APPLICATIONS_FOLDER = "Applications"
_UNSAFE = re.compile(r"[/\\\x00-\x1f:*?\"<>|]")
_SUFFIX = re.compile(r"^(?P<version>.+?)(?:_(?P<n>[0-9]+))?$")


@dataclass(frozen=True)
class ExtractedVersion:
    """One extracted folder of a package."""

    path: Path
    version: str
    suffix: int


def default_applications_directory(home: Path) -> Path:
    """The applications directory when the Tentacle's settings name none: `<home>/Applications`."""
    return home / APPLICATIONS_FOLDER


def path_segment(value: str, what: str) -> str:
    """A name made safe as one folder name (separators and reserved characters become `_`)."""
    cleaned = _UNSAFE.sub("_", value.strip())
    if cleaned in ("", ".", ".."):
        raise PackageError(f"{what} {value!r} cannot be used as a folder name")
    return cleaned


def package_folder(
    applications: Path, environment: str, package_id: str, tenant: str | None = None
) -> Path:
    """The folder holding every extracted version of a package in an environment."""
    parts = [path_segment(tenant, "tenant")] if tenant else []
    parts += [path_segment(environment, "environment"), path_segment(package_id, "package id")]
    return applications.joinpath(*parts)


def install_path(
    applications: Path,
    environment: str,
    package_id: str,
    version: str,
    tenant: str | None = None,
) -> Path:
    """The folder to extract into: `<Version>`, or `<Version>_N` if that exists already."""
    base = package_folder(applications, environment, package_id, tenant)
    name = path_segment(version, "version")
    candidate = base / name
    n = 0
    while os.path.lexists(candidate):
        n += 1
        candidate = base / f"{name}_{n}"
    return candidate


def extracted_versions(
    applications: Path, environment: str, package_id: str, tenant: str | None = None
) -> list[ExtractedVersion]:
    """Extracted folders of a package, most recent first (hidden in-progress folders skipped)."""
    base = package_folder(applications, environment, package_id, tenant)
    found: list[ExtractedVersion] = []
    try:
        children = list(base.iterdir())
    except FileNotFoundError:
        return []
    for child in children:
        if child.name.startswith(".") or child.is_symlink() or not child.is_dir():
            continue
        match = _SUFFIX.match(child.name)
        if match is None:  # pragma: no cover - the pattern matches any non-empty name
            continue
        found.append(ExtractedVersion(child, match["version"], int(match["n"] or 0)))
    found.sort(key=lambda v: (version_key(v.version), v.suffix), reverse=True)
    return found


def apply_retention(
    applications: Path,
    environment: str,
    package_id: str,
    *,
    keep: int = DEFAULT_KEEP,
    current: Path | None = None,
    protect: Iterable[Path] = (),
    tenant: str | None = None,
) -> list[Path]:
    """Remove all but the `keep` most recent folders, never `current` or `protect`; returns them."""
    if keep < 1:
        raise PackageError(f"package retention must keep at least 1 version, not {keep}")
    spared = {p.resolve() for p in protect}
    if current is not None:
        spared.add(current.resolve())
    removed: list[Path] = []
    for version in extracted_versions(applications, environment, package_id, tenant)[keep:]:
        if version.path.resolve() in spared:
            continue
        _remove_tree(version.path)
        removed.append(version.path)
        log.info("package_version_removed", path=str(version.path))
    return removed


def _remove_tree(path: Path) -> None:
    """rmtree that also removes read-only folders a package brought (modes are kept)."""

    def make_writable(function: Callable[..., Any], failed: str, *_: Any) -> None:
        parent = os.path.dirname(failed)
        os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IRWXU)
        function(failed)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable)
    else:
        shutil.rmtree(path, onerror=make_writable)
