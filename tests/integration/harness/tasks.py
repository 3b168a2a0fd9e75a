"""Reading tasks through the real CLI, and finding a script's processes in /proc."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.integration.harness.cluster import Server


def task_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def log_lines(server: Server, task_id: str) -> list[str]:
    """Every script output line in the task's log so far (without following)."""
    out = server.cli("task", "log", task_id, "--output", "json", timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = []
    for event in task_events(out.stdout):
        for line in event.get("lines", {}).get("lines", []):
            lines.append(line["line"]["text"])
    return lines


def newest_task_id(server: Server) -> str | None:
    tasks = server.cli_json("task", "list")
    return tasks[0]["id"] if tasks else None


def finished_task(server: Server, task_id: str) -> dict[str, Any] | None:
    task: dict[str, Any] = server.cli_json("task", "show", task_id)
    unfinished = ("queued", "running", "cancelling")
    return None if task["state"] in unfinished + ("waiting",) else task


def processes_with(marker: bytes) -> list[tuple[int, str]]:
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


def kill_marked(marker: bytes) -> None:
    """SIGKILL every live process whose environment holds marker: a test's cleanup."""
    for pid, _ in processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
