"""Deployments end to end: a release through its lifecycle onto real Tentacles.

The seed example of the engine issue: a rolling step over three web servers (one polling),
window 1, whose sanity test sets an output variable that a machine-level condition of the
next action reads. The machine whose sanity test says False is not added back; the others
are; the log says why; each machine finishes all its actions before the next one starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cluster import Cluster, Server, wait_for
from tests.integration.harness.tasks import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# The seed example's condition, as Octopus users write it.
CONDITION = (
    "#{if Octopus.Action[Sanity Test Web Service].Output[#{Octopus.Machine.Name}]"
    '.ShouldAddBackToWebFarm == "True"}True#{/if}'
)
# Script bodies are block scalars: in YAML, " #" starts a comment.
MODEL = """
environments:
  - name: Dev
  - name: Test
lifecycles:
  - name: Dev then Test
    phases:
      - name: Development
        optional_environments: [Dev]
      - name: Testing
        optional_environments: [Test]
projects:
  - name: Trading Website
    lifecycle: Dev then Test
    channels:
      - name: Default
        is_default: true
    variables:
      - name: Greeting
        value: hello-dev
        scope:
          environments: [Dev]
    process:
      steps:
        - name: Trading Website Rolling
          target_tags: [web-server]
          window_size: 1
          actions:
            - name: Remove from load balancer
              type: run_script
              script:
                body: |
                  echo "removing #{Octopus.Machine.Name}"
            - name: Deploy
              type: run_script
              script:
                body: |
                  echo "deploying #{Octopus.Release.Number} #{Greeting} on #{Octopus.Machine.Name}"
            - name: Sanity Test Web Service
              type: run_script
              script:
                body: |
                  ok=True
                  if [ "#{Octopus.Machine.Name}" = "web-02" ]; then ok=False; fi
                  echo "sanity #{Octopus.Machine.Name} $ok"
                  set_octopusvariable "ShouldAddBackToWebFarm" "$ok"
            - name: Add back to web farm
              type: run_script
              machine_condition: 'CONDITION'
              script:
                body: |
                  echo "added back #{Octopus.Machine.Name}"
        - name: Only after a failure
          target_tags: [web-server]
          condition: failure
          actions:
            - name: Page someone
              type: run_script
              script:
                body: |
                  echo "paging"
        - name: Report
          target_tags: [web-server]
          condition: always
          actions:
            - name: Report
              type: run_script
              script:
                body: |
                  rolled="#{Octopus.Step[Trading Website Rolling].Status.Code}"
                  paged="#{Octopus.Step[Only after a failure].Status.Code}"
                  current="#{Octopus.Release.CurrentForEnvironment.Number}"
                  echo "report rolled=$rolled paged=$paged current=$current"
                  write_warning "report written"
        - name: Production only
          target_tags: [web-server]
          actions:
            - name: Prod thing
              type: run_script
              environments: [Test]
              script:
                body: |
                  echo "should not run in Dev"
"""


@pytest.fixture
def deployed(cluster: Cluster, tmp_path: Path) -> tuple[Server, dict[str, Any]]:
    server = cluster.start_server()
    for name, style in (("web-01", "listening"), ("web-02", "polling"), ("web-03", "listening")):
        cluster.add_tentacle(name, style, environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.replace("CONDITION", CONDITION))
    server.cli("apply", "-f", str(model), check=True)
    server.cli(
        "release", "create", "--project", "Trading Website", "--version", "1.4.0", check=True
    )
    run = server.cli(
        "deploy",
        "--project",
        "Trading Website",
        "--release",
        "1.4.0",
        "--environment",
        "Dev",
        "--wait",
        "--wait-timeout",
        "150",
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    task_id = next(
        line.split("task ", 1)[1].split(" ", 1)[0]
        for line in run.stderr.splitlines()
        if line.startswith("Deploying: task ")
    )
    task = json.loads(server.cli("task", "show", task_id, "--output", "json", check=True).stdout)
    return server, task


def _nodes(task: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Machine nodes by (action, machine), and step and action nodes by (name, '')."""
    by_id = {n["id"]: n for n in task["nodes"]}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for node in task["nodes"]:
        if node["kind"] == "machine":
            found[(by_id[node["parent_id"]]["name"], node["name"])] = node
        else:
            found[(node["name"], "")] = node
    return found


