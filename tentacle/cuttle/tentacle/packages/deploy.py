"""Putting a cached package in place before a deployment's script runs on this machine.

For a deploy_package action, in Octopus's order as far as it happens before any script: extract
the cached file into a fresh versioned folder (packages/retention.py names it), fill in `#{...}`
in the target files, replace structured configuration variables in JSON/YAML files, copy the
result to the custom installation directory (purged first when asked), then apply retention.
What then runs under the ticket is one bash driver: the package's PreDeploy, Deploy and
PostDeploy (`.sh` and `.py`) in that order, in the installation folder, so a cancel, the time
limit, the journal and output variables cover them exactly as any script.

For a run_script action whose script is a file of a package, the package is extracted into the
ticket's workspace (deleted with the ticket) and the driver runs that file with the arguments.

One difference from Octopus: Octopus runs PreDeploy before it substitutes files; here files are
filled in before any of the package's scripts runs (the three run as one process under the
ticket).
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from cuttle.protocol.package_deployment import PackageDeployment
from cuttle.tentacle.execution.model import Syntax, Variable
from cuttle.tentacle.execution.script_user import ScriptUser
from cuttle.tentacle.packages.cache import PackageCache
from cuttle.tentacle.packages.errors import InstallPathExists, PackageError
from cuttle.tentacle.packages.extract import ArchiveFormat, ExtractionLimits, extract
from cuttle.tentacle.packages.retention import (
    DEFAULT_KEEP,
    apply_retention,
    default_applications_directory,
    install_path,
)
from cuttle.tentacle.packages.substitute import (
    SubstitutionReport,
    replace_structured_variables,
    substitute_in_files,
)

log = structlog.get_logger(__name__)

# The package's own scripts, in the order they run (each as .sh, then .py, when present).
PACKAGE_SCRIPT_STAGES = ("PreDeploy", "Deploy", "PostDeploy")
INSTALLATION_DIRECTORY = "Octopus.Action.Package.InstallationDirectoryPath"
OUTPUT_INSTALLATION_DIRECTORY = "Package.InstallationDirectoryPath"
# A purge of a folder this close to the root (/, /etc, /opt/x is the first allowed) is refused.
_MIN_PURGE_DEPTH = 2
# Folders tried when deployments of the same version at once keep taking the chosen one.
MAX_FOLDER_ATTEMPTS = 20

Say = Callable[[str, bool], None]
"""Journals one line of the Tentacle's own; the flag marks a warning."""


