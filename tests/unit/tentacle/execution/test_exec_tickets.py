"""Ticket claims and records across restarts: what a crash can leave behind, and how it reads."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from cuttle.tentacle.execution.manager import (
    RESTART_REASON,
    ScriptManager,
    ScriptState,
    StartCommand,
    Syntax,
)
from cuttle.tentacle.execution.tickets import TicketPaths, claim
from tests.unit.tentacle.execution.scenarios import run_with


def marker_script(ticket: str, marker: Path) -> StartCommand:
    return StartCommand(ticket, f"echo ran >> {marker}", Syntax.BASH)


def test_claimed_ticket_without_a_record_is_result_unknown_and_never_runs_again(
    tmp_path: Path,
) -> None:
    # A crash after the durable claim but before the first record: the script may have started.
    (tmp_path / "tickets").mkdir()
    claim(TicketPaths.of(tmp_path, "t-claimed"))
    marker = tmp_path / "ran.txt"

    async def scenario(m: ScriptManager) -> None:
        snapshot = await m.start(marker_script("t-claimed", marker))
        assert snapshot.state is ScriptState.RESULT_UNKNOWN
        assert snapshot.state_reason == RESTART_REASON

    run_with(tmp_path, scenario, cancel_grace=0.5)
    assert not marker.exists()


def test_unreadable_record_is_result_unknown_and_never_runs_again(tmp_path: Path) -> None:
    # What a power cut can leave of a record that was renamed into place but never fsynced.
    paths = TicketPaths.of(tmp_path, "t-torn")
    paths.root.parent.mkdir()
    claim(paths)
    paths.state.write_bytes(b"")
    marker = tmp_path / "ran.txt"

    async def scenario(m: ScriptManager) -> None:
        assert (await m.status("t-torn")).state is ScriptState.RESULT_UNKNOWN
        snapshot = await m.start(marker_script("t-torn", marker))
        assert snapshot.state is ScriptState.RESULT_UNKNOWN

    run_with(tmp_path, scenario, cancel_grace=0.5)
    assert not marker.exists()
    assert json.loads(paths.state.read_text())["state"] == "RESULT_UNKNOWN"


# close() leaves the holder's process running (that is the crash being simulated) and the restarted
# manager kills it, so the first manager's Popen object is collected while its process still runs.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ticket_waiting_for_the_mutex_is_result_unknown_after_a_restart(tmp_path: Path) -> None:
    async def first(m: ScriptManager) -> None:
        hold = StartCommand("t-hold", "sleep 30", Syntax.BASH, full_isolation=True)
        assert (await m.start(hold)).state is ScriptState.RUNNING
        wait = StartCommand("t-wait", "echo never", Syntax.BASH, full_isolation=True)
        assert (await m.start(wait)).state is ScriptState.PENDING

    async def second(m: ScriptManager) -> None:
        for ticket in ("t-hold", "t-wait"):
            snapshot = await m.status(ticket)
            assert snapshot.state is ScriptState.RESULT_UNKNOWN, ticket
            assert snapshot.state_reason == RESTART_REASON

    run_with(
        tmp_path, first, cancel_grace=0.5
    )  # close() stops supervising; the holder's sleep lives on
    gc.collect()  # the warning about it, here where it is expected
    run_with(tmp_path, second, cancel_grace=0.5)  # and the restarted Tentacle kills it


def test_complete_deletes_the_ticket_and_a_restart_removes_half_deleted_ones(
    tmp_path: Path,
) -> None:
    tickets = tmp_path / "tickets"
    # A crash in the middle of deleting a completed ticket leaves its renamed directory.
    leftover = tickets / ".deleting-t-old-0123abcd" / "workspace"
    leftover.mkdir(parents=True)
    (leftover.parent / "journal").write_bytes(b"old")

    async def first(m: ScriptManager) -> None:
        assert list(tickets.iterdir()) == []
        await m.start(StartCommand("t-done", "echo hi", Syntax.BASH))
        async for _ in m.watch("t-done"):
            pass
        await m.complete("t-done")
        # Gone at once; the renamed directory is deleted in the background.
        assert not (tickets / "t-done").exists()
        assert [
            p.name for p in tickets.iterdir() if not p.name.startswith(".deleting-t-done-")
        ] == []

    async def second(m: ScriptManager) -> None:
        assert list(tickets.iterdir()) == []

    run_with(tmp_path, first, cancel_grace=0.5)
    run_with(tmp_path, second, cancel_grace=0.5)
