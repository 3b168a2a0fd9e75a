"""Running the real `cuttle` CLI against a harness server, and insisting that it succeeded."""

from __future__ import annotations

import subprocess
from datetime import datetime

from tests.integration.harness.cluster import BIN, Server


def cuttle(
    server: Server, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI against the server with extra environment and stdin."""
    return subprocess.run(
        [str(BIN / "cuttle"), *args],
        capture_output=True,
        text=True,
        env={**server.cli_env(), **(env or {})},
        input=stdin,
        timeout=90,
    )


def at_ms(value: str | None) -> int:
    """An RFC 3339 `*_at` time from the CLI's JSON as Unix milliseconds (null, never: 0)."""
    if value is None:
        return 0
    assert value.endswith("Z"), f"{value!r} is not an RFC 3339 time in UTC"
    return round(datetime.fromisoformat(value).timestamp() * 1000)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The result, after asserting the command exited 0 (showing its output if not)."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result
