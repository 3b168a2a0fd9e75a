"""Crashes under a running script: a Tentacle restart loses the result, a server restart resumes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cluster import BIN, Cluster, Server, Tentacle, wait_for

pytestmark = pytest.mark.integration


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


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


def _log_lines(server: Server, task_id: str) -> list[str]:
    """Every line in the task's log so far (without following)."""
    out = server.cli("task", "log", task_id, "--output", "json", timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = []
    for event in _events(out.stdout):
        for line in event.get("lines", {}).get("lines", []):
            lines.append(base64.b64decode(line["line"]["text"]).decode(errors="replace"))
    return lines


def _task_id(server: Server) -> str | None:
    tasks = server.cli_json("task", "list")
    return tasks[0]["id"] if tasks else None


def _finished(server: Server, task_id: str) -> dict[str, Any] | None:
    task: dict[str, Any] = server.cli_json("task", "show", task_id)
    return None if task["state"] in ("TASK_STATE_QUEUED", "TASK_STATE_RUNNING") else task


def _tickets(tentacle: Tentacle) -> list[str]:
    tickets = tentacle.home / "tickets"
    return sorted(p.name for p in tickets.iterdir() if p.is_dir()) if tickets.exists() else []


def _processes_with(marker: bytes) -> list[tuple[int, str]]:
    """(pid, cmdline) of every live process whose environment holds marker (NAME=VALUE)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            status = Path(f"/proc/{entry}/status").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone while scanning, or not ours
        if "State:\tZ" in status:
            continue  # a zombie has exited; it only awaits its parent
        if marker in environ.split(b"\0"):
            found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


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
        task_id = wait_for(lambda: _task_id(server), 20, "the task to be listed", interval=0.2)
        wait_for(lambda: line in _log_lines(server, task_id), 20, "the line in the log", 0.2)
        (ticket,) = _tickets(tentacle)
        marker = f"CUTTLE_TICKET={ticket}".encode()
        assert _processes_with(marker)

        assert tentacle.process is not None
        tentacle.process.kill()
        # The script runs in its own session: a group kill of the Tentacle leaves it running.
        survivors = _processes_with(marker)
        assert survivors, "the script died with the Tentacle's process group"
        tentacle.start()

        task = wait_for(lambda: _finished(server, task_id), 40, "the task to finish", 0.2)
        (target,) = task["targets"]
        assert target["state"] == "SCRIPT_STATE_RESULT_UNKNOWN", task
        assert task["state"] == "TASK_STATE_FAILED", task
        assert run.wait(30) != 0, (tmp_path / "run.out").read_text()
        assert _log_lines(server, task_id).count(line) == 1, _log_lines(server, task_id)
        wait_for(lambda: not _processes_with(marker), 10, "no process of the script to remain")
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
        task_id = wait_for(lambda: _task_id(server), 20, "the task to be listed", interval=0.2)
        wait_for(lambda: outside.exists(), 20, "the script to start")
        assert server.process is not None
        server.process.kill()
        server.start()
        if style == "polling":
            tentacle.wait_connected()

        task = wait_for(lambda: _finished(server, task_id), 40, "the task to finish", 0.2)
        assert task["state"] == "TASK_STATE_SUCCESS", task
        (target,) = task["targets"]
        assert target["state"] == "SCRIPT_STATE_COMPLETE", target
        assert target["exit_code"] == 0, target
        assert outside.read_text().splitlines() == ["x"]
        # The Tentacle started one script for the task, however often it was asked.
        started = [
            e for e in _json_lines(tentacle.home / "tentacle.log") if e["event"] == "script_started"
        ]
        assert len(started) == 1, started
        lines = _log_lines(server, task_id)
        assert lines.count("first-line") == 1, lines
        assert lines.count("last-line") == 1, lines
    finally:
        _stop_run(run)
