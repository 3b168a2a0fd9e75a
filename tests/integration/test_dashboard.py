"""`cuttle dashboard` through a real server, a real Tentacle and the real CLI.

Two deployments of project Web to Dev, the first succeeding and the second failing: Dev's cell
shows the failed release with the last good one beside it; a project never deployed has a row
of empty cells; a viewer limited to one project and environment sees only that.
"""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.cluster import BIN, Cluster, Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# The release snapshots EXIT_CODE when it is made: 1.0.0 exits 0, 1.1.0 exits 3.
MODEL = """
environments:
  - name: Dev
  - name: Test
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        optional_environments: [Dev, Test]
users:
  - name: viewer
teams:
  - name: Watchers
    members: [viewer]
    grants:
      - role: view
        projects: [Web]
        environments: [Dev]
projects:
  - name: Web
    lifecycle: Anywhere
    channels:
      - name: Default
        is_default: true
    variables:
      - name: ExitCode
        value: "EXIT_CODE"
    process:
      steps:
        - name: Run
          target_tags: [web]
          actions:
            - name: Script
              type: run_script
              script:
                body: |
                  echo "exiting #{ExitCode}"
                  exit #{ExitCode}
  - name: Api
    lifecycle: Anywhere
    channels:
      - name: Default
        is_default: true
"""


def _apply(server: Server, tmp_path: Path, exit_code: int) -> None:
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.replace("EXIT_CODE", str(exit_code)))
    server.cli("apply", "-f", str(model), check=True)


def _deploy(server: Server, version: str) -> int:
    run = server.cli(
        "deploy",
        "--project",
        "Web",
        "--release",
        version,
        "--environment",
        "Dev",
        "--wait",
        "--wait-timeout",
        "120",
        timeout=150,
    )
    return run.returncode


def _cells(board: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["project"], c["environment"]): c for c in board["cells"]}


def test_the_dashboard_shows_the_failed_release_and_the_last_good_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening", environments=("Dev", "Test"), roles=("web",))
    _apply(server, tmp_path, 0)
    server.cli("release", "create", "--project", "Web", "--version", "1.0.0", check=True)
    assert _deploy(server, "1.0.0") == 0
    _apply(server, tmp_path, 3)
    server.cli("release", "create", "--project", "Web", "--version", "1.1.0", check=True)
    assert _deploy(server, "1.1.0") == 1

    board = server.cli_json("dashboard")
    assert board["projects"] == ["Web", "Api"]
    assert board["environments"] == ["Dev", "Test"]
    cells = _cells(board)
    assert set(cells) == {("Web", "Dev")}
    dev = cells["Web", "Dev"]
    assert dev["release"] == "1.1.0"
    assert dev["state"] == "failed"
    assert dev["last_success_release"] == "1.0.0"
    assert dev["tenant"] is None
    assert not dev["has_warnings"]
    for field in ("deployed_at", "finished_at", "last_success_at", "generated_at"):
        moment = dev.get(field) or board[field]
        assert datetime.fromisoformat(moment).utcoffset() is not None, field
    assert dev["deployed_at"] <= dev["finished_at"] <= board["generated_at"]
    assert dev["age_seconds"] >= 0

    table = ok(cuttle(server, "dashboard", env={"COLUMNS": "160"})).stdout
    assert "1.1.0" in table
    assert "failed" in table
    assert "last good 1.0.0" in table
    assert "Api" in table

    made = cuttle(server, "api-key", "create", "--user", "viewer", "--output", "json")
    as_viewer = {"CUTTLE_API_KEY": json.loads(ok(made).stdout)["api_key"]}
    seen = json.loads(ok(cuttle(server, "dashboard", "--output", "json", env=as_viewer)).stdout)
    assert (seen["projects"], seen["environments"]) == (["Web"], ["Dev"])
    assert _cells(seen)["Web", "Dev"]["release"] == "1.1.0"

    # --watch redraws until Ctrl-C, which ends it cleanly; in JSON, one document per redraw.
    with subprocess.Popen(
        [str(BIN / "cuttle"), "dashboard", "--watch", "--interval", "0.2", "--output", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server.cli_env(),
    ) as watch:
        try:
            assert watch.stdout is not None
            # The test's timeout bounds these reads.
            redraws = [json.loads(watch.stdout.readline()) for _ in range(2)]
            assert all(_cells(r)["Web", "Dev"]["state"] == "failed" for r in redraws)
            watch.send_signal(signal.SIGINT)
            _, stderr = watch.communicate(timeout=30)
            assert watch.returncode == 0, stderr
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()
