"""A cancel for an agent that cannot be reached is kept, and delivered when the agent is back.

The Tentacle process is frozen with SIGSTOP: its script goes on running, but the agent answers
nothing. The task is cancelled; the server gives up on the agent after agent_lost_after and
ends the task with the cancel kept in the store. Once the Tentacle runs again (and, in one
variant, after the server was restarted in between) the kept cancel kills the script's tree,
and what the script wrote while the server could not follow it is added to the task log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from cuttle.server.store import pending_cancels
from cuttle.server.store.database import READ_ONLY, create_engine_for, session_maker, sqlite_url
from cuttle.server.store.pending_cancels import PendingCancelRecord
from tests.integration.harness.cluster import BIN, Cluster, Server, Tentacle, wait_for
from tests.integration.harness.tasks import (
    finished_task,
    kill_marked,
    log_lines,
    newest_task_id,
    processes_with,
)

# Giving up on a frozen listening agent waits for the configured call timeout; the rest is a
# loaded 2-core machine starting CLI processes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SETTINGS = {
    "agent_lost_after_seconds": 5.0,
    # A frozen listening agent answers nothing: each attempt waits this long.
    "agent_call_timeout_seconds": 5.0,
    "cancel_retry_interval_seconds": 0.5,
    "cancel_retry_max_interval_seconds": 2.0,
}


def _ticket(tentacle: Tentacle) -> str | None:
    tickets = tentacle.home / "tickets"
    names = sorted(p.name for p in tickets.iterdir() if p.is_dir()) if tickets.exists() else []
    return names[0] if len(names) == 1 else None


def _pending(server: Server) -> list[PendingCancelRecord]:
    """What the server's store keeps, read beside the running server (WAL: no lock taken)."""
    engine = create_engine_for(sqlite_url(server.home / "cuttle.db"))
    try:
        with session_maker(engine)() as session:
            session.connection(execution_options={READ_ONLY: True})
            return pending_cancels.list_pending(session)
    finally:
        engine.dispose()


def _logged(server: Server, event: str) -> list[dict[str, Any]]:
    found = []
    for line in (server.home / "server.log").read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def _signal(tentacle: Tentacle, sig: int) -> None:
    assert tentacle.process is not None
    assert tentacle.process.popen is not None
    with contextlib.suppress(ProcessLookupError):
        # The Tentacle process alone, not its group: its script must keep running.
        os.kill(tentacle.process.popen.pid, sig)


@pytest.mark.parametrize("restart", [False, True], ids=["same_server", "restarted_server"])
@pytest.mark.parametrize("style", ["listening", "polling"])
def test_a_cancel_for_a_frozen_tentacle_is_delivered_when_it_runs_again(
    cluster: Cluster, style: str, restart: bool, tmp_path: Path
) -> None:
    server = cluster.start_server(**SETTINGS)
    tentacle = cluster.add_tentacle("web-01", style)
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    away = tmp_path / "away"
    os.mkfifo(away)
    # The script prints once more when told to, while its Tentacle is frozen: that line is
    # journaled only after the server stopped following the script. (A FIFO, so that waiting
    # for the word starts no process the checks of the script's tree would see come and go.)
    body = (
        f"export {mark}\nsleep 300 &\necho started\n"
        f"read -r _ < '{away}'\necho 'written while away'\nwait\n"
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
        script = {pid for pid, _ in processes_with(ticket_marker)}
        assert {pid for pid, _ in processes_with(mark.encode())} <= script, script

        _signal(tentacle, signal.SIGSTOP)
        away.write_text("go\n")  # the script waits in read, so this open does not block long
        cancel = server.cli("task", "cancel", task_id, timeout=60)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr

        task = wait_for(
            lambda: finished_task(server, task_id),
            180,
            "the server to give up on the frozen Tentacle",
            interval=0.5,
        )
        assert task["state"] == "cancelled", task
        (target,) = task["targets"]
        assert target["state"] == "result_unknown", target
        assert "will be delivered when web-01 is back" in target["message"], target
        # The agent never heard the cancel: its script still runs, and the cancel is kept.
        assert {pid for pid, _ in processes_with(ticket_marker)} == script
        (kept,) = _pending(server)
        assert (kept.ticket, kept.task_id, kept.machine_name) == (ticket, task_id, "web-01")

        if restart:
            assert server.process is not None
            server.process.stop()
            server.start()
            # Loaded from the store, not remembered by the old process.
            assert _logged(server, "pending_cancels_loaded")[-1]["count"] == 1

        _signal(tentacle, signal.SIGCONT)
        wait_for(
            lambda: not processes_with(ticket_marker),
            60,
            "no process of the cancelled script to remain",
            interval=0.2,
        )
        wait_for(lambda: not _pending(server), 30, "the kept cancel to be removed", interval=0.2)
        # The record is removed in the same transaction that says so; the log line follows it.
        (delivered,) = wait_for(
            lambda: _logged(server, "pending_cancel_delivered"),
            10,
            "the delivery to be logged",
            interval=0.1,
        )
        assert delivered["ticket"] == ticket, delivered
        (target,) = server.cli_json("task", "show", task_id)["targets"]
        assert "the cancel was delivered when web-01 was back" in target["message"], target
        assert "more line(s) of its output were added to the log" in target["message"], target
        lines = log_lines(server, task_id)
        assert "written while away" not in lines[: lines.index("started")], lines
        assert "written while away" in lines, lines
        # The agent's own note on the kill came back too.
        assert any("cancelled" in line for line in lines[lines.index("started") :]), lines
        # The agent was told to clean up: the ticket's workspace is gone.
        wait_for(lambda: _ticket(tentacle) is None, 30, "the ticket's workspace to be removed")
    finally:
        _signal(tentacle, signal.SIGCONT)
        if run.poll() is None:
            run.kill()
            run.wait(10)
        kill_marked(mark.encode())
