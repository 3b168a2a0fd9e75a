"""An automatic phase deploys when it opens, as in Octopus.

Creating a release deploys it to the first phase's automatic environment; its success opens
the next phase, whose automatic environment is deployed in turn. A phase whose automatic
deployment cannot be planned (no machine there) starts nothing and says why in the audit trail.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness.cluster import Cluster, wait_for
from tests.integration.harness.tasks import finished_task, log_lines

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


TENANTED = """
environments:
  - name: Dev
  - name: Test
lifecycles:
  - name: Automatic
    phases:
      - name: Development
        automatic_environments: [Dev]
      - name: Testing
        automatic_environments: [Test]
projects:
  - name: Shop
    lifecycle: Automatic
    tenanted_mode: tenanted
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
                  where="#{Octopus.Deployment.Tenant.Name} to #{Octopus.Environment.Name}"
                  echo "deployed $where"
                  if [ "$where" = "Globex to Dev" ]; then exit 3; fi
tenants:
  - name: Acme
    projects:
      - project: Shop
        environments: [Dev, Test]
  - name: Globex
    projects:
      - project: Shop
        environments: [Dev, Test]
"""


def test_each_tenant_goes_through_automatic_phases_on_its_own(
    cluster: Cluster, tmp_path: Any
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening", environments=("Dev", "Test"), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(TENANTED)
    server.cli("apply", "-f", str(model), check=True)
    server.cli(
        "machine",
        "update",
        "web-01",
        "--tenant",
        "Acme",
        "--tenant",
        "Globex",
        "--tenanted-mode",
        "tenanted",
        check=True,
    )
    server.cli("release", "create", "--project", "Shop", "--version", "1.0.0", check=True)

    def three_finished() -> list[dict[str, Any]] | None:
        tasks = server.cli_json("task", "list")
        if len(tasks) < 3:
            return None
        done = [finished_task(server, t["id"]) for t in tasks]
        return None if any(t is None for t in done) else [t for t in done if t is not None]

    tasks = wait_for(three_finished, 120, "both tenants' Dev, then Acme's Test", interval=0.5)
    outcomes = sorted(
        (line, t["state"])
        for t in tasks
        for line in log_lines(server, t["id"])
        if line.startswith("deployed ")
    )
    # Acme's success opened Testing for Acme only; Globex failed in Dev and stays there.
    assert outcomes == [
        ("deployed Acme to Dev", "success"),
        ("deployed Acme to Test", "success"),
        ("deployed Globex to Dev", "failed"),
    ]
    assert len(server.cli_json("task", "list")) == 3
    refused = server.cli(
        "deploy",
        "--project",
        "Shop",
        "--release",
        "1.0.0",
        "--environment",
        "Test",
        "--tenant",
        "Globex",
    )
    assert refused.returncode != 0
    assert "cannot be deployed to Test for tenant Globex yet" in refused.stderr, refused.stderr
