"""A server SIGKILLed mid-deployment resumes it: nothing rerun, nothing lost, nothing doubled.

A rolling step (window 1) over four machines, one of them polling. Each machine's script
writes that it started, prints numbered lines, waits for its own marker file, and prints more.
The server is killed while the second machine's script waits; after the restart the task
resumes by itself: the first machine's action is not run again, the second's script is
re-attached by its ticket (never started twice), the others run, and the log holds every line
of every machine exactly once, in order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.harness.cluster import Cluster, wait_for
from tests.integration.harness.tasks import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MACHINES = (
    ("web-01", "listening"),
    ("web-02", "polling"),
    ("web-03", "listening"),
    ("web-04", "listening"),
)


def _model(marks: Path, starts: Path) -> str:
    body = "\n".join(
        [
            f'echo "#{{Octopus.Machine.Name}}" >> "{starts}"',
            'for i in $(seq 1 300); do echo "#{Octopus.Machine.Name} line $i"; done',
            f'while [ ! -e "{marks}/#{{Octopus.Machine.Name}}" ]; do sleep 0.05; done',
            'for i in $(seq 301 600); do echo "#{Octopus.Machine.Name} line $i"; done',
        ]
    )
    indented = "\n".join("                  " + line for line in body.splitlines())
    return f"""
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Resumable
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Roll
          target_tags: [web-server]
          window_size: 1
          actions:
            - name: Deploy
              type: run_script
              script:
                body: |
{indented}
"""


def test_a_server_killed_in_a_rolling_step_resumes_the_deployment(
    cluster: Cluster, tmp_path: Path
) -> None:
    marks, starts = tmp_path / "marks", tmp_path / "starts.txt"
    marks.mkdir()
    server = cluster.start_server()
    for name, style in MACHINES:
        cluster.add_tentacle(name, style, environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(_model(marks, starts))
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "Resumable", "--version", "1.0.0", check=True)
    (marks / "web-01").touch()  # the first machine runs through
    queued = server.cli(
        "deploy",
        "--project",
        "Resumable",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--output",
        "json",
        check=True,
    )
    task_id = json.loads(queued.stdout)["task_id"]

    def second_is_waiting() -> bool:
        lines = log_lines(server, task_id)
        return "web-02 line 300" in lines

    wait_for(second_is_waiting, 60, "web-02 to print its first half", interval=0.2)
    assert server.process is not None
    server.process.kill()
    # While the server is down, web-02's script is released and finishes on its own.
    (marks / "web-02").touch()
    server.start()
    for name in ("web-03", "web-04"):
        (marks / name).touch()

    def finished() -> dict[str, object] | None:
        task = json.loads(server.cli("task", "show", task_id, "--output", "json").stdout)
        return task if task["state"] not in ("queued", "running") else None

    task = wait_for(finished, 120, "the resumed deployment to finish", interval=0.5)
    assert task["state"] == "success", task
    machines = [n for n in task["nodes"] if n["kind"] == "machine"]
    assert sorted(n["name"] for n in machines) == [m for m, _ in MACHINES]
    # No machine's action ran twice: one run each, each script started once.
    assert all(n["attempts"] == 1 and n["state"] == "success" for n in machines), machines
    assert sorted(starts.read_text().split()) == [m for m, _ in MACHINES]

    lines = log_lines(server, task_id)
    for name, _ in MACHINES:
        numbers = [
            int(m.group(1)) for line in lines if (m := re.fullmatch(rf"{name} line (\d+)", line))
        ]
        assert numbers == list(range(1, 601)), (name, len(numbers), numbers[:3], numbers[-3:])
    log = (server.home / "server.log").read_text()
    assert "task_resumed" in log
