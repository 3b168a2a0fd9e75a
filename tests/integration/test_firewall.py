"""Behind a firewall that drops new inbound connections: polling works, listening is unreachable.

The Tentacles live in their own network namespace (a VM behind a firewall); the server binds the
root side of a veth pair. The firewall is an nftables table inside the namespace that accepts
replies and outbound connections but drops every new inbound TCP connection.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness.cluster import BIN, Cluster
from tests.integration.harness.netns import Namespace, require_namespaces

# Two server starts, two Tentacles and a dozen CLI calls, each a fresh Python process: ~25 s
# alone, but 90 s was seen on a loaded 2-core machine, too close to the default limit.
pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.timeout(240)]


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    """A fresh namespace for this test (requested before `cluster`, so it is removed after it)."""
    require_namespaces()
    with Namespace.create() as ns:
        yield ns


def _tcp_connect(host: str, port: int) -> str:
    """'connected', 'refused' or 'timed out': what a fresh TCP connection from here meets."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timed out"


def _by_name(machines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in machines}


def test_polling_gets_work_through_the_firewall_and_listening_is_reported_unreachable(
    namespace: Namespace, cluster: Cluster
) -> None:
    server = cluster.start_server(listen_host=namespace.host_address)
    host, prefix = namespace.inner_address, tuple(namespace.prefix)
    listening = cluster.add_tentacle("vm-listening", "listening", host=host, prefix=prefix)

    # Without the rule the server reaches the listening Tentacle: the rule is what will block it.
    assert _tcp_connect(namespace.inner_address, listening.port) == "connected"
    before = server.cli("machine", "health-check", "--output", "json")
    assert before.returncode == 0, before.stdout + before.stderr
    (checked,) = json.loads(before.stdout)
    assert checked["health"] == "healthy", checked

    namespace.drop_new_inbound_tcp()
    assert _tcp_connect(namespace.inner_address, listening.port) == "timed out", namespace.ruleset()
    # The server's channel to the agent predates the rule (established connections pass, as
    # through any stateful firewall); a restarted server must dial anew and meets the rule.
    assert server.process is not None
    server.process.stop()
    server.start()

    # Registered and first connected from behind the firewall: only outbound connections.
    polling = cluster.add_tentacle("vm-polling", "polling", host=host, prefix=prefix)
    polling.wait_connected()
    run = server.cli(
        "script",
        "run",
        "--machine",
        "vm-polling",
        "--syntax",
        "bash",
        "--",
        f"echo behind the firewall; ip -4 -o addr show dev {namespace.inner_interface}",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "vm-polling: behind the firewall" in run.stdout
    # The script ran inside the namespace: it sees the namespace's side of the veth.
    assert f"inet {namespace.inner_address}/30" in run.stdout

    check = server.cli("machine", "health-check", "--output", "json")
    assert check.returncode == 1, check.stdout + check.stderr
    health = _by_name(json.loads(check.stdout))
    assert health["vm-polling"]["health"] == "healthy", health
    # One failed check: unreachable, not yet unavailable (the default policy waits 300 s).
    assert health["vm-listening"]["health"] == "unreachable", health
    message = health["vm-listening"]["health_message"]
    assert message.startswith("vm-listening is unreachable: timed out"), message

    # What a user sees afterwards: the machine list keeps the verdict and its reason, in JSON
    # and in the table a person reads (a wide terminal, so rich does not elide columns).
    listed = _by_name(server.cli_json("machine", "list"))
    assert listed["vm-listening"]["health"] == "unreachable"
    assert listed["vm-listening"]["health_message"] == message
    assert listed["vm-polling"]["connected"] is True
    table = subprocess.run(
        [str(BIN / "cuttle"), "machine", "list"],
        capture_output=True,
        text=True,
        env={**server.cli_env(), "COLUMNS": "300"},
        timeout=60,
        check=True,
    )
    (row,) = [line for line in table.stdout.splitlines() if "vm-listening" in line]
    assert "unreachable since" in row, table.stdout
    assert "vm-listening is unreachable: timed out" in row, table.stdout
