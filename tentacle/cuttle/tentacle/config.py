"""A Tentacle instance's home: its identity, the servers it trusts and how it talks to them.

Layout of `<home>`: `tentacle.json` (this configuration), `key.pem` (owner-only) and
`certificate.pem` (the identity), `ports.json` (bound port, written by `run`), `tentacle.lock`
(held by the one `run` of this home, see home_lock), `tickets/` (script state and journals),
`uploads/` (file transfers in progress), `files/packages/` (the package cache, see
packages/cache.py). The home is 0700; with `run_scripts_as`, the scripts' workspaces live
outside it, under `/var/lib/cuttle-tentacle-workspaces/` or `workspaces_dir`
(execution/script_user.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cuttle.protocol import pki
from cuttle.tentacle.execution.script_user import check_run_scripts_as
from cuttle.tentacle.packages.cache import DEFAULT_MAX_BYTES, DEFAULT_MIN_FREE_BYTES

CONFIG_FILE = "tentacle.json"
KEY_FILE = "key.pem"
CERTIFICATE_FILE = "certificate.pem"
PORTS_FILE = "ports.json"

DEFAULT_LISTENING_PORT = 10933


class ConfigError(ValueError):
    """The instance's configuration is missing or invalid; the message says which key and file."""


@dataclass
class TrustedServer:
    """A server this Tentacle accepts, pinned by thumbprint; the certificate once known."""

    thumbprint: str
    certificate_pem: str = ""


@dataclass
class ServerLink:
    """Where this Tentacle registered: used by polling, update-trust and deregister-from."""

    admin_address: str
    machine_name: str
    polling_address: str = ""


@dataclass
class TentacleConfig:
    """Everything `tentacle run` needs besides the identity files."""

    comms_style: str = "listening"
    listen_host: str = "0.0.0.0"  # noqa: S104 - a listening agent serves its server from anywhere
    port: int = DEFAULT_LISTENING_PORT
    trusted_servers: list[TrustedServer] = field(default_factory=list)
    server: ServerLink | None = None
    polling_connections: int = 1
    heartbeat_interval_seconds: float = 10.0
    heartbeat_timeout_seconds: float = 20.0  # + interval <= 30 s to notice a black hole
    reconnect_max_delay_seconds: float = 30.0
    config_reload_interval_seconds: float = 1.0
    workspace_retention_seconds: float = 86_400.0
    cleaner_interval_seconds: float = 3_600.0
    # "user" or "user:group" scripts run as instead of the Tentacle's own user (root by default,
    # so scripts that need root run unchanged); see execution/script_user.py.
    run_scripts_as: str = ""
    # Where the workspaces of scripts run as another user live (they cannot enter the home);
    # "" means /var/lib/cuttle-tentacle-workspaces/<home name>-<hash of the home's path>.
    workspaces_dir: str = ""
    # The package cache (<home>/files/packages): least recently used packages are evicted past
    # this size, and a transfer is refused ("disk full") that would leave less than
    # package_cache_min_free_bytes free on its disk.
    package_cache_max_bytes: int = DEFAULT_MAX_BYTES
    package_cache_min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    # Where deployed packages are extracted (<dir>/<Environment>/<PackageId>/<Version>); ""
    # means <home>/Applications, or beside the workspaces when scripts run as another user
    # (who cannot enter the home).
    applications_directory: str = ""
    # How many extracted versions of a package stay per environment (the deployed one always).
    package_retention_keep: int = 3
    # An archive is refused (as a zip bomb) past this many bytes expanded, this many entries,
    # or this many bytes expanded per archive byte once past 100 MiB (packages/extract.py).
    package_max_extracted_bytes: int = 10 * 1024**3
    package_max_entries: int = 1_000_000
    package_max_ratio: int = 200

    def trusted_thumbprints(self) -> set[str]:
        """Thumbprints of the servers this Tentacle accepts."""
        return {server.thumbprint for server in self.trusted_servers}

    def trusted_certificates_pem(self) -> bytes:
        """The pinned server certificates as one PEM bundle (the gRPC root set)."""
        return b"".join(
            server.certificate_pem.encode()
            for server in self.trusted_servers
            if server.certificate_pem
        )

    def trust(self, thumbprint: str, certificate_pem: str = "") -> None:
        """Add (or complete) a trusted server."""
        thumbprint = pki.normalize_thumbprint(thumbprint)
        for server in self.trusted_servers:
            if server.thumbprint == thumbprint:
                if certificate_pem:
                    server.certificate_pem = certificate_pem
                return
        self.trusted_servers.append(TrustedServer(thumbprint, certificate_pem))

    def remove_trust(self, thumbprint: str) -> bool:
        """Stop trusting a server; returns whether it was trusted."""
        thumbprint = pki.normalize_thumbprint(thumbprint)
        before = len(self.trusted_servers)
        self.trusted_servers = [s for s in self.trusted_servers if s.thumbprint != thumbprint]
        return len(self.trusted_servers) != before


