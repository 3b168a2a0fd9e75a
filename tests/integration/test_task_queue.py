"""The task queue: a per-node task cap, one deployment per project and environment, and every
wait explained (`waiting_reason`), through the real CLI and server."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cluster import BIN, Cluster, Server, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _tasks(server: Server) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.cli_json("task", "list")
    return found


def _show(server: Server, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = json.loads(
        server.cli("task", "show", task_id, "--output", "json", check=True).stdout
    )
    return task


def test_tasks_beyond_the_cap_queue_oldest_first_and_say_why(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server(task_cap=1)
    cluster.add_tentacle("web-01", "listening")
    mark = tmp_path / "go"
    first = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--"]
        + [f'while [ ! -e "{mark}" ]; do sleep 0.05; done; echo first'],
        env=server.cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(
            lambda: [t for t in _tasks(server) if t["state"] == "running"],
            30,
            "the first task to run",
        )
        second = subprocess.Popen(
            [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", "echo second"],
            env=server.cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def queued() -> dict[str, Any] | None:
            found = [t for t in _tasks(server) if t["state"] == "queued"]
            return found[0] if found and found[0].get("waiting_reason") else None

        waiting = wait_for(queued, 30, "the second task to queue with a reason")
        assert waiting["waiting_reason"] == "waiting for a task slot (1 of 1 busy)", waiting
        mark.touch()
        assert first.wait(60) == 0
        assert second.wait(60) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    done = _show(server, waiting["id"])
    assert done["state"] == "success"
    assert not done.get("waiting_reason")
    listed = subprocess.run(
        [str(BIN / "cuttle-server"), "node", "list", "--home", str(server.home)]
        + ["--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (node,) = json.loads(listed.stdout)
    assert node["task_cap"] == 1
    assert node["tasks"] == 0
    assert 0 <= node["heartbeat_age_seconds"] < 60


MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: One at a time
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Hold
          target_tags: [web-server]
          actions:
            - name: Hold
              type: run_script
              script:
                body: |
                  while [ ! -e "MARK" ]; do sleep 0.05; done
                  echo "done #{Octopus.Release.Number}"
"""


def test_a_second_deployment_of_a_project_and_environment_waits_for_the_first(
    cluster: Cluster, tmp_path: Path
) -> None:
    mark = tmp_path / "go"
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.replace("MARK", str(mark)))
    server.cli("apply", "-f", str(model), check=True)
    ids = []
    for version in ("1.0.0", "1.0.1"):
        server.cli("release", "create", "--project", "One at a time", "--version", version)
        out = server.cli(
            "deploy",
            "--project",
            "One at a time",
            "--release",
            version,
            "--environment",
            "Dev",
            "--output",
            "json",
            check=True,
        )
        ids.append(json.loads(out.stdout)["task_id"])
    first, second = ids

    def explained() -> dict[str, Any] | None:
        task = _show(server, second)
        return task if task.get("waiting_reason") else None

    waiting = wait_for(explained, 30, "the second deployment to say why it waits")
    assert waiting["state"] == "queued"
    assert waiting["waiting_reason"] == (f"waiting for task {first} (same project and environment)")
    assert _show(server, first)["state"] == "running"
    mark.touch()

    def both_done() -> bool:
        return all(_show(server, i)["state"] == "success" for i in ids)

    wait_for(both_done, 60, "both deployments to succeed", interval=0.5)


def test_a_deployment_past_its_time_limit_is_cancelled_and_ends_timed_out(
    cluster: Cluster, tmp_path: Path
) -> None:
    never = tmp_path / "never"
    server = cluster.start_server(deployment_timeout_seconds=3)
    cluster.add_tentacle("web-01", "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.replace("MARK", str(never)))
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "One at a time", "--version", "1.0.0")
    out = server.cli(
        "deploy",
        "--project",
        "One at a time",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--wait",
        "--output",
        "json",
        timeout=90,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    final = json.loads(out.stdout.splitlines()[-1])["finished"]
    assert final["state"] == "timed_out", final
    assert "time limit of 3s ran out" in final["reason"]
    machine = next(n for n in final["nodes"] if n["kind"] == "machine")
    # The script was cancelled on its agent, not left waiting for the marker forever.
    assert machine["state"] == "cancelled", machine
    # The release's deployment history (what lifecycles and retention read) says so too.
    with sqlite3.connect(server.home / "cuttle.db") as db:
        recorded = db.execute("SELECT state FROM deployments").fetchall()
    assert recorded == [("timed_out",)]
