"""Process trees: cancel, timeout, leftovers holding the pipe, restart recovery, isolation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cuttle.tentacle.execution import proctree
from cuttle.tentacle.execution.journal import Journal
from cuttle.tentacle.execution.manager import (
    RESTART_REASON,
    LogSource,
    ScriptManager,
    ScriptSnapshot,
    ScriptState,
    StartCommand,
    Syntax,
)
from cuttle.tentacle.execution.model import LogLevel
from cuttle.tentacle.execution.tickets import TicketPaths, TicketRecord, save_record
from tests.unit.tentacle.execution.scenarios import lines_of, run_with


def marked(ticket: str) -> set[int]:
    """Live processes still carrying the ticket's environment marker."""
    return proctree.tree_pids(ticket, None, None)


async def last(m: ScriptManager, ticket: str) -> ScriptSnapshot:
    final = None
    async for snapshot in m.watch(ticket):
        final = snapshot
    assert final is not None
    return final


async def wait_for_line(m: ScriptManager, ticket: str, text: bytes) -> None:
    async for snapshot in m.watch(ticket):
        if any(line.text == text for line in lines_of(snapshot.runs)):
            return
    raise AssertionError(f"{text!r} never appeared")


# A grandchild that leaves the session (setsid) and keeps stdout open, ignoring SIGTERM.
SETSID_TREE = """
setsid bash -c 'trap "" TERM; echo grandchild-up; while true; do sleep 1; done' &
trap "" TERM
echo ready
while true; do sleep 1; done
"""


def test_cancel_kills_setsid_grandchild_and_returns_when_tree_is_dead(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand("t-cancel", SETSID_TREE, Syntax.BASH))
        await wait_for_line(m, "t-cancel", b"grandchild-up")
        assert marked("t-cancel")
        snapshot = await m.cancel("t-cancel", "user pressed cancel")
        assert snapshot.state is ScriptState.CANCELLED
        assert snapshot.state_reason == "user pressed cancel"
        assert marked("t-cancel") == set()
        again = await m.cancel("t-cancel", "second")
        assert again.state_reason == "user pressed cancel"

    run_with(tmp_path, scenario, cancel_grace=0.5)


def test_a_tree_that_outlives_sigkill_is_not_reported_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process in uninterruptible sleep outlives SIGKILL; none can be made here on purpose,
    # so the check after the kill is told one survived (the real tree is still killed).
    monkeypatch.setattr(proctree, "survivors", lambda *_: {4242})

    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand("t-survivor", SETSID_TREE, Syntax.BASH))
        await wait_for_line(m, "t-survivor", b"grandchild-up")
        snapshot = await m.cancel("t-survivor", "user pressed cancel")
        assert snapshot.state is ScriptState.RESULT_UNKNOWN
        assert "4242" in snapshot.state_reason
        assert "survived SIGKILL" in snapshot.state_reason
        assert marked("t-survivor") == set()

    run_with(tmp_path, scenario, cancel_grace=0.5)


def test_cancel_without_cgroups_uses_the_environment_marker(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand("t-nocg", SETSID_TREE, Syntax.BASH))
        await wait_for_line(m, "t-nocg", b"grandchild-up")
        snapshot = await m.cancel("t-nocg", "stop")
        assert snapshot.state is ScriptState.CANCELLED
        assert marked("t-nocg") == set()

    run_with(tmp_path, scenario, cancel_grace=0.5, use_cgroups=False)


def test_timeout_kills_tree_and_says_so(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand("t-slow", SETSID_TREE, Syntax.BASH, timeout=1.0))
        final = None
        async for snapshot in m.watch("t-slow"):
            final = snapshot
        assert final is not None
        assert final.state is ScriptState.TIMED_OUT
        assert "1s" in final.state_reason
        page = await m.status("t-slow")
        notes = [ln.text for ln in lines_of(page.runs) if ln.source is LogSource.TENTACLE]
        assert any(b"time limit" in note for note in notes)
        assert marked("t-slow") == set()

    run_with(tmp_path, scenario, cancel_grace=0.5)


def test_background_process_holding_the_pipe_does_not_hang_the_ticket(tmp_path: Path) -> None:
    body = "(trap '' TERM; sleep 300) & echo main-done"

    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand("t-bg", body, Syntax.BASH))
        final = None
        async for snapshot in m.watch("t-bg"):
            final = snapshot
        assert final is not None
        assert final.state is ScriptState.COMPLETE
        assert final.exit_code == 0
        assert marked("t-bg") == set()

    run_with(tmp_path, scenario, cancel_grace=0.5, eof_grace=0.3)


