"""scripts/install-tentacle.sh installs, registers and (here, without systemd) runs a Tentacle."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness.cluster import Cluster, Process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-tentacle.sh"


def _install(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=240,
    )


def test_one_line_install_registers_a_polling_tentacle_that_runs_scripts(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    server.ensure_environments(("Dev",))
    prefix, home = tmp_path / "venv", tmp_path / "home"
    args = [
        "--server",
        server.url,
        "--server-thumbprint",
        server.thumbprint,
        "--name",
        "installed-01",
        "--environment",
        "Dev",
        "--role",
        "web",
        "--comms-style",
        "polling",
        "--polling-address",
        f"127.0.0.1:{server.polling_port}",
        "--source",
        str(ROOT / "tentacle"),
        "--prefix",
        str(prefix),
        "--home",
        str(home),
        "--no-service",
    ]
    refused = _install([*args, "--api-key", server.api_key], {})
    assert refused.returncode == 1
    assert "not on the command line" in refused.stderr

    installed = _install(args, {"CUTTLE_API_KEY": server.api_key})
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "is registered" in installed.stdout
    machines = server.cli_json("machine", "list")
    assert [m["name"] for m in machines] == ["installed-01"]

    agent = Process(
        "installed-01",
        [str(prefix / "bin" / "tentacle"), "run", "--home", str(home)],
        tmp_path / "installed.log",
        dict(os.environ),
    )
    cluster.procs.append(agent)
    agent.start()
    wait_for(
        lambda: any(m.get("connected") for m in server.cli_json("machine", "list")),
        60,
        "the installed Tentacle to connect",
        interval=0.5,
    )
    run = server.cli("script", "run", "--machine", "installed-01", "--", "echo installed-ok")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "installed-ok" in run.stdout

    # Running the installer again keeps the certificate and replaces the registration.
    def thumbprint() -> str:
        shown = subprocess.run(
            [str(prefix / "bin" / "tentacle"), "show-thumbprint", "--home", str(home)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return shown.stdout.strip()

    before = thumbprint()
    again = _install(args, {"CUTTLE_API_KEY": server.api_key})
    assert again.returncode == 0, again.stdout + again.stderr
    assert thumbprint() == before
    (machine,) = server.cli_json("machine", "list")
    assert machine["thumbprint"] == before
