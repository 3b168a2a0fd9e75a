"""Ticket claims and records across restarts: what a crash can leave behind, and how it reads."""

from __future__ import annotations

import asyncio
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
        hold = StartCommand("t-claim-hold", "sleep 30", Syntax.BASH, full_isolation=True)
        assert (await m.start(hold)).state is ScriptState.RUNNING
        wait = StartCommand("t-claim-wait", "echo never", Syntax.BASH, full_isolation=True)
        assert (await m.start(wait)).state is ScriptState.PENDING

    async def second(m: ScriptManager) -> None:
        for ticket in ("t-claim-hold", "t-claim-wait"):
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
        await m.start(StartCommand("t-claim-done", "echo hi", Syntax.BASH))
        async for _ in m.watch("t-claim-done"):
            pass
        await m.complete("t-claim-done")
        # Gone at once; the renamed directory is deleted in the background.
        assert not (tickets / "t-claim-done").exists()
        assert [
            p.name for p in tickets.iterdir() if not p.name.startswith(".deleting-t-claim-done-")
        ] == []

    async def second(m: ScriptManager) -> None:
        assert list(tickets.iterdir()) == []

    run_with(tmp_path, first, cancel_grace=0.5)
    run_with(tmp_path, second, cancel_grace=0.5)


def test_a_short_script_writes_only_its_terminal_record_and_no_empty_journal(
    tmp_path: Path,
) -> None:
    paths = TicketPaths.of(tmp_path, "t-short")

    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand("t-short", "true", Syntax.BASH))
        async for _ in m.watch("t-short"):
            pass
        # Ended long before its RUNNING record was due: the terminal record is the first and
        # only one, written in place; a script that printed nothing has no journal file.
        assert json.loads(paths.state.read_text())["state"] == "COMPLETE"
        assert sorted(p.name for p in paths.root.iterdir()) == ["state.json", "workspace"]
        assert (await m.status("t-short")).last_sequence == 0

    run_with(tmp_path, scenario, cancel_grace=0.5, running_record_delay=30.0)


def test_a_script_still_running_gets_its_running_record_with_the_pid(tmp_path: Path) -> None:
    paths = TicketPaths.of(tmp_path, "t-rec-long")
    go = tmp_path / "go"

    async def scenario(m: ScriptManager) -> None:
        body = f"echo up; while [ ! -e {go} ]; do sleep 0.01; done"
        await m.start(StartCommand("t-rec-long", body, Syntax.BASH))
        async with asyncio.timeout(10):
            while not paths.state.exists():  # noqa: ASYNC110 - the file is what is under test
                await asyncio.sleep(0.01)
        record = json.loads(paths.state.read_text())
        assert record["state"] == "RUNNING"
        assert record["pid"] is not None
        assert record["pid_start_time"] is not None
        go.touch()
        async for _ in m.watch("t-rec-long"):
            pass
        assert json.loads(paths.state.read_text())["state"] == "COMPLETE"
        assert not (paths.root / ".state.json.tmp").exists()

    run_with(tmp_path, scenario, cancel_grace=0.5, running_record_delay=0.05)


def test_a_tentacle_stopping_writes_the_running_record_of_a_young_script(tmp_path: Path) -> None:
    # A clean stop leaves scripts running; the next Tentacle finds them by the pid on disk even
    # when they started a moment before the stop.
    paths = TicketPaths.of(tmp_path, "t-young")

    async def first(m: ScriptManager) -> None:
        await m.start(StartCommand("t-young", "exec sleep 60", Syntax.BASH))
        assert not paths.state.exists()

    async def second(m: ScriptManager) -> None:
        snapshot = await m.status("t-young")
        assert snapshot.state is ScriptState.RESULT_UNKNOWN

    run_with(tmp_path, first, cancel_grace=0.5, running_record_delay=30.0)
    record = json.loads(paths.state.read_text())
    assert record["state"] == "RUNNING"
    assert _alive(record["pid"])
    run_with(tmp_path, second, cancel_grace=0.5, running_record_delay=30.0)
    # The restarted Tentacle killed it through the pid it found.
    assert not _alive(record["pid"])


def test_a_tentacle_that_died_before_the_running_record_still_kills_the_script(
    tmp_path: Path,
) -> None:
    # The RUNNING record is only written after a moment; a Tentacle dying before that leaves a
    # claimed ticket without one. The restart must still end the script, through its marker.
    paths = TicketPaths.of(tmp_path, "t-early")

    async def first(m: ScriptManager) -> None:
        await m.start(StartCommand("t-early", "exec sleep 60", Syntax.BASH))

    run_with(tmp_path, first, cancel_grace=0.5, running_record_delay=30.0)
    # What a crash leaves: the clean stop above wrote the record; a crash would not have.
    pid = json.loads(paths.state.read_text())["pid"]
    paths.state.unlink()
    assert _alive(pid)

    async def second(m: ScriptManager) -> None:
        assert (await m.status("t-early")).state is ScriptState.RESULT_UNKNOWN

    run_with(tmp_path, second, cancel_grace=0.5)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
