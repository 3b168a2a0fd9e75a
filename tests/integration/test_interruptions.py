"""People in the loop: manual intervention and guided failure, answered through the real CLI.

A deployment first waits for an approval (the task is `waiting`, the approval's notes become
output variables), then a rolling step fails: with guided failure on, each failing machine
waits for its own answer. Retry runs the action again on that machine (a new run, the first
kept); Exclude machine leaves the machine out of the rest of the deployment, which goes on
and says so in Octopus.Deployment.ExcludedMachines. An abort fails the deployment and only
`always` steps run after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cluster import Cluster, Server, wait_for
from tests.integration.harness.tasks import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _model(mark: Path) -> str:
    return f"""
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Careful
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Approve
          actions:
            - name: Approve
              type: manual_intervention
              instructions: "Check #{{Octopus.Environment.Name}} first."
        - name: Flaky
          target_tags: [web-server]
          window_size: 1
          actions:
            - name: Flaky
              type: run_script
              retry_delay_seconds: 0
              script:
                body: |
                  if [ "#{{Octopus.Machine.Name}}" = web-02 ]; then echo "web-02 broke"; exit 4; fi
                  if [ ! -e "{mark}" ]; then echo "not yet"; exit 3; fi
                  echo "flaky ok on #{{Octopus.Machine.Name}}"
        - name: After
          target_tags: [web-server]
          condition: always
          actions:
            - name: After
              type: run_script
              script:
                body: |
                  excluded="#{{Octopus.Deployment.ExcludedMachines}}"
                  notes="#{{Octopus.Action[Approve].Output.Manual.Notes}}"
                  by="#{{Octopus.Action[Approve].Output.Manual.ResponsibleUser.Username}}"
                  echo "after on #{{Octopus.Machine.Name}} excluded=$excluded notes=$notes by=$by"
