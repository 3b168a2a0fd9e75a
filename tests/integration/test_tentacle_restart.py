"""Crashes under a running script: a Tentacle restart loses the result, a server restart resumes."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cluster import BIN, Cluster, Server, Tentacle, wait_for
from tests.integration.harness.tasks import (
    finished_task,
    log_lines,
    newest_task_id,
    processes_with,
)

pytestmark = pytest.mark.integration


def _json_lines(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events


def _tickets(tentacle: Tentacle) -> list[str]:
    tickets = tentacle.home / "tickets"
    return sorted(p.name for p in tickets.iterdir() if p.is_dir()) if tickets.exists() else []


def _start_run(server: Server, body: str, out_path: Path) -> subprocess.Popen[bytes]:
    with out_path.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", body],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server.cli_env(),
            start_new_session=True,
        )


def _stop_run(run: subprocess.Popen[bytes]) -> None:
    if run.poll() is None:
        run.kill()
        run.wait(10)


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_tentacle_killed_under_a_script_reports_result_unknown(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", style)
    line = f"before-the-crash-{uuid.uuid4().hex}"
    run = _start_run(server, f"echo {line}\nsleep 300\n", tmp_path / "run.out")
    try:
        task_id = wait_for(
            lambda: newest_task_id(server), 20, "the task to be listed", interval=0.2
        )
        wait_for(lambda: line in log_lines(server, task_id), 20, "the line in the log", 0.2)
        (ticket,) = _tickets(tentacle)
        marker = f"CUTTLE_TICKET={ticket}".encode()
        assert processes_with(marker)

        assert tentacle.process is not None
        tentacle.process.kill()
        # The script runs in its own session: a group kill of the Tentacle leaves it running.
        survivors = processes_with(marker)
        assert survivors, "the script died with the Tentacle's process group"
        tentacle.start()

        task = wait_for(lambda: finished_task(server, task_id), 40, "the task to finish", 0.2)
        (target,) = task["targets"]
        assert target["state"] == "result_unknown", task
        assert task["state"] == "failed", task
        assert run.wait(30) != 0, (tmp_path / "run.out").read_text()
        assert log_lines(server, task_id).count(line) == 1, log_lines(server, task_id)
        wait_for(lambda: not processes_with(marker), 10, "no process of the script to remain")
    finally:
        _stop_run(run)


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_server_restart_does_not_start_the_script_twice(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", style)
    outside = tmp_path / f"outside-{uuid.uuid4().hex}.txt"
    body = f"echo x >> {outside}\necho first-line\nsleep 3\necho last-line\n"
    run = _start_run(server, body, tmp_path / "run.out")
    try:
        task_id = wait_for(
            lambda: newest_task_id(server), 20, "the task to be listed", interval=0.2
        )
        wait_for(lambda: outside.exists(), 20, "the script to start")
        assert server.process is not None
        server.process.kill()
        server.start()
        if style == "polling":
            tentacle.wait_connected()

        task = wait_for(lambda: finished_task(server, task_id), 40, "the task to finish", 0.2)
        assert task["state"] == "success", task
        (target,) = task["targets"]
        assert target["state"] == "complete", target
        assert target["exit_code"] == 0, target
        assert outside.read_text().splitlines() == ["x"]
        # The Tentacle started one script for the task, however often it was asked.
        started = [
            e for e in _json_lines(tentacle.home / "tentacle.log") if e["event"] == "script_started"
        ]
        assert len(started) == 1, started
        lines = log_lines(server, task_id)
        assert lines.count("first-line") == 1, lines
        assert lines.count("last-line") == 1, lines
    finally:
        _stop_run(run)
