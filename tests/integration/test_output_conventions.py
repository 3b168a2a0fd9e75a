"""What scripts read from the real CLI: listings in JSON and YAML, streams as JSON lines, log text.

The conventions (README "Output for scripts"): plain lower-case values, RFC 3339 `*_at` times,
ids in full, log text as UTF-8 with invalid bytes as U+FFFD unless `--raw` asks for the bytes.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from tests.integration.harness.cli import at_ms
from tests.integration.harness.cluster import BIN, Cluster, Server

pytestmark = pytest.mark.integration

# Valid UTF-8 (é), then two bytes that are not UTF-8, then more text.
SCRIPT = r"printf 'caf\303\251 \377\376 end\n'; echo second"
SHOWN = "café \ufffd\ufffd end"
WRITTEN = b"caf\xc3\xa9 \xff\xfe end"


def _cli_bytes(server: Server, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI's stdout as bytes, so what it wrote is seen exactly."""
    return subprocess.run(
        [str(BIN / "cuttle"), *args],
        capture_output=True,
        env=server.cli_env(),
        timeout=90,
        check=False,
    )


def _no_unix_ms(data: Any) -> list[str]:
    """Every key anywhere in data that still ends in _unix_ms."""
    if isinstance(data, dict):
        found = [k for k in data if k.endswith("_unix_ms")]
        return found + [k for v in data.values() for k in _no_unix_ms(v)]
    if isinstance(data, list):
        return [k for v in data for k in _no_unix_ms(v)]
    return []


def test_a_listing_in_json_and_yaml_is_the_same_data_in_the_conventions(
    cluster: Cluster,
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening")
    checked = server.cli("machine", "health-check", "--output", "json", check=True)
    (machine,) = json.loads(checked.stdout)
    assert machine["health"] == "healthy", machine
    assert machine["comms_style"] == "listening"
    assert len(machine["thumbprint"]) == 64, "ids and thumbprints in full"
    assert at_ms(machine["registered_at"]) <= at_ms(machine["last_health_check_at"])
    assert machine["unreachable_at"] is None
    assert _no_unix_ms(machine) == []

    listed_json = json.loads(server.cli("machine", "list", "--output", "json", check=True).stdout)
    listed_yaml = yaml.safe_load(
        server.cli("machine", "list", "--output", "yaml", check=True).stdout
    )
    assert listed_yaml == listed_json
    assert [m["health"] for m in listed_yaml] == ["healthy"]
    table = server.cli("machine", "list", check=True).stdout
    assert "web-01" in table
    refused = server.cli("machine", "list", "--output", "xml")
    assert refused.returncode == 2
    assert "'xml' is not one of 'table', 'json', 'yaml'" in refused.stderr


def test_a_script_streams_json_lines_and_its_log_is_text_unless_raw(cluster: Cluster) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening")

    run = server.cli("script", "run", "--machine", "web-01", "--output", "json", "--", SCRIPT)
    assert run.returncode == 0, run.stdout + run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert all(e["task_id"] == events[0]["task_id"] for e in events)
    task_id = events[0]["task_id"]
    assert len(task_id) == 32, "ids in full"
    lines = [
        line for e in events if "lines" in e for line in e["lines"]["lines"] if line["machine"]
    ]
    texts = [line["line"]["text"] for line in lines]
    assert texts[:2] == [SHOWN, "second"], texts
    first = lines[0]
    assert isinstance(first["position"], int)
    assert first["line"]["source"] == "stdout"
    assert first["line"]["level"] == "info"
    assert at_ms(first["line"]["written_at"]) > 0
    finished = events[-1]["finished"]
    assert finished["state"] == "success"
    (target,) = finished["targets"]
    assert (target["state"], target["exit_code"]) == ("complete", 0)
    assert _no_unix_ms(events) == []

    # Text for people: the invalid bytes show as U+FFFD, the rest is untouched.
    shown = _cli_bytes(server, "task", "log", task_id)
    assert shown.returncode == 0, shown.stderr
    assert f"web-01: {SHOWN}\n".encode() in shown.stdout
    assert b"\xff" not in shown.stdout
    # --raw: the bytes as the script wrote them.
    raw = _cli_bytes(server, "task", "log", task_id, "--raw")
    assert raw.returncode == 0, raw.stderr
    assert b"web-01: " + WRITTEN + b"\n" in raw.stdout
    assert b"web-01: second\n" in raw.stdout
    # JSON lines carry text; bytes cannot travel in them.
    as_json = server.cli("task", "log", task_id, "--output", "json", check=True)
    logged = [
        line["line"]["text"]
        for event in map(json.loads, as_json.stdout.splitlines())
        for line in event.get("lines", {}).get("lines", [])
    ]
    assert SHOWN in logged
    refused = server.cli("task", "log", task_id, "--raw", "--output", "json")
    assert refused.returncode == 2
    assert "--raw" in refused.stderr
    refused = server.cli("task", "log", task_id, "--output", "yaml")
    assert refused.returncode == 2, "a stream is text or JSON lines"

    # A script run's own output follows the same rule.
    run_raw = _cli_bytes(server, "script", "run", "--machine", "web-01", "--raw", "--", SCRIPT)
    assert run_raw.returncode == 0, run_raw.stderr
    assert b"web-01: " + WRITTEN + b"\n" in run_raw.stdout
    run_text = _cli_bytes(server, "script", "run", "--machine", "web-01", "--", SCRIPT)
    assert f"web-01: {SHOWN}\n".encode() in run_text.stdout


def test_task_show_and_list_in_json_and_yaml(cluster: Cluster) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening")
    server.cli("script", "run", "--machine", "web-01", "--", "echo hi", check=True)

    (listed,) = server.cli_json("task", "list")
    assert listed["state"] == "success"
    assert listed["kind"] == "script"
    assert at_ms(listed["created_at"]) <= at_ms(listed["finished_at"])
    shown = server.cli_json("task", "show", listed["id"][:8])
    assert shown["id"] == listed["id"]
    assert (
        yaml.safe_load(
            server.cli("task", "show", listed["id"], "--output", "yaml", check=True).stdout
        )
        == shown
    )
    # The engine's tree: steps -> actions -> machines, with the contract's names.
    machines = [m for step in shown["steps"] for a in step["actions"] for m in a["machines"]]
    (machine,) = machines
    assert (machine["name"], machine["state"], machine["exit_code"]) == ("web-01", "success", 0)
    assert machine["attempts"] == 1
    assert at_ms(machine["started"]) <= at_ms(machine["ended"])
    assert machine["started_at"] == machine["started"]
    assert machine["output_variables"] == []
    assert _no_unix_ms(shown) == []
