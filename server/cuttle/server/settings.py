"""Server settings: defaults, then `<home>/server.json`, then CUTTLE_* environment, then flags."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from cuttle.server.errors import InvalidArgument

SETTINGS_FILE = "server.json"


class _Unit:
    """Marks what an integer setting counts, for parsing and range checks."""

    def __init__(self, name: str) -> None:
        self.name = name


_PORT = _Unit("port")
_BYTES = _Unit("bytes")
# A TCP port: 0 asks the system for a free one.
Port = Annotated[int, _PORT]
# A size in bytes; files and variables may say "256MiB", "1GB", "4096".
ByteSize = Annotated[int, _BYTES]
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class ServerSettings:
    """Every port, timeout and interval of a server node."""

    database_url: str = ""
    listen_host: str = "0.0.0.0"  # noqa: S104 - agents and admins reach the server from anywhere
    admin_port: Port = 8443
    polling_port: Port = 10943
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
    # How long the engine retries a transaction while the database is locked or unreachable
    # before its task is resumed afresh (nothing is lost either way).
    store_retry_seconds: float = 300.0
    # How often the engine looks for unfinished tasks nobody works on, and adopts them.
    task_watchdog_interval_seconds: float = 30.0
    # Tasks this node runs at once (a task waiting for a person does not count); beyond it
    # tasks queue, oldest first, and say so.
    task_cap: int = 5
    # A node's claim on its tasks lasts this long unless its heartbeat renews it; then
    # another node adopts them (several nodes on one PostgreSQL).
    task_lease_seconds: float = 30.0
    # How soon machines registered, changed or removed through another node reach this one
    # (a machine a task needs is also looked up at once when this node does not know it).
    machine_refresh_interval_seconds: float = 10.0
    node_heartbeat_interval_seconds: float = 10.0
    # A deployment running longer than this is cancelled and ends timed_out (a day: generous,
    # so that only a deployment that truly hangs meets it).
    deployment_timeout_seconds: float = 86400.0
    # A task queued longer than this ends cancelled with that reason.
    queue_wait_limit_seconds: float = 86400.0
    # A task's log keeps this much script output; lines past it are counted, not stored.
    task_log_limit_bytes: ByteSize = 256 * 1024**2
    # Below this much free space in the database's directory, new output is refused and the
    # task fails saying so: the server keeps room to record that, and to serve reads.
    data_dir_min_free_bytes: ByteSize = 64 * 1024**2
    # Kept free beside the database (a file released when the disk fills), so the task that
    # met a full disk can still be recorded as failed. 0: no reserve.
    disk_reserve_bytes: ByteSize = 8 * 1024**2
    # How often a follower of a task (`task log --follow`, `script run`) looks at the store
    # without being told of a change. Changes made on this node wake it at once; this only
    # paces how soon it sees what another server node wrote.
    follow_poll_interval_seconds: float = 1.0
    # Log a follower may have waiting in memory; one that falls further behind reads the store.
    follow_buffer_bytes: ByteSize = 16 * 1024 * 1024
    log_level: str = "info"
    # Steps without target tags run on a Tentacle the server runs itself, its scripts as this
    # unprivileged user (made by `cuttle-server init` when it can). Off: such steps are refused.
    # How often old releases, their deployments and task logs are removed by the lifecycles'
    # retention policies (0: never).
    retention_interval_seconds: float = 3600.0
    builtin_worker: bool = True
    builtin_worker_user: str = "cuttle-worker"

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
    hints = get_type_hints(ServerSettings, include_extras=True)
    parsed: dict[str, Any] = {}
    for key, (value, source) in values.items():
        known_field = known.get(key)
        if known_field is None:
            raise InvalidArgument(f"{source}: unknown setting {key!r}")
        parsed[key] = _coerce(key, hints[key], value, source)
    settings = ServerSettings(**parsed)
    if not settings.database_url:
        settings = dataclasses.replace(
            settings, database_url=f"sqlite+pysqlite:///{(home / 'cuttle.db').resolve()}"
        )
    return settings


def _coerce(key: str, kind: Any, value: Any, source: str) -> Any:
    try:
        unit = next((a for a in get_args(kind) if isinstance(a, _Unit)), None)
        base = get_args(kind)[0] if get_origin(kind) is Annotated else kind
        if base is bool:
            return _boolean(value)
        if base is int:
            number = _size(value) if unit is _BYTES else _integer(value)
            if unit is _PORT and not 0 <= number <= 65535:
                raise ValueError(f"{number} is not a port (0..65535)")
            if number < 0:
                raise ValueError(f"{number} is negative")
            return number
        if base is float:
            if isinstance(value, bool):
                raise ValueError(f"expected a number of seconds, not {value!r}")
            number_f = float(value)
            if not number_f > 0 or number_f == float("inf"):
                raise ValueError(f"{value!r} is not a positive, finite number of seconds")
            return number_f
        if not isinstance(value, str):
            raise ValueError(f"expected a string, not {value!r}")
        return value
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{source}: setting {key}: {exc}") from exc


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, not {value!r}")


def _integer(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected a whole number, not {value!r}")
    return int(value)


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 1048576, 512KiB, 256MiB or 1GB, not {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def remember(home: Path, **values: str) -> None:
    """Write values into <home>/server.json (owner-only), keeping what is there."""
    path = home / SETTINGS_FILE
    current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    current.update(values)
    tmp = path.with_suffix(".json.tmp")
    # The database URL may carry a password: never readable by others, even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, path)