class FoldersInUse:
    """Extracted folders whose deployment is still running: retention never removes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[Path] = Counter()

    def hold(self, folder: Path) -> None:
        """Mark a folder in use (holds are counted)."""
        with self._lock:
            self._held[folder.resolve()] += 1

    def release(self, folder: Path) -> None:
        """Drop one hold taken by `hold`."""
        key = folder.resolve()
        with self._lock:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]

    def folders(self) -> list[Path]:
        """The folders held now."""
        with self._lock:
            return list(self._held)


@dataclass(frozen=True)
class DeploySettings:
    """Where packages go on this machine and how much of them stays."""

    cache: PackageCache
    applications: Path
    keep: int = DEFAULT_KEEP
    limits: ExtractionLimits = field(default_factory=ExtractionLimits)
    in_use: FoldersInUse = field(default_factory=FoldersInUse)


@dataclass(frozen=True)
class PreparedPackage:
    """A package in place: where it is, the driver to run and the variables it adds.

    `extracted` is held in `DeploySettings.in_use` until the caller releases it when the
    ticket ends (None: nothing held, the package went into the workspace).
    """

    folder: Path
    extracted: Path | None
    body: str
    variables: tuple[Variable, ...]
    outputs: tuple[Variable, ...]


def applications_directory(
    home: Path, configured: str, workspaces: Path, user: ScriptUser | None
) -> Path:
    """The applications directory: the setting, `<home>/Applications`, or beside the workspaces.

    Scripts run as another user cannot enter the home (0700), so their packages go beside
    their workspaces (`<workspaces>-applications`), which that user can reach.
    """
    if configured:
        return Path(configured).absolute()
    if user is None:
        return default_applications_directory(home)
    return workspaces.with_name(f"{workspaces.name}-applications")


def prepare(
    package: PackageDeployment,
    variables: Sequence[Variable],
    workspace: Path,
    settings: DeploySettings,
    *,
    syntax: Syntax,
    owner: tuple[int, int] | None,
    say: Say,
) -> PreparedPackage:
    """Extract and fill in the package (blocking); PackageError says what went wrong.

    The cached file is held (never evicted) for as long as this runs; a later deployment of
    the same bytes finds it again.
    """
    name = f"{package.package_id} {package.version}"
    try:
        kind = ArchiveFormat(package.format)
    except ValueError:
        raise PackageError(f"{name}: unknown archive format {package.format!r}") from None
    if not settings.cache.has(package.sha256):
        raise PackageError(
            f"{name} (SHA-256 {package.sha256}) is not in this machine's package cache; "
            "it is acquired before the step runs: deploy again"
        )
    with settings.cache.hold(package.sha256):
        archive = settings.cache.path_of(package.sha256)
        attempt = 0
        while True:
            if package.script_file:
                target = workspace / "package"
            else:
                target = install_path(
                    settings.applications,
                    package.environment,
                    package.package_id,
                    package.version,
                    package.tenant or None,
                )
            say(f"Extracting {name} into {target}", False)
            try:
                result = extract(archive, target, kind=kind, limits=settings.limits, owner=owner)
                break
            except InstallPathExists:
                # Deployments of the same version at once choose the same free folder; the
                # one that loses takes the next.
                attempt += 1
                if package.script_file or attempt >= MAX_FOLDER_ATTEMPTS:
                    raise
    # Retention of later deployments spares this folder until the ticket ends.
    held = None if package.script_file else target
    if held is not None:
        settings.in_use.hold(held)
    try:
        say(
            f"Extracted {result.files} files ({result.total_bytes} bytes, {result.directories} "
            f"folders, {result.links} links)",
            False,
        )
        values = {v.name: v.value for v in variables}
        folder = target
        if package.custom_installation_directory:
            folder = Path(package.custom_installation_directory)
        added = (
            Variable(INSTALLATION_DIRECTORY, str(folder)),
            Variable("Octopus.Action.Package.PackageId", package.package_id),
            Variable("Octopus.Action.Package.PackageVersion", package.version),
        )
        values.update({v.name: v.value for v in added})
        if package.substitute_target_files:
            report = substitute_in_files(target, package.substitute_target_files, values)
            _report(say, "Substituted variables in", report)
        if package.structured_variable_files:
            report = replace_structured_variables(target, package.structured_variable_files, values)
            _report(say, "Replaced structured configuration variables in", report)
        if package.custom_installation_directory:
            _copy_to_custom(package, target, folder, owner, say)
        if not package.script_file:
            try:
                removed = apply_retention(
                    settings.applications,
                    package.environment,
                    package.package_id,
                    keep=settings.keep,
                    current=target,
                    protect=settings.in_use.folders(),
                    tenant=package.tenant or None,
                )
            except (OSError, PackageError) as exc:
                say(f"Retention of older versions of {package.package_id} failed: {exc}", True)
            else:
                if removed:
                    say(
                        f"Removed {len(removed)} older extracted versions (keeping "
                        f"{settings.keep}): " + ", ".join(p.name for p in removed),
                        False,
                    )
        if package.script_file:
            body = _script_file_driver(target, package.script_file, syntax)
        elif package.run_package_scripts:
            body = _package_scripts_driver(folder, say)
        else:
            say(
                "The package's own scripts are not run (Octopus.Action.Package.RunPackageScripts)",
                False,
            )
            body = f"{_DRIVER_HEAD}\nexit 0\n"
        return PreparedPackage(
            folder=folder,
            extracted=held,
            body=body,
            variables=added,
            outputs=(Variable(OUTPUT_INSTALLATION_DIRECTORY, str(folder)),),
        )
    except BaseException:
        if held is not None:
            settings.in_use.release(held)
        raise


def _report(say: Say, what: str, report: SubstitutionReport) -> None:
    if report.changed:
        count = len(report.changed)
        files = "1 file" if count == 1 else f"{count} files"
        say(f"{what} {files}: {', '.join(report.changed)}", False)
        for file, keys in report.replaced_keys.items():
            if keys:
                say(f"  {file}: {', '.join(keys)}", False)
    for pattern in report.unmatched_globs:
        say(f"No file of the package matches {pattern!r}", True)
    for file, tokens in report.unresolved.items():
        say(f"{file}: left unresolved: {', '.join(tokens)}", True)
    for file in report.skipped_binary:
        say(f"{file} is not text; it was left as it is", True)


def _copy_to_custom(
    package: PackageDeployment,
    extracted: Path,
    folder: Path,
    owner: tuple[int, int] | None,
    say: Say,
) -> None:
    """Copy the extracted files into the custom installation directory, purging it first."""
    if package.purge_custom_installation_directory:
        if len(folder.resolve().parts) <= _MIN_PURGE_DEPTH:
            raise PackageError(
                f"refusing to purge {folder}: a custom installation directory that is purged "
                "must be at least two levels below /"
            )
        kept = _purge(folder, package.purge_exclusions)
        say(
            f"Purged {folder}" + (f", keeping {', '.join(kept)}" if kept else ""),
            False,
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(extracted, folder, symlinks=True, dirs_exist_ok=True)
        if owner is not None:
            _give(folder, owner)
    except OSError as exc:
        raise PackageError(f"could not copy the package into {folder}: {exc}") from exc
    say(f"Copied the package to the custom installation directory {folder}", False)


def _purge(folder: Path, exclusions: Sequence[str]) -> list[str]:
    """Delete what is in `folder` except paths matching the exclusions; returns what stayed."""
    kept: list[str] = []
    if not folder.is_dir():
        return kept
    patterns = [p.strip().strip("/") for p in exclusions if p.strip()]
    for entry in sorted(folder.iterdir()):
        if any(fnmatch.fnmatch(entry.name, pattern) for pattern in patterns):
            kept.append(entry.name)
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            raise PackageError(f"could not purge {entry}: {exc}") from exc
    return kept


def _give(folder: Path, owner: tuple[int, int]) -> None:
    os.chown(folder, *owner)
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), *owner, follow_symlinks=False)


def _found(folder: Path, file_name: str) -> Path | None:
    """The file at the package's root with this name (exact, else case-insensitive)."""
    exact = folder / file_name
    if exact.is_file():
        return exact
    wanted = file_name.lower()
    for entry in sorted(folder.iterdir()):
        if entry.name.lower() == wanted and entry.is_file():
            return entry
    return None