def test_the_seed_example_rolls_out_and_a_failed_sanity_test_keeps_a_machine_out(
    deployed: tuple[Server, dict[str, Any]],
) -> None:
    server, task = deployed
    assert task["state"] == "success", task
    # The Report step wrote a warning: success with warnings.
    assert task["has_warnings"] is True, task
    nodes = _nodes(task)
    assert nodes[("Trading Website Rolling", "")]["state"] == "success"
    for machine in ("web-01", "web-02", "web-03"):
        for action in ("Remove from load balancer", "Deploy", "Sanity Test Web Service"):
            assert nodes[(action, machine)]["state"] == "success", (action, machine)
    assert nodes[("Add back to web farm", "web-01")]["state"] == "success"
    assert nodes[("Add back to web farm", "web-03")]["state"] == "success"
    kept_out = nodes[("Add back to web farm", "web-02")]
    assert kept_out["state"] == "skipped", kept_out
    assert "machine condition is false" in kept_out["reason"]
    sanity = nodes[("Sanity Test Web Service", "web-02")]
    assert [(v["name"], v["value"]) for v in sanity["output_variables"]] == [
        ("ShouldAddBackToWebFarm", "False")
    ]
    # The failure-only step did not run; the action scoped to Test made its step skip.
    assert nodes[("Only after a failure", "")]["state"] == "skipped"
    assert "earlier step failed" in nodes[("Only after a failure", "")]["reason"]
    assert nodes[("Production only", "")]["state"] == "skipped"

    lines = log_lines(server, task["id"])
    # System variables of the deployment: how earlier steps ended, what the environment had.
    assert "report rolled=Succeeded paged=Skipped current=" in lines, lines
    assert "added back web-01" in lines
    assert "added back web-03" in lines
    assert "added back web-02" not in lines
    assert "deploying 1.4.0 hello-dev on web-02" in lines
    assert not any("paging" in line or "should not run" in line for line in lines)
    assert any("machine condition is false on web-02" in line for line in lines)
    # Rolling, one at a time: each machine ran all its actions before the next began.
    order = [
        line.split()[-1]
        for line in lines
        if line.startswith(("removing ", "added back ")) or line.startswith("sanity ")
    ]
    firsts = [order.index(m) for m in ("web-01", "web-02", "web-03")]
    lasts = [len(order) - 1 - order[::-1].index(m) for m in ("web-01", "web-02", "web-03")]
    assert lasts[0] < firsts[1], order
    assert lasts[1] < firsts[2], order


def test_the_lifecycle_and_the_plan_are_checked_before_anything_runs(
    deployed: tuple[Server, dict[str, Any]],
) -> None:
    server, _ = deployed
    server.cli(
        "release", "create", "--project", "Trading Website", "--version", "1.5.0", check=True
    )
    # Test comes after Dev: 1.5.0 has not been to Dev.
    early = server.cli(
        "deploy", "--project", "Trading Website", "--release", "1.5.0", "--environment", "Test"
    )
    assert early.returncode != 0
    assert "cannot be deployed to Test yet" in early.stderr, early.stderr
    # 1.4.0 has: Test is allowed, but no machine there has the tag.
    nothing = server.cli(
        "deploy", "--project", "Trading Website", "--release", "1.4.0", "--environment", "Test"
    )
    assert nothing.returncode != 0
    assert "finds no enabled, available machine with target tag web-server in Test" in (
        nothing.stderr
    ), nothing.stderr
    plan = server.cli(
        "deploy",
        "--project",
        "Trading Website",
        "--release",
        "1.5.0",
        "--environment",
        "Dev",
        "--dry-run",
        "--exclude-machine",
        "web-03",
        "--skip-step",
        "Only after a failure",
    )
    assert plan.returncode == 0, plan.stderr
    assert "1. Trading Website Rolling (rolling, 1 at a time) on web-01, web-02" in plan.stdout
    assert "2. Only after a failure: skipped, the person deploying chose to skip it" in (
        plan.stdout
    )
    assert "Prod thing (run_script): skipped, it runs only in Test" in plan.stdout
    tasks_after = json.loads(server.cli("task", "list", "--output", "json", check=True).stdout)
    assert len(tasks_after) == 1  # the dry run and the refusals stored nothing


def test_promote_rerun_and_the_tree_as_people_read_it(
    deployed: tuple[Server, dict[str, Any]],
) -> None:
    server, first = deployed
    # Promote takes what succeeded in Dev: 1.4.0; Test has no machine with the tag.
    promoted = server.cli(
        "promote", "--project", "Trading Website", "--from", "Dev", "--to", "Test", "--dry-run"
    )
    assert promoted.returncode != 0
    # It chose 1.4.0, which the lifecycle lets into Test: the refusal is about machines.
    assert "cannot be deployed to Test yet" not in promoted.stderr
    assert "target tag web-server in Test" in promoted.stderr, promoted.stderr
    nothing = server.cli("promote", "--project", "Trading Website", "--from", "Test", "--to", "Dev")
    assert nothing.returncode != 0
    assert "nothing of Trading Website was deployed with success to Test yet" in nothing.stderr

    rerun = server.cli("task", "rerun", first["id"], "--output", "json", check=True)
    again = json.loads(rerun.stdout)["task_id"]
    assert again != first["id"]

    def finished() -> dict[str, Any] | None:
        task: dict[str, Any] = json.loads(
            server.cli("task", "show", again, "--output", "json", check=True).stdout
        )
        return task if task["state"] == "success" else None

    wait_for(finished, 120, "the rerun to succeed", interval=0.5)
    shown = server.cli("task", "show", again, check=True).stdout
    assert "Trading Website Rolling: success" in shown
    assert "skipped - its machine condition is false on web-02" in shown
    assert "output ShouldAddBackToWebFarm = False" in shown