class InstanceHome:
    """The files of one Tentacle instance."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()

    @property
    def config_path(self) -> Path:
        """Where the configuration lives."""
        return self.path / CONFIG_FILE

    def exists(self) -> bool:
        """Whether create-instance has run here."""
        return self.config_path.exists()

    def create(self) -> pki.Identity:
        """Make the home, a default configuration and a new certificate."""
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        if not self.exists():
            self.save(TentacleConfig())
        if (self.path / KEY_FILE).exists():
            return self.identity()
        return self.new_certificate()

    def new_certificate(self) -> pki.Identity:
        """Replace this instance's identity with a new key and certificate."""
        identity = pki.generate_identity(f"Tentacle {self.path.name}", pki.TENTACLE_NAME)
        pki.save_identity(identity, self.path / KEY_FILE, self.path / CERTIFICATE_FILE)
        return identity

    def identity(self) -> pki.Identity:
        """Read the identity; a clear error if the instance was never created."""
        key = self.path / KEY_FILE
        if not key.exists():
            raise ConfigError(f"{key} does not exist: run `tentacle create-instance` first")
        return pki.load_identity(key, self.path / CERTIFICATE_FILE)

    def load(self) -> TentacleConfig:
        """Read and validate tentacle.json."""
        path = self.config_path
        if not path.exists():
            raise ConfigError(f"{path} does not exist: run `tentacle create-instance` first")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from exc
        return _config_from_dict(raw, path)

    def save(self, config: TentacleConfig) -> None:
        """Write tentacle.json atomically so a crash never leaves half a file."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(config), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.config_path)

    def write_ports(self, ports: dict[str, int]) -> None:
        """Publish bound ports for tools and tests (port 0 picks a free one)."""
        tmp = self.path / (PORTS_FILE + ".tmp")
        tmp.write_text(json.dumps(ports))
        os.replace(tmp, self.path / PORTS_FILE)


_BYTE_SIZES = (
    "package_cache_max_bytes",
    "package_cache_min_free_bytes",
    "package_max_extracted_bytes",
)


def _config_from_dict(raw: Any, path: Path) -> TentacleConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    defaults = TentacleConfig()
    known = set(asdict(defaults))
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
    config = TentacleConfig()
    for key in (
        "comms_style",
        "listen_host",
        "run_scripts_as",
        "workspaces_dir",
        "applications_directory",
    ):
        if key in raw:
            if not isinstance(raw[key], str):
                raise ConfigError(f"{path}: {key} must be a string")
            setattr(config, key, raw[key])
    if config.comms_style not in ("listening", "polling"):
        raise ConfigError(f"{path}: comms_style must be 'listening' or 'polling'")
    if config.run_scripts_as:
        # Only the form here: whether the user exists is checked by configure and at start
        # (a Tentacle reading its file while running must not fail on a passwd change).
        try:
            check_run_scripts_as(config.run_scripts_as)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    for key in ("workspaces_dir", "applications_directory"):
        value = getattr(config, key)
        if value and not Path(value).is_absolute():
            raise ConfigError(f"{path}: {key} must be an absolute path")
    for key in (
        "port",
        "polling_connections",
        "package_retention_keep",
        "package_max_entries",
        "package_max_ratio",
        *_BYTE_SIZES,
    ):
        if key in raw:
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 0:
                raise ConfigError(f"{path}: {key} must be a non-negative integer")
            setattr(config, key, raw[key])
    for key in (
        "package_retention_keep",
        "package_max_extracted_bytes",
        "package_max_entries",
        "package_max_ratio",
    ):
        if getattr(config, key) < 1:
            raise ConfigError(f"{path}: {key} must be at least 1")
    if config.port > 65535:
        raise ConfigError(f"{path}: port must be at most 65535")
    for key in known:
        if key.endswith("_seconds") and key in raw:
            value = raw[key]
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{path}: {key} must be a positive number")
            setattr(config, key, float(value))
    for index, entry in enumerate(raw.get("trusted_servers", [])):
        if not isinstance(entry, dict) or "thumbprint" not in entry:
            raise ConfigError(f"{path}: trusted_servers[{index}] needs a thumbprint")
        try:
            config.trust(entry["thumbprint"], entry.get("certificate_pem", ""))
        except pki.CertificateError as exc:
            raise ConfigError(f"{path}: trusted_servers[{index}].thumbprint: {exc}") from exc
    server = raw.get("server")
    if server is not None:
        if not isinstance(server, dict) or not {"admin_address", "machine_name"} <= set(server):
            raise ConfigError(f"{path}: server needs admin_address and machine_name")
        config.server = ServerLink(
            admin_address=str(server["admin_address"]),
            machine_name=str(server["machine_name"]),
            polling_address=str(server.get("polling_address", "")),
        )
    return config