def _package_scripts_driver(folder: Path, say: Say) -> str:
    lines = [_DRIVER_HEAD, f"cd -- {shlex.quote(str(folder))} || exit 1"]
    found: list[str] = []
    for stage in PACKAGE_SCRIPT_STAGES:
        for suffix, syntax in ((".sh", Syntax.BASH), (".py", Syntax.PYTHON)):
            script = _found(folder, stage + suffix)
            if script is not None:
                found.append(script.name)
                lines.append(_run_line(script.name, syntax, with_arguments=False))
    if found:
        say(f"The package's scripts run in this order: {', '.join(found)}", False)
    else:
        say("The package has no PreDeploy, Deploy or PostDeploy script", False)
    return "\n".join(lines) + "\n"


def _script_file_driver(folder: Path, file_name: str, syntax: Syntax) -> str:
    script = (folder / file_name).resolve()
    if not script.is_relative_to(folder.resolve()):
        raise PackageError(f"the script file {file_name!r} leads out of the package")
    if not script.is_file():
        raise PackageError(f"the package has no file {file_name!r}")
    relative = script.relative_to(folder.resolve()).as_posix()
    return "\n".join(
        [
            _DRIVER_HEAD,
            f"cd -- {shlex.quote(str(folder))} || exit 1",
            _run_line(relative, syntax, with_arguments=True),
        ]
    )


# The helpers (get_octopusvariable, ...) are shell functions of this driver; a subshell keeps
# them and keeps a script's `exit` or `cd` from ending or moving the driver.
_DRIVER_HEAD = "# Written by the Tentacle: runs the package's scripts (see packages/deploy.py)."


def _run_line(relative: str, syntax: Syntax, *, with_arguments: bool) -> str:
    quoted = shlex.quote("./" + relative)
    arguments = ' "$@"' if with_arguments else ""
    announce = f"printf '%s\\n' {shlex.quote('Running ' + relative)}"
    if syntax is Syntax.PYTHON:
        # The Python bootstrap waits for its "go" on stdin, as the Tentacle gives every script.
        run = (
            f'printf \'go\\n\' | "$CUTTLE_PYTHON" "$CUTTLE_PYTHON_BOOTSTRAP" "" {quoted}{arguments}'
        )
    else:
        run = f"( . {quoted}{arguments} )"
    return f"{announce}\n{run} || exit $?"
