"""The shared helper files and the bootstrap: written once per home, joining the ticket's cgroup."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cuttle.tentacle.execution import proctree, runner
from cuttle.tentacle.execution.helpers import HelperFiles
from cuttle.tentacle.execution.manager import (
    LogSource,
    ScriptManager,
    ScriptSnapshot,
    ScriptState,
    StartCommand,
    Syntax,
)
from tests.unit.tentacle.execution.scenarios import run_with


async def finish(m: ScriptManager, ticket: str) -> tuple[ScriptSnapshot, list[bytes]]:
    """Watch to the end; the final snapshot and the script's stdout lines."""
    final: ScriptSnapshot | None = None
    out: list[bytes] = []
    async for snapshot in m.watch(ticket):
        final = snapshot
        for run in snapshot.runs:
            if run.source is LogSource.STDOUT:
                out.extend(run.lines())
    assert final is not None
    return final, out


HELPER_USER = 'set_octopusvariable Colour blue; echo "helpers at $CUTTLE_HELPERS"'


def test_helpers_are_written_once_read_only_and_shared_by_every_workspace(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        for ticket in ("t-a", "t-b"):
            await m.start(StartCommand(ticket, HELPER_USER, Syntax.BASH))
            final, out = await finish(m, ticket)
            assert final.state is ScriptState.COMPLETE
            assert [(v.name, v.value) for v in final.output_variables] == [("Colour", "blue")]
            assert out == [f"helpers at {only_helper(tmp_path)}".encode()]
            workspace = tmp_path / "tickets" / ticket / "workspace"
            assert sorted(p.name for p in workspace.rglob("*")) == ["script.sh"]

    run_with(tmp_path, scenario)
    for path in (tmp_path / "helpers").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o444, path


def only_helper(home: Path) -> Path:
    (helpers,) = (home / "helpers").glob("helpers-*.sh")
    return helpers


def test_a_changed_helper_file_is_rewritten_by_the_next_tentacle(tmp_path: Path) -> None:
    async def first(m: ScriptManager) -> None:
        await m.start(StartCommand("t-1", HELPER_USER, Syntax.BASH))
        await finish(m, "t-1")

    run_with(tmp_path, first)
    helper = only_helper(tmp_path)
    helper.chmod(0o644)
    helper.write_text("set_octopusvariable() { echo broken; }\n")

    async def second(m: ScriptManager) -> None:
        await m.start(StartCommand("t-2", HELPER_USER, Syntax.BASH))
        final, _ = await finish(m, "t-2")
        assert [(v.name, v.value) for v in final.output_variables] == [("Colour", "blue")]

    run_with(tmp_path, second)


CGROUP_OF_CHILD = {
    # The child is forked by the script itself: it must start inside the ticket's cgroup.
    Syntax.BASH: "(cat /proc/self/cgroup)",
    Syntax.SH: "(cat /proc/self/cgroup)",
    Syntax.PYTHON: "import subprocess\nsubprocess.run(['cat', '/proc/self/cgroup'], check=True)",
}


@pytest.mark.parametrize("syntax", list(CGROUP_OF_CHILD))
def test_the_script_and_its_children_run_in_the_ticket_cgroup(
    tmp_path: Path, syntax: Syntax
) -> None:
    ticket = f"t-cg-{syntax.value.lower()}"

    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand(ticket, CGROUP_OF_CHILD[syntax], syntax))
        final, out = await finish(m, ticket)
        assert final.state is ScriptState.COMPLETE, out
        record = json.loads((tmp_path / "tickets" / ticket / "state.json").read_text())
        if record["cgroup"] is None:
            pytest.skip("no writable cgroup v2 here; the process group and marker are used")
        (unified,) = [line for line in out if line.startswith(b"0::")]
        assert unified.endswith(f"/{Path(record['cgroup']).name}".encode()), out

    run_with(tmp_path, scenario)


def test_orphans_are_reaped_only_when_a_child_is_a_zombie() -> None:
    assert not proctree.has_zombie_children() or proctree.reap_zombies([]) == 0
    child = subprocess.Popen(["true"])
    # Wait for the exit without reaping it: WNOWAIT leaves the zombie in place.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert proctree.has_zombie_children()
    assert proctree.reap_zombies([child.pid]) == 1
    assert not Path(f"/proc/{child.pid}").exists()
    child.returncode = 0  # reaped above; keep Popen from waiting for it again


GATED = {
    Syntax.BASH: ("bash", "--noprofile", "--norc"),
    Syntax.SH: ("sh",),
    Syntax.PYTHON: (sys.executable,),
}


@pytest.mark.parametrize("syntax", list(GATED))
def test_the_bootstrap_runs_the_script_only_after_go(tmp_path: Path, syntax: Syntax) -> None:
    shared = HelperFiles(tmp_path / "helpers").installed()
    bootstrap = shared.python_bootstrap if syntax is Syntax.PYTHON else shared.shell_bootstrap
    marker = tmp_path / "ran"
    script = tmp_path / "script"
    if syntax is Syntax.PYTHON:
        script.write_text(
            f"import os\nopen({str(marker)!r}, 'w').write(os.readlink('/proc/self/fd/0'))\n"
        )
    else:
        script.write_text(f"readlink /proc/$$/fd/0 > {marker}\n")
    (tmp_path / "vars.json").write_text("[]")
    env = {
        **os.environ,
        "CUTTLE_HELPERS": str(shared.shell_helpers),
        "CUTTLE_VARIABLES_FILE": str(tmp_path / "vars.json"),
    }
    argv = [*GATED[syntax], str(bootstrap), "", str(script)]

    refused = subprocess.run(argv, input=b"", env=env, capture_output=True, timeout=30)
    assert refused.returncode == 125, refused.stderr
    assert not marker.exists()

    released = subprocess.run(argv, input=b"go\n", env=env, capture_output=True, timeout=30)
    assert released.returncode == 0, released.stderr
    assert marker.read_text().strip() == "/dev/null"


def test_a_start_that_cannot_be_made_durable_never_runs_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(paths: object) -> None:
        raise OSError("the disk refused the fsync")

    monkeypatch.setattr(runner, "sync_claim", refuse)
    marker = tmp_path / "ran"

    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand("t-refused", f"echo x > {marker}", Syntax.BASH))
        final, _ = await finish(m, "t-refused")
        assert final.state is ScriptState.FAILED_TO_START
        assert "the disk refused the fsync" in final.state_reason

    run_with(tmp_path, scenario)
    assert not marker.exists()
