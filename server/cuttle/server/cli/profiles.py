"""Saved logins of the `cuttle` client: named profiles in the user's config directory.

`cuttle login` writes `$XDG_CONFIG_HOME/cuttle/profiles.json` (`~/.config/cuttle/` when the
variable is unset): the directory owner-only (0700), the file owner-only (0600), because it
holds API keys. A command's connection comes from its flags, then the `CUTTLE_*` environment
variables, then the chosen profile (`--profile`, `CUTTLE_PROFILE`, else `default`).
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

PROFILES_FILE = "profiles.json"
DEFAULT_PROFILE = "default"
DEFAULT_SERVER = "https://127.0.0.1:8443"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ProfileError(click.ClickException):
    """A profile that is missing, unreadable or not safe to read."""


@dataclass(frozen=True)
class Profile:
    """Where a saved login points and the key it uses."""

    server: str
    server_thumbprint: str
    api_key: str


def config_dir() -> Path:
    """The client's config directory, following the XDG base directory convention."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The convention says a relative value is invalid and must be ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "cuttle"


def profiles_path() -> Path:
    """The file that holds every profile."""
    return config_dir() / PROFILES_FILE


def check_name(name: str) -> str:
    """A profile name, validated (it becomes a key in the file and appears in messages)."""
    if not _NAME.match(name):
        raise click.BadParameter(
            f"{name!r}: use letters, digits, '.', '_' and '-' (at most 64)", param_hint="--profile"
        )
    return name


def load_profiles() -> dict[str, Profile]:
    """Every saved profile; none when nobody has logged in yet."""
    path = profiles_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Like ssh with a private key: a file of API keys others can read is not used.
        raise ProfileError(f"{path} is readable by other users: `chmod 600 {path}` first")
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path}: cannot read the profiles ({exc})") from exc
    entries = raw.get("profiles") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise ProfileError(f"{path}: expected {{'profiles': {{name: profile}}}}")
    profiles: dict[str, Profile] = {}
    for name, entry in entries.items():
        try:
            profiles[name] = Profile(
                server=str(entry["server"]),
                server_thumbprint=str(entry["server_thumbprint"]),
                api_key=str(entry["api_key"]),
            )
        except (KeyError, TypeError) as exc:
            raise ProfileError(f"{path}: profile {name!r} is missing {exc}") from exc
    return profiles


def _write(profiles: dict[str, Profile]) -> Path:
    path = profiles_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode does not apply to a directory that already existed.
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    # Owner-only from creation: the keys are never readable by others, even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(
            {"profiles": {n: asdict(p) for n, p in sorted(profiles.items())}}, handle, indent=2
        )
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def save_profile(name: str, profile: Profile) -> Path:
    """Add or replace a profile; returns the file it was written to."""
    profiles = load_profiles()
    profiles[check_name(name)] = profile
    return _write(profiles)


def remove_profile(name: str) -> bool:
    """Forget a profile; returns whether there was one."""
    profiles = load_profiles()
    if profiles.pop(name, None) is None:
        return False
    _write(profiles)
    return True


@dataclass(frozen=True)
class ConnectionChoice:
    """The connection settings a command was given, before a profile fills the gaps."""

    profile: str
    profile_chosen: bool  # named by --profile or CUTTLE_PROFILE, so it must exist
    server: str | None
    server_thumbprint: str | None
    api_key: str | None

    def resolve(self) -> Profile:
        """Flags and environment win; the profile fills what they left out."""
        saved = load_profiles().get(self.profile) if self._needs_profile() else None
        if saved is None and self.profile_chosen:
            raise ProfileError(
                f"no profile {self.profile!r} in {profiles_path()}: "
                f"run `cuttle login --profile {self.profile} --server URL --server-thumbprint T`"
            )
        return Profile(
            server=self.server or (saved.server if saved else DEFAULT_SERVER),
            server_thumbprint=self.server_thumbprint or (saved.server_thumbprint if saved else ""),
            api_key=self.api_key or (saved.api_key if saved else ""),
        )

    def _needs_profile(self) -> bool:
        return self.profile_chosen or not (self.server and self.server_thumbprint and self.api_key)
