"""Cancelling a running task kills the whole script process tree, setsid grandchildren included."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster, Tentacle, wait_for
from tests.integration.harness.tasks import (
    finished_task,
    log_lines,
    newest_task_id,
    processes_with,
)

pytestmark = pytest.mark.integration


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
        task_id = wait_for(
            lambda: newest_task_id(server), 20, "the task to be listed", interval=0.2
        )
        wait_for(
            lambda: "started" in log_lines(server, task_id),
            20,
            "'started' in the task log",
            interval=0.2,
        )
        ticket = wait_for(lambda: _ticket(tentacle), 10, "the ticket on the Tentacle")
        ticket_marker = f"CUTTLE_TICKET={ticket}".encode()
        # The exported mark is in the environ of the children: the sleep and the setsid one.
        marked = {pid for pid, _ in processes_with(mark.encode())}
        assert len(marked) >= 2, marked
        # The ticket is in every script process's environ: the script's bash as well.
        ticketed = {pid for pid, _ in processes_with(ticket_marker)}
        assert ticketed > marked, (ticketed, marked)
        # One of them really left the script's session.
        assert len({_session(pid) for pid in ticketed}) >= 2, ticketed

        cancel = server.cli("task", "cancel", task_id, "--output", "json", timeout=60)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        # Answered at once, as JSON for scripts: the task is on its way to cancelled.
        answered = json.loads(cancel.stdout)
        assert answered["id"] == task_id
        assert answered["state"] in ("cancelling", "cancelled"), answered

        code = run.wait(30)
        assert code != 0, out_path.read_text()
        task = wait_for(
            lambda: finished_task(server, task_id),
            20,
            "the task to finish",
            interval=0.2,
        )
        assert task["state"] == "cancelled", task
        (target,) = task["targets"]
        assert target["state"] == "cancelled", target

        wait_for(
            lambda: not processes_with(ticket_marker) and not processes_with(mark.encode()),
            10,
            "no process of the cancelled script to remain",
            interval=0.1,
        )
        assert "started" in log_lines(server, task_id)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
        for pid, _ in processes_with(mark.encode()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
