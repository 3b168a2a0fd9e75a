"""Deployments meeting lost agents: a cancel with one agent away, and a Tentacle that vanishes.

Cancel, one rule: the task is `cancelled` once every machine is confirmed killed by its
agent, never started, or has its cancel recorded for an agent that cannot be reached now
(that machine reads result_unknown, "cancel pending"); no wait of agent_lost_after for it.
A Tentacle that disappears mid-step ends its action result_unknown after agent_lost_after
(never "running forever"); with guided failure a person excludes it and the deployment goes on.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cluster import Cluster, Server, Tentacle, wait_for
from tests.integration.harness.tasks import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SETTINGS = {
    "agent_lost_after_seconds": 5.0,
    "agent_call_timeout_seconds": 3.0,
    "cancel_retry_interval_seconds": 0.5,
    "cancel_retry_max_interval_seconds": 2.0,
}

MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Fragile
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Long
          target_tags: [web-server]
          actions:
            - name: Long
              type: run_script
              script:
                body: |
                  echo "started on #{Octopus.Machine.Name}"
                  while [ ! -e "MARK" ]; do sleep 0.05; done
                  echo "finished on #{Octopus.Machine.Name}"
        - name: After
          target_tags: [web-server]
          actions:
            - name: After
              type: run_script
              script:
                body: |
                  echo "after on #{Octopus.Machine.Name}"
"""


def _signal(tentacle: Tentacle, sig: int) -> None:
    assert tentacle.process is not None
    assert tentacle.process.popen is not None
    # The Tentacle process alone, not its group: its script must keep running.
    os.kill(tentacle.process.popen.pid, sig)


def _start(cluster: Cluster, tmp_path: Path, *extra: str) -> tuple[Server, str, Path]:
    mark = tmp_path / "go"
    server = cluster.start_server(**SETTINGS)
    for name in ("web-01", "web-02"):
        cluster.add_tentacle(name, "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.replace("MARK", str(mark)))
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "Fragile", "--version", "1.0.0", check=True)
    out = server.cli(
        "deploy",
        "--project",
        "Fragile",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--output",
        "json",
        *extra,
        check=True,
    )
    task_id = json.loads(out.stdout)["task_id"]
    wait_for(
        lambda: {"started on web-01", "started on web-02"} <= set(log_lines(server, task_id)),
        60,
        "both scripts to start",
    )
    return server, task_id, mark


def _show(server: Server, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = json.loads(
        server.cli("task", "show", task_id, "--output", "json", check=True).stdout
    )
    return task


def _machines(task: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    by_id = {n["id"]: n for n in task["nodes"]}
    return {
        (by_id[n["parent_id"]]["name"], n["name"]): n
        for n in task["nodes"]
        if n["kind"] == "machine"
    }


def test_a_cancel_with_one_agent_away_ends_cancelled_with_its_cancel_pending(
    cluster: Cluster, tmp_path: Path
) -> None:
    server, task_id, mark = _start(cluster, tmp_path)
    away = cluster.tentacles["web-02"]
    _signal(away, signal.SIGSTOP)
    try:
        server.cli("task", "cancel", task_id, check=True)

        def ended() -> dict[str, Any] | None:
            task = _show(server, task_id)
            return task if task["state"] == "cancelled" else None

        # Well before agent_lost_after (5 s) twice over plus the call timeout: no such wait.
        task = wait_for(ended, 60, "the deployment to be cancelled")
        machines = _machines(task)
        assert machines[("Long", "web-01")]["state"] == "cancelled"
        pending = machines[("Long", "web-02")]
        assert pending["state"] == "result_unknown", pending
        assert "cancel pending" in pending["reason"], pending
        assert machines[("After", "web-01")]["state"] == "skipped"
    finally:
        _signal(away, signal.SIGCONT)
    mark.touch()  # nothing may still be waiting for it; the pending cancel kills web-02's


def test_a_vanished_tentacle_is_result_unknown_and_a_person_can_exclude_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    server, task_id, mark = _start(cluster, tmp_path, "--guided-failure", "on")
    gone = cluster.tentacles["web-02"]
    assert gone.process is not None
    gone.process.kill()
    mark.touch()

    def asked() -> dict[str, Any] | None:
        out = server.cli("interruption", "list", "--task", task_id, "--output", "json")
        found = [i for i in json.loads(out.stdout) if i["machine"] == "web-02"]
        return found[0] if found else None

    interruption = wait_for(asked, 90, "a guided failure for the vanished machine")
    assert "result unknown" in interruption["title"], interruption
    assert "safe to retry" not in interruption["title"]
    server.cli("interruption", "respond", interruption["id"], "--exclude-machine", check=True)

    def finished() -> dict[str, Any] | None:
        task = _show(server, task_id)
        return task if task["state"] == "success" else None

    task = wait_for(finished, 60, "the deployment to go on without web-02", interval=0.5)
    machines = _machines(task)
    assert machines[("Long", "web-02")]["state"] == "excluded"
    assert machines[("After", "web-01")]["state"] == "success"
    assert machines[("After", "web-02")]["state"] == "skipped"
