"""The script manager with run_scripts_as: files, ownership, recovery and deletion.

Needs root and useradd (a throwaway system user per test); skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuttle.tentacle.execution.manager import ScriptManager
from cuttle.tentacle.execution.model import (
    ScriptFile,
    ScriptState,
    StartCommand,
    Syntax,
    Variable,
)
from cuttle.tentacle.execution.script_user import ScriptUser, resolve_script_user
from tests.unit.tentacle.execution.scenarios import lines_of, run_with

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def user() -> Iterator[ScriptUser]:
    """A throwaway system user without a home."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed (Debian package passwd)")
    name = f"cuttle-u{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, timeout=60)
    try:
        resolved = resolve_script_user(name)
        assert resolved is not None
        yield resolved
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60, check=False)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory other users may traverse (pytest's temp root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cuttle-exec-user-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _restarted(m: ScriptManager) -> None:
    """A Tentacle that only starts: recover() deletes what completed tickets left renamed."""


async def _final(m: ScriptManager, ticket: str) -> list[bytes]:
    async for snapshot in m.watch(ticket):
        if snapshot.state is not ScriptState.RUNNING:
            break
    page = await m.status(ticket)
    assert page.state is ScriptState.COMPLETE, page
    return [line.text for line in lines_of(page.runs)]


def test_files_belong_to_the_user_and_go_with_the_ticket(base: Path, user: ScriptUser) -> None:
    home = base / "home"
    workspaces = base / "home-workspaces"
    body = (
        'stat -c "%U %a" "$PWD" "$CUTTLE_VARIABLES_FILE" script.sh data/in.txt\n'
        "cat data/in.txt\n"
        "id -u\n"
    )

    async def scenario(m: ScriptManager) -> None:
        cmd = StartCommand(
            "t-user",
            body,
            Syntax.BASH,
            files=(ScriptFile("data/in.txt", b"payload\n"),),
            variables=(Variable("secret", "s3", True),),
        )
        await m.start(cmd)
        lines = await _final(m, "t-user")
        assert f"{user.name} 700".encode() in lines
        assert f"{user.name} 600".encode() in lines
        assert b"payload" in lines
        assert str(user.uid).encode() in lines
        work = workspaces / "t-user"
        assert stat.S_IMODE(work.stat().st_mode) == 0o711
        assert work.stat().st_uid == 0
        assert not (work / "variables.json").exists()  # secrets gone with the script
        assert (home / "tickets" / "t-user" / "workspace").is_symlink()
        # Downloads read through the home's symlink, but never follow one in the workspace.
        os.symlink("/etc/shadow", work / "workspace" / "shadow")
        with pytest.raises(OSError, match="shadow|symbolic|loop"):
            m.open_workspace_file("t-user", "shadow")
        with m.open_workspace_file("t-user", "data/in.txt") as handle:
            assert handle.read() == b"payload\n"
        await m.complete("t-user")

    run_with(home, scenario, script_user=user, workspaces=workspaces)
    # Deleted by a background task, or (if the manager closed first) by the next start.
    run_with(home, _restarted)
    assert not (workspaces / "t-user").exists()
    assert list((home / "tickets").iterdir()) == []


def test_a_restarted_tentacle_kills_what_the_user_left_and_finds_its_workspace(
    base: Path, user: ScriptUser
) -> None:
    home = base / "home"
    workspaces = base / "home-workspaces"

    async def start(m: ScriptManager) -> None:
        await m.start(StartCommand("t-left", "echo up; sleep 300", Syntax.BASH))
        async for snapshot in m.watch("t-left"):
            if any(b"up" in line.text for line in lines_of(snapshot.runs)):
                break

    run_with(home, start, script_user=user, workspaces=workspaces)

    async def after(m: ScriptManager) -> None:
        page = await m.status("t-left")
        assert page.state is ScriptState.RESULT_UNKNOWN
        await m.complete("t-left")

    # Restarted without the setting: the ticket still finds its workspace to delete.
    run_with(home, after)
    run_with(home, _restarted)
    assert not (workspaces / "t-left").exists()
    assert _live_processes_of(user.uid) == []


def _live_processes_of(uid: int) -> list[int]:
    """Pids of ``uid``'s processes that have not exited (a zombie only awaits its parent)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)] and not fields["State"].startswith("Z"):
            found.append(int(entry))
    return found
