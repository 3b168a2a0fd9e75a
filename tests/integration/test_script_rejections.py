"""A request the agent refuses as malformed fails its target at once instead of being retried."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.integration.harness.cluster import Cluster

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("pwsh") is not None, reason="this machine can run pwsh")
@pytest.mark.parametrize("style", ["listening", "polling"])
def test_a_syntax_the_agent_cannot_run_fails_fast(cluster: Cluster, style: str) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", style)
    started = time.monotonic()
    run = server.cli(
        "script",
        "run",
        "--machine",
        "web-01",
        "--syntax",
        "pwsh",
        "--output",
        "json",
        "--",
        "Write-Host hi",
    )
    elapsed = time.monotonic() - started
    assert run.returncode != 0, run.stdout + run.stderr
    # The server's agent_lost_after is 60 s in the harness: retrying would take that long.
    assert elapsed < 30, f"took {elapsed:.1f}s: the engine retried a permanent refusal"
    (task,) = server.cli_json("task", "list")
    shown = json.loads(server.cli("task", "show", task["id"], "--output", "json").stdout)
    (target,) = shown["targets"]
    assert target["state"] == "failed_to_start", target
    assert "refused" in target["message"], target