HEALTH_MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Checked
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Check
          target_tags: [web-server]
          actions:
            - name: Check
              type: health_check
              properties:
                Octopus.Action.HealthCheck.ExcludeUnavailable: "True"
        - name: Work
          target_tags: [web-server]
          actions:
            - name: Work
              type: run_script
              script:
                body: |
                  echo "work on #{Octopus.Machine.Name}"
"""


def test_a_health_check_step_excludes_an_unavailable_machine(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    for name in ("web-01", "web-02"):
        cluster.add_tentacle(name, "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(HEALTH_MODEL)
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "Checked", "--version", "1.0.0", check=True)
    down = cluster.tentacles["web-02"].process
    assert down is not None
    down.stop()
    run = server.cli(
        "deploy",
        "--project",
        "Checked",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--wait",
        "--output",
        "json",
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    final = json.loads(run.stdout.splitlines()[-1])["finished"]
    nodes = _nodes(final)
    assert nodes[("Check", "web-01")]["state"] == "success"
    assert nodes[("Check", "web-02")]["state"] == "excluded"
    assert nodes[("Work", "web-01")]["state"] == "success"
    assert nodes[("Work", "web-02")]["state"] == "skipped"
    lines = log_lines(server, final["id"])
    assert "work on web-01" in lines
    assert not any(line == "work on web-02" for line in lines)


RUNBOOK_MODEL = """
environments:
  - name: Dev
  - name: Production
lifecycles:
  - name: Prod last
    phases:
      - name: Development
        optional_environments: [Dev]
      - name: Live
        optional_environments: [Production]
projects:
  - name: Ops
    lifecycle: Prod last
    channels:
      - name: Default
        is_default: true
    variables:
      - name: Who
        value: operator
    runbooks:
      - name: Restart web
        environments: [Production]
        process:
          steps:
            - name: Restart
              target_tags: [web-server]
              actions:
                - name: Restart
                  type: run_script
                  script:
                    body: |
                      echo "restart by #{Who} in #{Octopus.Environment.Name}"
"""


def test_a_runbook_runs_its_published_snapshot_where_it_is_allowed(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle(
        "web-01", "listening", environments=("Dev", "Production"), roles=("web-server",)
    )
    model = tmp_path / "model.yaml"
    model.write_text(RUNBOOK_MODEL)
    server.cli("apply", "-f", str(model), check=True)
    unpublished = server.cli(
        "runbook", "run", "--project", "Ops", "--runbook", "Restart web", "--environment", "Dev"
    )
    assert unpublished.returncode != 0
    assert "no published snapshot" in unpublished.stderr, unpublished.stderr
    server.cli("runbook", "publish", "--project", "Ops", "--runbook", "Restart web", check=True)
    elsewhere = server.cli(
        "runbook", "run", "--project", "Ops", "--runbook", "Restart web", "--environment", "Dev"
    )
    assert elsewhere.returncode != 0
    assert "runs only in Production, not Dev" in elsewhere.stderr, elsewhere.stderr
    # No release and no lifecycle: Production straight away.
    ran = server.cli(
        "runbook",
        "run",
        "--project",
        "Ops",
        "--runbook",
        "Restart web",
        "--environment",
        "Production",
        "--wait",
        "--output",
        "json",
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    final = json.loads(ran.stdout.splitlines()[-1])["finished"]
    assert final["state"] == "success"
    assert final["kind"] == "runbook"
    assert "restart by operator in Production" in log_lines(server, final["id"])


TENANT_MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Shop
    lifecycle: Only Dev
    tenanted_mode: tenanted
    channels:
      - name: Default
        is_default: true
    variables:
      - name: Greeting
        value: hello-everyone
    process:
      steps:
        - name: Greet
          target_tags: [web-server]
          actions:
            - name: Greet
              type: run_script
              script:
                body: |
                  tenant="#{Octopus.Deployment.Tenant.Name}"
                  echo "#{Greeting} from $tenant on #{Octopus.Machine.Name}"
tenants:
  - name: Acme
    projects:
      - project: Shop
        environments: [Dev]
    variables:
      - name: Greeting
        value: hello-acme
"""


def test_a_tenanted_deployment_runs_on_the_tenants_machines_with_its_values(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    for name in ("web-01", "web-02"):
        cluster.add_tentacle(name, "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(TENANT_MODEL)
    server.cli("apply", "-f", str(model), check=True)
    server.cli(
        "machine",
        "update",
        "web-01",
        "--tenant",
        "Acme",
        "--tenanted-mode",
        "tenanted",
        check=True,
    )
    server.cli("release", "create", "--project", "Shop", "--version", "1.0.0", check=True)
    untenanted = server.cli(
        "deploy", "--project", "Shop", "--release", "1.0.0", "--environment", "Dev"
    )
    assert untenanted.returncode != 0
    assert "say which with --tenant" in untenanted.stderr, untenanted.stderr
    run = server.cli(
        "deploy",
        "--project",
        "Shop",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--tenant",
        "Acme",
        "--wait",
        "--output",
        "json",
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    final = json.loads(run.stdout.splitlines()[-1])["finished"]
    machines = [n["name"] for n in final["nodes"] if n["kind"] == "machine"]
    assert machines == ["web-01"]
    assert "hello-acme from Acme on web-01" in log_lines(server, final["id"])
