"""What a deployment does with packages: which to acquire where, and how each action takes one.

Pure. The release snapshot records, per action that uses a package, the exact version and
SHA-256 (model/release_packages.py); a deployment acquires those bytes onto every machine of
a step that needs them, in one "Acquire packages" step before the first step runs, bounded by
Octopus.Acquire.MaxParallelism machines at once. Each action then asks the machine to put its
package in place, with the Octopus properties read here (their names are the contract).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cuttle.protocol.package_deployment import PackageDeployment

ACQUIRE_STEP = "Acquire packages"
ACQUIRE_PARALLELISM_VARIABLE = "Octopus.Acquire.MaxParallelism"
DEFAULT_ACQUIRE_PARALLELISM = 10

# Octopus's property names (their values are templates, evaluated before they are read here).
ENABLED_FEATURES = "Octopus.Action.EnabledFeatures"
CUSTOM_DIRECTORY = "Octopus.Action.Package.CustomInstallationDirectory"
PURGE_CUSTOM_DIRECTORY = (
    "Octopus.Action.Package.CustomInstallationDirectoryShouldBePurgedBeforeDeployment"
)
PURGE_EXCLUSIONS = "Octopus.Action.Package.CustomInstallationDirectoryPurgeExclusions"
SUBSTITUTE_TARGETS = "Octopus.Action.SubstituteInFiles.TargetFiles"
SUBSTITUTE_ENABLED = "Octopus.Action.SubstituteInFiles.Enabled"
STRUCTURED_TARGETS = "Octopus.Action.Package.JsonConfigurationVariablesTargets"
STRUCTURED_ENABLED = "Octopus.Action.Package.JsonConfigurationVariablesEnabled"
RUN_PACKAGE_SCRIPTS = "Octopus.Action.Package.RunPackageScripts"
# Feature names Octopus lists in Octopus.Action.EnabledFeatures.
SUBSTITUTE_FEATURE = "Octopus.Features.SubstituteInFiles"
STRUCTURED_FEATURE = "Octopus.Features.JsonConfigurationVariables"
CUSTOM_DIRECTORY_FEATURE = "Octopus.Features.CustomDirectory"


class PackageStepError(ValueError):
    """An action cannot take its package as configured; the message says why."""


@dataclass(frozen=True)
class ReleasePackage:
    """One package version a release recorded for one action (`use`: package or script)."""

    step: str
    action: str
    use: str
    package_id: str
    version: str
    sha256: str
    size: int

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ReleasePackage:
        """An entry of the release snapshot's `packages`."""
        return cls(
            step=str(entry["step"]),
            action=str(entry["action"]),
            use=str(entry["use"]),
            package_id=str(entry["package_id"]),
            version=str(entry["version"]),
            sha256=str(entry["sha256"]),
            size=int(entry["size"]),
        )


def recorded(snapshot: Mapping[str, Any]) -> tuple[ReleasePackage, ...] | None:
    """The packages a release recorded; None for a release made before releases recorded any."""
    entries = snapshot.get("packages")
    if entries is None:
        return None
    return tuple(ReleasePackage.from_json(entry) for entry in entries)


def package_of(
    packages: Sequence[ReleasePackage], step: str, action: str, use: str
) -> ReleasePackage | None:
    """The version recorded for an action's package (or script package)."""
    return next(
        (
            p
            for p in packages
            if p.step.casefold() == step.casefold()
            and p.action.casefold() == action.casefold()
            and p.use == use
        ),
        None,
    )


def acquire_width(text: str | None) -> tuple[int, str]:
    """How many machines acquire packages at once, and a note when the variable was unusable."""
    if text is None or not text.strip():
        return DEFAULT_ACQUIRE_PARALLELISM, ""
    try:
        width = int(text.strip())
    except ValueError:
        return (
            DEFAULT_ACQUIRE_PARALLELISM,
            f"{ACQUIRE_PARALLELISM_VARIABLE} is {text!r}, not a number: using "
            f"{DEFAULT_ACQUIRE_PARALLELISM}",
        )
    if width < 1:
        return 1, f"{ACQUIRE_PARALLELISM_VARIABLE} is {width}: acquiring on one machine at once"
    return width, ""


def _true(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().casefold() == "true"


def _feature(properties: Mapping[str, str], feature: str, switch: str, targets: str) -> bool:
    """Whether a feature is on: listed in EnabledFeatures when that is set, else by its own
    switch, else by having targets."""
    listed = properties.get(ENABLED_FEATURES)
    if listed is not None and listed.strip():
        names = {name.strip().casefold() for name in listed.split(",")}
        return feature.casefold() in names
    return _true(properties.get(switch), default=bool(properties.get(targets, "").strip()))


def _lines(value: str) -> tuple[str, ...]:
    """Globs or paths, one per line (commas also separate, as Octopus accepts both)."""
    parts = value.replace(",", "\n").splitlines()
    return tuple(part.strip() for part in parts if part.strip())


def package_start(
    package: ReleasePackage,
    archive_format: str,
    properties: Mapping[str, str],
    *,
    environment: str,
    tenant: str | None,
    script_file: str = "",
) -> PackageDeployment:
    """What the machine is asked to do with the package, from the action's evaluated properties."""
    custom = ""
    if _feature(properties, CUSTOM_DIRECTORY_FEATURE, "", CUSTOM_DIRECTORY):
        custom = properties.get(CUSTOM_DIRECTORY, "").strip()
        if custom and not custom.startswith("/"):
            raise PackageStepError(
                f"{CUSTOM_DIRECTORY} is {custom!r}: it must be an absolute path on the machine"
            )
    substitute = _feature(properties, SUBSTITUTE_FEATURE, SUBSTITUTE_ENABLED, SUBSTITUTE_TARGETS)
    structured = _feature(properties, STRUCTURED_FEATURE, STRUCTURED_ENABLED, STRUCTURED_TARGETS)
    return PackageDeployment(
        sha256=package.sha256,
        package_id=package.package_id,
        version=package.version,
        format=archive_format,
        environment=environment,
        tenant=tenant or "",
        script_file=script_file,
        custom_installation_directory=custom,
        purge_custom_installation_directory=bool(custom)
        and _true(properties.get(PURGE_CUSTOM_DIRECTORY), default=False),
        purge_exclusions=_lines(properties.get(PURGE_EXCLUSIONS, "")) if custom else (),
        substitute_target_files=_lines(properties.get(SUBSTITUTE_TARGETS, ""))
        if substitute
        else (),
        structured_variable_files=_lines(properties.get(STRUCTURED_TARGETS, ""))
        if structured
        else (),
        run_package_scripts=not script_file
        and _true(properties.get(RUN_PACKAGE_SCRIPTS), default=True),
    )


def script_arguments(parameters: str, secrets: Sequence[str]) -> tuple[str, ...]:
    """A script file's parameters as arguments; refused when they would put a secret in argv."""
    for secret in secrets:
        if secret and secret in parameters:
            raise PackageStepError(
                "the script's parameters hold a sensitive variable, which would put it on a "
                "command line: read it in the script with get_octopusvariable instead"
            )
    try:
        return tuple(shlex.split(parameters))
    except ValueError as exc:
        raise PackageStepError(f"the script's parameters cannot be split: {exc}") from None