def test_recover_marks_running_tickets_result_unknown_and_kills_survivors(tmp_path: Path) -> None:
    ticket = "t-orphan"
    paths = TicketPaths.of(tmp_path, ticket)
    paths.workspace.mkdir(parents=True)
    journal = Journal(paths.journal)
    journal.append([(1, LogSource.STDOUT, LogLevel.INFO, b"before restart", 1)])
    journal.close()
    # A script the "previous Tentacle" started: it carries the marker and outlives its parent.
    env = {**os.environ, "CUTTLE_TICKET": ticket}
    survivor = subprocess.Popen(
        ["sleep", "300"], env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        record = TicketRecord(ticket=ticket, state=ScriptState.RUNNING)
        record.pid = survivor.pid
        record.pid_start_time = proctree.process_start_time(survivor.pid)
        save_record(paths, record)

        async def scenario(m: ScriptManager) -> None:
            snapshot = await m.status(ticket)
            assert snapshot.state is ScriptState.RESULT_UNKNOWN
            assert snapshot.state_reason == RESTART_REASON
            assert lines_of(snapshot.runs)[0].text == b"before restart"
            assert lines_of(snapshot.runs)[-1].source is LogSource.TENTACLE
            assert marked(ticket) == set()

        run_with(tmp_path, scenario, cancel_grace=0.5)
        assert survivor.wait(timeout=5) is not None
    finally:
        survivor.kill()
        survivor.wait()


def test_recover_with_recycled_pid_does_not_kill_a_stranger(tmp_path: Path) -> None:
    ticket = "t-recycled"
    paths = TicketPaths.of(tmp_path, ticket)
    paths.workspace.mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        record = TicketRecord(ticket=ticket, state=ScriptState.RUNNING)
        record.pid = stranger.pid
        record.pid_start_time = (proctree.process_start_time(stranger.pid) or 0) + 12345
        save_record(paths, record)

        async def scenario(m: ScriptManager) -> None:
            assert (await m.status(ticket)).state is ScriptState.RESULT_UNKNOWN

        run_with(tmp_path, scenario, cancel_grace=0.5)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_full_isolation_runs_one_at_a_time_and_times_out_waiters(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        holder = StartCommand("t-hold", "echo holding; sleep 30", Syntax.BASH, full_isolation=True)
        assert (await m.start(holder)).state is ScriptState.RUNNING
        waiter = StartCommand(
            "t-wait", "echo second", Syntax.BASH, full_isolation=True, isolation_timeout=0.3
        )
        free = StartCommand("t-free", "echo free", Syntax.BASH)
        snapshot = await m.start(waiter)
        assert snapshot.state is ScriptState.PENDING
        assert any(b"Waiting for the mutex" in ln.text for ln in lines_of(snapshot.runs))
        assert (await m.start(free)).state in (ScriptState.RUNNING, ScriptState.COMPLETE)
        final = await last(m, "t-wait")
        assert final.state is ScriptState.FAILED_TO_START
        assert "mutex" in final.state_reason
        queued = StartCommand("t-next", "echo next", Syntax.BASH, full_isolation=True)
        assert (await m.start(queued)).state is ScriptState.PENDING
        await m.cancel("t-hold", "make room")
        final = await last(m, "t-next")
        assert final.state is ScriptState.COMPLETE
        page = await m.status("t-next")
        assert b"next" in [ln.text for ln in lines_of(page.runs)]

    run_with(tmp_path, scenario, cancel_grace=0.5)


def test_cancel_while_waiting_for_the_mutex(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        hold = StartCommand("t-h", "sleep 30", Syntax.BASH, full_isolation=True)
        await m.start(hold)
        await m.start(StartCommand("t-w", "echo never", Syntax.BASH, full_isolation=True))
        snapshot = await m.cancel("t-w", "not needed")
        assert snapshot.state is ScriptState.CANCELLED
        assert snapshot.state_reason == "not needed"
        await m.cancel("t-h", "done")

    run_with(tmp_path, scenario, cancel_grace=0.5)


def test_become_subreaper_adopts_orphans() -> None:
    code = (
        "import os, subprocess, sys, time\n"
        "from cuttle.tentacle.execution.proctree import become_subreaper\n"
        "assert become_subreaper()\n"
        "subprocess.run(['sh', '-c', 'sleep 30 & echo $!'], stdout=open('pid', 'w'))\n"
        "pid = int(open('pid').read())\n"
        "ppid = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1]\n"
        "os.kill(pid, 9); os.waitpid(pid, 0)\n"
        "print(int(ppid) == os.getpid())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        cwd=os.environ.get("TMPDIR", "/tmp"),
    )
    assert out.stdout.strip() == "True", out.stderr