"""


def _open(server: Server, task_id: str) -> list[dict[str, Any]]:
    out = server.cli("interruption", "list", "--task", task_id, "--output", "json", check=True)
    found: list[dict[str, Any]] = json.loads(out.stdout)
    return found


def _wait_open(server: Server, task_id: str, kind: str, machine: str = "") -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for item in _open(server, task_id):
            if item["kind"] == kind and item["machine"] == machine:
                return item
        return None

    item: dict[str, Any] = wait_for(found, 60, f"an open {kind} on {machine or 'the task'}")
    return item


def _task(server: Server, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = json.loads(
        server.cli("task", "show", task_id, "--output", "json", check=True).stdout
    )
    return task


def _deploy(cluster: Cluster, tmp_path: Path) -> tuple[Server, str, Path]:
    mark = tmp_path / "fixed"
    server = cluster.start_server()
    for name, style in (("web-01", "listening"), ("web-02", "polling")):
        cluster.add_tentacle(name, style, environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(_model(mark))
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "Careful", "--version", "1.0.0", check=True)
    queued = server.cli(
        "deploy",
        "--project",
        "Careful",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--guided-failure",
        "on",
        "--output",
        "json",
        check=True,
    )
    return server, json.loads(queued.stdout)["task_id"], mark


def test_approval_retry_and_exclusion_each_answered_by_a_person(
    cluster: Cluster, tmp_path: Path
) -> None:
    server, task_id, mark = _deploy(cluster, tmp_path)

    approval = _wait_open(server, task_id, "manual_intervention")
    assert approval["responses"] == ["proceed", "abort"]
    assert approval["instructions"] == "Check Dev first."
    waiting = _task(server, task_id)
    assert waiting["state"] == "waiting", waiting
    assert "waiting for a person: approve 'Approve'" in waiting["waiting_reason"]
    proceeded = server.cli(
        "interruption",
        "respond",
        approval["id"],
        "--proceed",
        "--note",
        "looks-good",
        "--output",
        "json",
        check=True,
    )
    answered = json.loads(proceeded.stdout)
    assert answered["id"] == approval["id"]
    assert answered["response"] == "proceed", answered
    assert answered["note"] == "looks-good", answered
    # A second answer to the same interruption is refused: one answer wins.
    again = server.cli("interruption", "respond", approval["id"], "--abort")
    assert again.returncode != 0
    assert "already answered" in again.stderr, again.stderr

    failed = _wait_open(server, task_id, "guided_failure", "web-01")
    assert failed["responses"] == ["retry", "ignore", "fail", "exclude_machine"]
    assert "exit code 3" in failed["title"], failed
    mark.touch()
    server.cli("interruption", "respond", failed["id"], "--retry", check=True)

    broken = _wait_open(server, task_id, "guided_failure", "web-02")
    refused = server.cli("interruption", "respond", broken["id"], "--proceed")
    assert refused.returncode != 0
    assert "offers retry, ignore, fail, exclude_machine, not proceed" in refused.stderr
    server.cli("interruption", "respond", broken["id"], "--exclude-machine", check=True)

    def finished() -> dict[str, Any] | None:
        task = _task(server, task_id)
        done = task["state"] in ("success", "failed")
        return task if done else None

    task = wait_for(finished, 90, "the deployment to finish", interval=0.5)
    assert task["state"] == "success", task
    by_id = {n["id"]: n for n in task["nodes"]}
    machines = {
        (by_id[n["parent_id"]]["name"], n["name"]): n
        for n in task["nodes"]
        if n["kind"] == "machine"
    }
    assert machines[("Flaky", "web-01")]["state"] == "success"
    assert machines[("Flaky", "web-01")]["attempts"] == 2  # the failed run is kept
    assert machines[("Flaky", "web-02")]["state"] == "excluded"
    assert machines[("After", "web-01")]["state"] == "success"
    assert machines[("After", "web-02")]["state"] == "skipped"
    lines = log_lines(server, task_id)
    approver = json.loads(
        server.cli("interruption", "list", "--task", task_id, "--all", "--output", "json").stdout
    )[0]["answered_by"]
    assert approver  # the API key's principal, as the audit trail names it
    assert f"after on web-01 excluded=web-02 notes=looks-good by={approver}" in lines, lines
    assert not any(line.startswith("after on web-02") for line in lines)
    assert _open(server, task_id) == []


def test_an_aborted_approval_fails_the_deployment_and_runs_only_always_steps(
    cluster: Cluster, tmp_path: Path
) -> None:
    server, task_id, _ = _deploy(cluster, tmp_path)
    approval = _wait_open(server, task_id, "manual_intervention")
    server.cli(
        "interruption", "respond", approval["id"], "--abort", "--note", "not today", check=True
    )

    def finished() -> dict[str, Any] | None:
        task = _task(server, task_id)
        return task if task["state"] not in ("running", "waiting") else None

    task = wait_for(finished, 90, "the deployment to end", interval=0.5)
    assert task["state"] == "failed", task
    steps = {n["name"]: n for n in task["nodes"] if n["kind"] == "step"}
    assert steps["Approve"]["state"] == "failed"
    assert "not today" in steps["Approve"]["reason"]
    assert "aborted by " in steps["Approve"]["reason"]
    assert steps["Flaky"]["state"] == "skipped"
    assert steps["After"]["state"] == "success"


def test_open_interruptions_survive_a_server_sigkill(cluster: Cluster, tmp_path: Path) -> None:
    server, task_id, mark = _deploy(cluster, tmp_path)
    assert server.process is not None

    approval = _wait_open(server, task_id, "manual_intervention")
    server.process.kill()
    server.start()
    # Still open after the restart, same id; the task still waits for it.
    assert _wait_open(server, task_id, "manual_intervention")["id"] == approval["id"]
    assert _task(server, task_id)["state"] == "waiting"
    server.cli("interruption", "respond", approval["id"], "--proceed", check=True)

    failed = _wait_open(server, task_id, "guided_failure", "web-01")
    server.process.kill()
    # Answered while no server runs it: not possible, so answer after the restart, and the
    # resumed runner must not open a second interruption for the same failure.
    server.start()
    again = _wait_open(server, task_id, "guided_failure", "web-01")
    assert again["id"] == failed["id"]
    mark.touch()
    server.cli("interruption", "respond", failed["id"], "--retry", check=True)
    broken = _wait_open(server, task_id, "guided_failure", "web-02")
    server.cli("interruption", "respond", broken["id"], "--ignore", check=True)

    def finished() -> dict[str, Any] | None:
        task = _task(server, task_id)
        done = task["state"] in ("success", "failed")
        return task if done else None

    task = wait_for(finished, 120, "the resumed deployment to finish", interval=0.5)
    assert task["state"] == "success", task
    by_id = {n["id"]: n for n in task["nodes"]}
    machines = {
        (by_id[n["parent_id"]]["name"], n["name"]): n
        for n in task["nodes"]
        if n["kind"] == "machine"
    }
    # web-01's first run failed before the kills; the retry is its second; nothing more.
    assert machines[("Flaky", "web-01")]["attempts"] == 2
    assert machines[("Flaky", "web-02")]["state"] == "success"  # ignored
    assert "ignore" in machines[("Flaky", "web-02")]["reason"]
    listed = json.loads(
        server.cli("interruption", "list", "--task", task_id, "--all", "--output", "json").stdout
    )
    assert [i["response"] for i in listed] == ["proceed", "retry", "ignore"]
