"""Cancelling a running task kills the whole script process tree, setsid grandchildren included."""

from __future__ import annotations

import base64
import contextlib
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


def _log_lines(server: Server, task_id: str) -> list[str]:
    """Every script output line in the task's log so far (without following)."""
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


def _ticket(tentacle: Tentacle) -> str | None:
    tickets = tentacle.home / "tickets"
    names = sorted(p.name for p in tickets.iterdir() if p.is_dir()) if tickets.exists() else []
    return names[0] if len(names) == 1 else None


def _session(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])


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


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_cancel_kills_the_script_and_its_setsid_grandchildren(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", style)
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    body = (
        f"export {mark}\n"
        "sleep 300 &\n"
        "setsid bash -c 'echo grandchild; sleep 300' &\n"
        "echo started\n"
        "wait\n"
    )
    out_path = tmp_path / "run.out"
    with out_path.open("wb") as out:
        run = subprocess.Popen(
            [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", body],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server.cli_env(),
            start_new_session=True,
        )
    try:
        task_id = wait_for(lambda: _task_id(server), 20, "the task to be listed", interval=0.2)
        wait_for(
            lambda: "started" in _log_lines(server, task_id),
            20,
            "'started' in the task log",
            interval=0.2,
        )
        ticket = wait_for(lambda: _ticket(tentacle), 10, "the ticket on the Tentacle")
        ticket_marker = f"CUTTLE_TICKET={ticket}".encode()
        # The exported mark is in the environ of the children: the sleep and the setsid one.
        marked = {pid for pid, _ in _processes_with(mark.encode())}
        assert len(marked) >= 2, marked
        # The ticket is in every script process's environ: the script's bash as well.
        ticketed = {pid for pid, _ in _processes_with(ticket_marker)}
        assert ticketed > marked, (ticketed, marked)
        # One of them really left the script's session.
        assert len({_session(pid) for pid in ticketed}) >= 2, ticketed

        cancel = server.cli("task", "cancel", task_id, timeout=60)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr

        code = run.wait(30)
        assert code != 0, out_path.read_text()
        task = wait_for(
            lambda: _finished(server, task_id),
            20,
            "the task to finish",
            interval=0.2,
        )
        assert task["state"] == "TASK_STATE_CANCELLED", task
        (target,) = task["targets"]
        assert target["state"] == "SCRIPT_STATE_CANCELLED", target

        wait_for(
            lambda: not _processes_with(ticket_marker) and not _processes_with(mark.encode()),
            10,
            "no process of the cancelled script to remain",
            interval=0.1,
        )
        assert "started" in _log_lines(server, task_id)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
        for pid, _ in _processes_with(mark.encode()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
