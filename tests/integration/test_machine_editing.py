"""Editing deployment targets: environments, roles, tenants, enabled and policy, checked."""

from __future__ import annotations

import pytest

from tests.integration.harness.cli import at_ms
from tests.integration.harness.cluster import Cluster, wait_for

pytestmark = pytest.mark.integration


def test_machines_are_edited_against_the_model(cluster: Cluster) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening", environments=("Dev",), roles=("web",))
    # Dev exists already: the harness creates it for the registration.
    for args in (
        ("environment", "create", "Test"),
        ("tenant", "create", "Contoso"),
        ("machine-policy", "create", "Slow", "--set", "health_check_interval_seconds=86400"),
    ):
        server.cli(*args, check=True)

    unknown = server.cli(
        "machine",
        "update",
        "web-01",
        "--environment",
        "Nowhere",
        "--tenant",
        "Nobody",
        "--policy",
        "Missing",
    )
    assert unknown.returncode == 1
    for expected in (
        "environments[0]: no environment named 'Nowhere'",
        "tenants[0]: no tenant named 'Nobody'",
        "policy: no machine policy named 'Missing'",
    ):
        assert expected in unknown.stderr, unknown.stderr

    server.cli(
        "machine",
        "update",
        "web-01",
        "--environment",
        "Test",
        "--role",
        "api",
        "--tenant",
        "contoso",
        "--tenanted-mode",
        "tenanted",
        "--policy",
        "Slow",
        check=True,
    )
    (machine,) = server.cli_json("machine", "list")
    assert machine["environments"] == ["Test"]
    assert machine["roles"] == ["api"]
    assert machine["tenants"] == ["contoso"]
    assert machine["tenanted_mode"] == "tenanted"
    assert machine["policy"] == "Slow"
    assert machine["enabled"] is True

    # What machines use cannot be deleted from under them.
    for kind, name in (("environment", "Test"), ("tenant", "Contoso"), ("machine-policy", "Slow")):
        refused = server.cli(kind, "delete", name, "--yes")
        assert refused.returncode == 1, refused.stderr
        assert "still used by machine(s) web-01" in refused.stderr, refused.stderr
    server.cli("environment", "delete", "Dev", "--yes", check=True)

    # A disabled machine receives no work.
    server.cli("machine", "update", "web-01", "--disable", check=True)
    run = server.cli("script", "run", "--machine", "web-01", "--", "echo should-not-run")
    assert run.returncode != 0
    assert "no enabled machine named web-01" in run.stderr, run.stderr
    server.cli("machine", "update", "web-01", "--enable", check=True)
    run = server.cli("script", "run", "--machine", "web-01", "--", "echo back")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "back" in run.stdout


def test_a_machine_policy_sets_how_often_its_machines_are_checked(cluster: Cluster) -> None:
    # The server's own interval is an hour here: only the policy can explain a check.
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "polling")
    cluster.add_tentacle("web-02", "polling")
    server.cli(
        "machine-policy",
        "create",
        "Fast",
        "--set",
        "health_check_interval_seconds=1",
        check=True,
    )
    server.cli("machine", "update", "web-01", "--policy", "Fast", check=True)

    def checked() -> dict[str, int]:
        return {
            m["name"]: at_ms(m["last_health_check_at"]) for m in server.cli_json("machine", "list")
        }

    first = wait_for(lambda: checked()["web-01"] or None, 30, "the policy's first check", 0.5)
    later = wait_for(
        lambda: checked()["web-01"] > first or None, 30, "a second check a second later", 0.5
    )
    assert later
    machines = {m["name"]: m for m in server.cli_json("machine", "list")}
    assert machines["web-01"]["health"] == "healthy"
    assert machines["web-02"]["last_health_check_at"] is None
