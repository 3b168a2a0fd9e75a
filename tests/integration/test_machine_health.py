"""Machine health over time, and registration against the model, with real processes.

A stopped Tentacle is first unreachable (with the reason), then unavailable once the machine
policy's unavailable_after_seconds have passed, and healthy again when it is back. The script
console skips unavailable machines and still tries unreachable ones.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.integration.harness.cli import at_ms
from tests.integration.harness.cluster import BIN, Cluster, Server, Tentacle, wait_for

pytestmark = pytest.mark.integration

UNAVAILABLE_AFTER = 4


def _machine(server: Server, name: str) -> dict[str, Any]:
    (machine,) = (m for m in server.cli_json("machine", "list") if m["name"] == name)
    return machine


def _health_changes(server: Server, name: str) -> list[tuple[str, str]]:
    """(health, reason) of each change the server logged for one machine, in order."""
    changes = []
    for line in (server.home / "server.log").read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(event, dict)
            and event.get("event") == "machine_health_changed"
            and event.get("machine") == name
        ):
            changes.append((event["health"], event.get("reason", "")))
    return changes


def _flat(text: str) -> str:
    """Text with line wrapping undone (the CLI wraps long lines to the terminal's width)."""
    return " ".join(text.split())


def _health_is(server: Server, name: str, health: str) -> dict[str, Any] | None:
    machine = _machine(server, name)
    return machine if machine["health"] == health else None


def test_a_stopped_tentacle_is_unreachable_then_unavailable_then_healthy_again(
    cluster: Cluster,
) -> None:
    server = cluster.start_server()
    web_01 = cluster.add_tentacle("web-01", "listening")
    cluster.add_tentacle("web-02", "listening")
    server.cli(
        "machine-policy",
        "create",
        "Quick",
        "--set",
        "health_check_interval_seconds=1",
        "--set",
        f"unavailable_after_seconds={UNAVAILABLE_AFTER}",
        check=True,
    )
    server.cli("machine", "update", "web-01", "--policy", "Quick", check=True)
    wait_for(lambda: _health_is(server, "web-01", "healthy"), 30, "a first check", 0.3)

    assert web_01.process is not None
    web_01.process.stop()
    unavailable = wait_for(
        lambda: _health_is(server, "web-01", "unavailable"),
        60,
        "web-01 to count as unavailable",
        0.3,
    )
    # Only after the policy's time, counted from the first failed check (the server's clock).
    since = at_ms(unavailable["unreachable_at"])
    assert since > 0
    assert at_ms(unavailable["last_health_check_at"]) - since >= UNAVAILABLE_AFTER * 1000
    assert "connection refused" in unavailable["health_message"], unavailable
    # Unreachable first, with the reason, and only then unavailable.
    changes = _health_changes(server, "web-01")
    assert [health for health, _ in changes] == ["healthy", "unreachable", "unavailable"], changes
    assert "connection refused" in changes[1][1], changes

    # The script console skips it when chosen by environment, and refuses it by name.
    run = server.cli("script", "run", "--environment", "Dev", "--", "echo hi from $(hostname)")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped unavailable web-01" in _flat(run.stderr), run.stderr
    assert "web-02: hi from" in run.stdout
    assert "web-01:" not in run.stdout
    named = server.cli("script", "run", "--machine", "web-01", "--", "echo no")
    assert named.returncode == 1
    assert "web-01 is unavailable" in _flat(named.stderr), named.stderr
    assert "cuttle machine health-check" in _flat(named.stderr), named.stderr

    # Back on the same port: the next scheduled check ends the run of failures.
    web_01.start()
    healthy = wait_for(lambda: _health_is(server, "web-01", "healthy"), 30, "web-01 healthy", 0.3)
    assert healthy["unreachable_at"] is None
    assert healthy["health_message"] == ""
    assert [health for health, _ in _health_changes(server, "web-01")][-1] == "healthy"
    run = server.cli("script", "run", "--machine", "web-01", "--", "echo back")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "web-01: back" in run.stdout


def test_an_unreachable_machine_is_still_tried(cluster: Cluster) -> None:
    server = cluster.start_server()
    web_01 = cluster.add_tentacle("web-01", "listening")
    server.cli(
        "machine-policy",
        "create",
        "Patient",
        "--set",
        "health_check_interval_seconds=3600",
        "--set",
        "unavailable_after_seconds=3600",
        check=True,
    )
    server.cli("machine", "update", "web-01", "--policy", "Patient", check=True)
    assert web_01.process is not None
    web_01.process.stop()
    checked = server.cli("machine", "health-check", "--name", "web-01", "--output", "json")
    assert checked.returncode == 1
    (machine,) = json.loads(checked.stdout)
    assert machine["health"] == "unreachable"
    assert "connection refused" in machine["health_message"], machine

    # Tried, not skipped: the task keeps trying the agent, which comes back and runs it.
    run = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", "echo tried anyway"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server.cli_env(),
    )
    try:
        wait_for(
            lambda: "task_submitted" in (server.home / "server.log").read_text(),
            60,
            "the script task to be submitted",
            0.2,
        )
        web_01.start()
        stdout, stderr = run.communicate(timeout=90)
    finally:
        run.kill()
    assert run.returncode == 0, stdout + stderr
    assert "web-01: tried anyway" in stdout


def test_registration_refuses_an_environment_the_model_does_not_have(cluster: Cluster) -> None:
    server = cluster.start_server()
    server.ensure_environments(("Dev",))
    agent = Tentacle("web-01", cluster.root / "web-01", "polling", server, cluster.procs)
    agent.tentacle("create-instance")
    agent.tentacle("configure", "--trust-certificate", str(server.home / "server-certificate.pem"))

    def register(*environments: str) -> subprocess.CompletedProcess[str]:
        args = ["register-with", "--server", server.url, "--server-thumbprint"]
        args += [server.thumbprint, "--api-key", server.api_key, "--name", "web-01"]
        args += ["--comms-style", "polling"]
        for environment in environments:
            args += ["--environment", environment]
        return agent.tentacle(*args, check=False)

    refused = register("Nowhere", "dev")
    assert refused.returncode == 1
    assert "environments[0]: no environment named 'Nowhere'" in _flat(refused.stderr)
    assert "environments[1]" not in refused.stderr, refused.stderr
    assert server.cli_json("machine", "list") == []
    # Nothing was recorded on the agent's side either: it is not registered anywhere.
    assert (
        "not registered"
        in agent.tentacle("deregister-from", "--api-key", server.api_key, check=False).stderr
    )

    accepted = register("dev")
    assert accepted.returncode == 0, accepted.stderr
    assert [m["name"] for m in server.cli_json("machine", "list")] == ["web-01"]
