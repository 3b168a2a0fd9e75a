"""Server settings: defaults, then `<home>/server.json`, then CUTTLE_* environment, then flags."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cuttle.server.errors import InvalidArgument

SETTINGS_FILE = "server.json"


@dataclass(frozen=True)
class ServerSettings:
    """Every port, timeout and interval of a server node."""

    database_url: str = ""
    listen_host: str = "0.0.0.0"  # noqa: S104 - agents and admins reach the server from anywhere
    admin_port: int = 8443
    polling_port: int = 10943
    pickup_timeout_seconds: float = 120.0
    heartbeat_interval_seconds: float = 10.0
    heartbeat_timeout_seconds: float = 20.0  # + interval <= 30 s to notice a black hole
    health_check_interval_seconds: float = 300.0
    # For machines without a machine policy: how long health checks fail before "unavailable".
    unavailable_after_seconds: float = 300.0
    connect_timeout_seconds: float = 10.0
    # How long one request to an agent (start, status, cancel, ...) may take before it counts
    # as failed and is retried: an agent that is frozen or black-holed answers nothing at all.
    agent_call_timeout_seconds: float = 60.0
    agent_lost_after_seconds: float = 600.0
    # A cancel left pending for an away agent is tried again after this, then after twice as
    # long each time, up to the maximum.
    cancel_retry_interval_seconds: float = 15.0
    cancel_retry_max_interval_seconds: float = 300.0
    log_level: str = "info"

    def with_overrides(self, **values: Any) -> ServerSettings:
        """A copy with the given (non-None) values replaced."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})


def load_settings(home: Path, environ: dict[str, str] | None = None) -> ServerSettings:
    """Read server.json (if any) and CUTTLE_<NAME> variables; errors name the key and source."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = home / SETTINGS_FILE
    if path.exists():
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}"
            ) from exc
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{path}: expected a JSON object")
        values.update({k: (v, str(path)) for k, v in raw.items()})
    for field in fields(ServerSettings):
        name = f"CUTTLE_{field.name.upper()}"
        if name in env:
            values[field.name] = (env[name], name)
    known = {f.name: f for f in fields(ServerSettings)}
    parsed: dict[str, Any] = {}
    for key, (value, source) in values.items():
        known_field = known.get(key)
        if known_field is None:
            raise InvalidArgument(f"{source}: unknown setting {key!r}")
        parsed[key] = _coerce(key, known_field.type, value, source)
    settings = ServerSettings(**parsed)
    if not settings.database_url:
        settings = dataclasses.replace(
            settings, database_url=f"sqlite+pysqlite:///{(home / 'cuttle.db').resolve()}"
        )
    return settings


def _coerce(key: str, kind: Any, value: Any, source: str) -> Any:
    try:
        if kind in ("int", int):
            number = int(value)
            if not 0 <= number <= 65535:
                raise ValueError("out of range 0..65535")
            return number
        if kind in ("float", float):
            number_f = float(value)
            if number_f <= 0:
                raise ValueError("must be positive")
            return number_f
        return str(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{source}: setting {key}: {exc}") from exc
