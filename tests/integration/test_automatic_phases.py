"""An automatic phase deploys when it opens, as in Octopus.

Creating a release deploys it to the first phase's automatic environment; its success opens
the next phase, whose automatic environment is deployed in turn. A phase whose automatic
deployment cannot be planned (no machine there) starts nothing and says why in the audit trail.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness.cluster import Cluster, wait_for
from tests.integration.harness.tasks import finished_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MODEL = """
environments:
  - name: Dev
  - name: Test
  - name: Production
lifecycles:
  - name: Automatic
    phases:
      - name: Development
        automatic_environments: [Dev]
      - name: Testing
        automatic_environments: [Test]
      - name: Production
        automatic_environments: [Production]
projects:
  - name: Auto
    lifecycle: Automatic
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Say
          target_tags: [web-server]
          actions:
            - name: Say
              type: run_script
              script:
                body: |
                  echo "deployed to #{Octopus.Environment.Name}"
"""


def test_a_release_rolls_through_automatic_phases_by_itself(
    cluster: Cluster, tmp_path: Any
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening", environments=("Dev", "Test"), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(MODEL)
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "Auto", "--version", "1.0.0", check=True)

    def both_finished() -> list[dict[str, Any]] | None:
        tasks = server.cli_json("task", "list")
        if len(tasks) < 2:
            return None
        done = [finished_task(server, t["id"]) for t in tasks]
        return None if any(t is None for t in done) else [t for t in done if t is not None]

    tasks = wait_for(both_finished, 120, "Dev and then Test to be deployed", interval=0.5)
    assert sorted(t["description"] for t in tasks) == [
        "Deploy Auto release 1.0.0 to Dev",
        "Deploy Auto release 1.0.0 to Test",
    ]
    assert all(t["state"] == "success" for t in tasks), tasks
    assert {t["started_by"] for t in tasks} == {"lifecycle (automatic)"}
    # Production has no machine: its automatic deployment is not queued, and the trail says why.
    assert len(server.cli_json("task", "list")) == 2
    events = server.cli_json("events")
    refused = [e for e in events if "was not started" in e["message"]]
    assert len(refused) == 1, events
    assert "to Production was not started" in refused[0]["message"]
    assert "finds no enabled, available machine with target tag web-server" in refused[0]["message"]
