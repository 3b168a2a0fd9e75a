"""`cuttle login` saves a checked login as a profile; flags and environment still win over it."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.harness.cli import ok
from tests.integration.harness.cluster import BIN, Cluster, Server

pytestmark = pytest.mark.integration

CONNECTION_VARIABLES = ("CUTTLE_SERVER", "CUTTLE_API_KEY", "CUTTLE_SERVER_THUMBPRINT")


def _cuttle(
    server: Server, config: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only the given connection variables and XDG_CONFIG_HOME=config."""
    environ = {
        k: v
        for k, v in server.cli_env().items()
        if k not in (*CONNECTION_VARIABLES, "CUTTLE_PROFILE")
    }
    environ.update(env, XDG_CONFIG_HOME=str(config))
    return subprocess.run(
        [str(BIN / "cuttle"), *args],
        capture_output=True,
        text=True,
        env=environ,
        input=stdin,
        timeout=90,
        check=False,
    )


def _login(config: Path, server: Server, *extra: str, key: str) -> subprocess.CompletedProcess[str]:
    return _cuttle(
        server,
        config,
        "login",
        "--server",
        server.url,
        "--server-thumbprint",
        server.thumbprint,
        *extra,
        stdin=key + "\n",
    )


def test_login_saves_an_owner_only_profile_that_later_commands_use(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    config = tmp_path / "config"
    # No connection settings at all: nothing to connect with yet.
    before = _cuttle(server, config, "environment", "list")
    assert before.returncode != 0
    assert "cuttle login" in before.stderr

    ok(_login(config, server, key=server.api_key))
    folder, profiles = config / "cuttle", config / "cuttle" / "profiles.json"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    saved = json.loads(profiles.read_text())["profiles"]["default"]
    assert saved == {
        "server": server.url,
        "server_thumbprint": server.thumbprint,
        "api_key": server.api_key,
    }
    # The key came from stdin, never argv; the next command needs nothing but the profile.
    ok(_cuttle(server, config, "environment", "create", "Dev"))
    names = json.loads(
        ok(_cuttle(server, config, "environment", "list", "--output", "json")).stdout
    )
    assert [e["name"] for e in names] == ["Dev"]

    # Environment variables and flags win over the profile.
    by_env = _cuttle(server, config, "environment", "list", CUTTLE_API_KEY="CUTTLE-not-a-real-key")
    assert by_env.returncode != 0
    assert "invalid or revoked API key" in by_env.stderr
    by_flag = _cuttle(server, config, "--api-key", "CUTTLE-not-a-real-key", "environment", "list")
    assert by_flag.returncode != 0
    assert "invalid or revoked API key" in by_flag.stderr

    ok(_cuttle(server, config, "logout"))
    assert json.loads(profiles.read_text())["profiles"] == {}
    after = _cuttle(server, config, "environment", "list")
    assert after.returncode != 0
    assert "cuttle login" in after.stderr


def test_login_refuses_a_bad_key_or_thumbprint_and_saves_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    config = tmp_path / "config"
    bad_key = _login(config, server, key="CUTTLE-not-a-real-key")
    assert bad_key.returncode != 0
    assert "refused the API key" in bad_key.stderr
    assert "nothing was saved" in bad_key.stderr
    wrong_thumbprint = _cuttle(
        server,
        config,
        "login",
        "--server",
        server.url,
        "--server-thumbprint",
        "AB" * 32,
        stdin=server.api_key + "\n",
    )
    assert wrong_thumbprint.returncode != 0
    assert f"presented certificate {server.thumbprint}" in wrong_thumbprint.stderr
    assert not (config / "cuttle" / "profiles.json").exists()


def test_profiles_are_chosen_by_flag_or_environment(cluster: Cluster, tmp_path: Path) -> None:
    server = cluster.start_server()
    config = tmp_path / "config"
    ok(_login(config, server, "--profile", "ops", key=server.api_key))
    # Only "ops" exists: the default profile gives no connection, a named one must exist.
    assert _cuttle(server, config, "environment", "list").returncode != 0
    missing = _cuttle(server, config, "--profile", "prod", "environment", "list")
    assert missing.returncode != 0
    assert "no profile 'prod'" in missing.stderr
    assert "cuttle login --profile prod" in missing.stderr
    ok(_cuttle(server, config, "--profile", "ops", "environment", "list"))
    ok(_cuttle(server, config, "environment", "list", CUTTLE_PROFILE="ops"))

    ok(_cuttle(server, config, "logout", "--profile", "ops"))
    gone = _cuttle(server, config, "environment", "list", CUTTLE_PROFILE="ops")
    assert gone.returncode != 0
    assert "no profile 'ops'" in gone.stderr


def test_login_on_a_terminal_asks_for_the_key_without_echoing_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    config = tmp_path / "config"
    environ = {k: v for k, v in server.cli_env().items() if k not in CONNECTION_VARIABLES}
    environ["XDG_CONFIG_HOME"] = str(config)
    argv = [str(BIN / "cuttle"), "login", "--server", server.url]
    argv += ["--server-thumbprint", server.thumbprint]
    # `setsid --ctty` makes the pty the controlling terminal, which the hidden prompt opens
    # (/dev/tty), without forking the test process itself.
    terminal, child_side = pty.openpty()
    with subprocess.Popen(
        ["setsid", "--ctty", *argv],
        stdin=child_side,
        stdout=child_side,
        stderr=child_side,
        env=environ,
    ) as login:
        os.close(child_side)
        try:
            shown = _read_until(terminal, b"API key: ")
            os.write(terminal, server.api_key.encode() + b"\n")
            shown += _read_until(terminal, b"")
            status = login.wait(60)
        finally:
            if login.poll() is None:
                login.kill()
            os.close(terminal)
    assert status == 0, shown.decode(errors="replace")
    assert b"Logged in to" in shown
    assert server.api_key.encode() not in shown, "the key was echoed"
    saved = json.loads((config / "cuttle" / "profiles.json").read_text())
    assert saved["profiles"]["default"]["api_key"] == server.api_key


def _read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    """What the terminal shows until marker (or end of output when marker is empty)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not marker or marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {marker!r} on the terminal; it showed {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            if marker:
                raise AssertionError(f"the terminal closed before {marker!r}: {seen!r}")
            break
        seen += chunk
    return seen
