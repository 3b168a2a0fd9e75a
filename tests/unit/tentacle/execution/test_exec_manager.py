"""ScriptManager end to end with real bash/python scripts: output, helpers, variables, tickets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from cuttle.protocol.masking import MASK
from cuttle.tentacle.execution.errors import InvalidScript, UnknownTicket
from cuttle.tentacle.execution.manager import (
    LogLevel,
    LogSource,
    ScriptFile,
    ScriptManager,
    ScriptSnapshot,
    ScriptState,
    StartCommand,
    Syntax,
    Variable,
)
from tests.unit.tentacle.execution.scenarios import Line, lines_of, run_with


async def finish(manager: ScriptManager, ticket: str) -> tuple[ScriptSnapshot, list[Line]]:
    """Watch a ticket to its end; return the final snapshot and every line, checked in order."""
    lines: list[Line] = []
    final: ScriptSnapshot | None = None
    async for snapshot in manager.watch(ticket):
        lines.extend(lines_of(snapshot.runs))
        final = snapshot
    assert final is not None
    assert [line.sequence for line in lines] == list(range(1, len(lines) + 1))
    return final, lines


def texts(lines: list[Line], source: LogSource | None = None) -> list[bytes]:
    return [line.text for line in lines if source is None or line.source is source]


def bash(ticket: str, body: str, **kwargs: object) -> StartCommand:
    return StartCommand(ticket=ticket, body=body, syntax=Syntax.BASH, **kwargs)  # type: ignore[arg-type]


def test_bash_script_output_exit_code_and_sources(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        await m.start(bash("t1", 'echo "hello $1"; echo oops >&2; exit 3', arguments=("world",)))
        final, lines = await finish(m, "t1")
        assert final.state is ScriptState.COMPLETE
        assert final.exit_code == 3
        assert texts(lines, LogSource.STDOUT) == [b"hello world"]
        assert texts(lines, LogSource.STDERR) == [b"oops"]
        assert final.last_sequence == len(lines)

    run_with(tmp_path, scenario)


def test_invalid_utf8_nul_and_unterminated_lines_come_back_byte_identical(tmp_path: Path) -> None:
    payload = b"\xff\xfe bad \x00 nul \xc3("

    async def scenario(m: ScriptManager) -> None:
        files = (ScriptFile("data.bin", payload + b"\n" + payload),)
        await m.start(bash("t-bytes", "cat data.bin", files=files))
        final, lines = await finish(m, "t-bytes")
        assert final.state is ScriptState.COMPLETE
        assert texts(lines) == [payload, payload]

    run_with(tmp_path, scenario)


def test_hundred_thousand_lines_arrive_once_and_in_order(tmp_path: Path) -> None:
    count = 100_000

    async def scenario(m: ScriptManager) -> None:
        await m.start(bash("t-burst", f"seq 1 {count}"))
        async for _ in m.watch("t-burst"):
            pass
        after, seen = 0, 0
        while True:
            page = await m.status("t-burst", after_sequence=after, max_lines=7000)
            assert sum(run.count for run in page.runs) <= 7000
            for line in lines_of(page.runs):
                seen += 1
                assert line.sequence == seen
                assert line.text == str(seen).encode()
            if not page.more_lines:
                break
            after = page.runs[-1].last_sequence
        assert seen == count
        assert page.state is ScriptState.COMPLETE

    run_with(tmp_path, scenario)


def test_one_mebibyte_line_arrives_whole(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        body = "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo after"
        await m.start(bash("t-long", body))
        final, lines = await finish(m, "t-long")
        assert texts(lines) == [b"x" * 1048576, b"after"]

    run_with(tmp_path, scenario)


def test_start_is_idempotent_per_ticket(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        cmd = bash("t-once", "echo started >> ../../../count; echo run")
        first, second = await asyncio.gather(m.start(cmd), m.start(cmd))
        assert first.ticket == second.ticket == "t-once"
        await finish(m, "t-once")
        third = await m.start(cmd)
        assert third.state is ScriptState.COMPLETE
        assert (tmp_path / "count").read_text() == "started\n"

    run_with(tmp_path, scenario)


@pytest.mark.parametrize("ticket", ["", "../x", "a/b", ".hidden", "x" * 129, "sp ace"])
def test_bad_tickets_are_refused(tmp_path: Path, ticket: str) -> None:
    async def scenario(m: ScriptManager) -> None:
        with pytest.raises(InvalidScript):
            await m.start(bash(ticket, "true"))

    run_with(tmp_path, scenario)


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/../../b", ".cuttle/x", "", "a\\b"])
def test_escaping_file_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidScript):
        ScriptFile(name, b"")


def test_unknown_ticket_and_complete(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        with pytest.raises(UnknownTicket):
            await m.status("nope")
        with pytest.raises(UnknownTicket):
            await m.cancel("nope", "x")
        await m.start(bash("t-done", "echo hi > out.txt; echo hi"))
        await finish(m, "t-done")
        assert m.workspace_file("t-done", "out.txt").read_text() == "hi\n"
        with pytest.raises(InvalidScript):
            m.workspace_file("t-done", "../journal")
        await m.complete("t-done")
        assert not (tmp_path / "tickets" / "t-done").exists()
        with pytest.raises(UnknownTicket):
            await m.status("t-done")
        with pytest.raises(UnknownTicket):
            await m.complete("t-done")

    run_with(tmp_path, scenario)


def test_missing_interpreter_fails_to_start(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        cmd = StartCommand(ticket="t-nopy", body="print(1)", syntax=Syntax.PYTHON)
        snapshot = await m.start(cmd)
        assert snapshot.state is ScriptState.FAILED_TO_START
        assert "interpreter" in snapshot.state_reason
        final, _ = await finish(m, "t-nopy")
        assert final.state is ScriptState.FAILED_TO_START

    run_with(tmp_path, scenario, python_executable="/nonexistent/python3")


def test_service_messages_levels_variables_and_failure(tmp_path: Path) -> None:
    body = """
echo "##octopus[stdout-verbose]"
echo quiet
echo "##octopus[stdout-default]"
write_warning "careful"
write_highlight "look"
echo "##octopus[unknownThing x='eA==']"
echo "##octopus[setVariable name='bad!']"
set_octopusvariable "Colour" "blue"
set_octopusvariable "colour" "green"
echo "machine=$(get_octopusvariable Octopus.Machine.Name)"
echo "ci=$(get_octopusvariable octopus.machine.name)"
fail_step "it broke"
echo never
"""

    async def scenario(m: ScriptManager) -> None:
        variables = (Variable("Octopus.Machine.Name", "web-01"),)
        await m.start(bash("t-sm", body, variables=variables))
        final, lines = await finish(m, "t-sm")
        shown = [(line.level, line.text) for line in lines if line.source is LogSource.STDOUT]
        assert shown == [
            (LogLevel.VERBOSE, b"quiet"),
            (LogLevel.WARNING, b"careful"),
            (LogLevel.HIGHLIGHT, b"look"),
            (LogLevel.INFO, b"##octopus[setVariable name='bad!']"),
            (LogLevel.INFO, b"machine=web-01"),
            (LogLevel.INFO, b"ci=web-01"),
        ]
        assert final.exit_code == 1
        assert final.failure_message == "it broke"
        assert final.output_variables == (Variable("colour", "green"),)

    run_with(tmp_path, scenario)


def test_python_helpers_work_without_import(tmp_path: Path) -> None:
    body = """
import sys
print("args", sys.argv[1:])
print("machine", get_octopusvariable("Octopus.Machine.Name"))
set_octopusvariable("Result", "ok")
set_octopusvariable("Token", "tok-" + "value-123", True)
print("token is tok-value-123")
write_verbose("details")
with open("report.txt", "w") as f:
    f.write("report body")
new_octopusartifact("report.txt", "Report")
"""

    async def scenario(m: ScriptManager) -> None:
        cmd = StartCommand(
            ticket="t-py",
            body=body,
            syntax=Syntax.PYTHON,
            arguments=("a", "b"),
            variables=(Variable("Octopus.Machine.Name", "db-02"),),
        )
        await m.start(cmd)
        final, lines = await finish(m, "t-py")
        assert final.state is ScriptState.COMPLETE
        assert final.exit_code == 0
        out = texts(lines, LogSource.STDOUT)
        assert out[:2] == [b"args ['a', 'b']", b"machine db-02"]
        assert b"token is " + MASK in out
        assert (LogLevel.VERBOSE, b"details") in [(ln.level, ln.text) for ln in lines]
        assert final.output_variables == (
            Variable("Result", "ok"),
            Variable("Token", "tok-value-123", sensitive=True),
        )
        (artifact,) = final.artifacts
        assert (artifact.name, artifact.path, artifact.size) == ("Report", "report.txt", 11)
        # Sensitive output values are on disk only in the owner-only secrets file.
        ticket_dir = tmp_path / "tickets" / "t-py"
        assert b"tok-value-123" not in (ticket_dir / "state.json").read_bytes()
        assert b"tok-value-123" not in (ticket_dir / "journal").read_bytes()
        secrets = ticket_dir / "secrets.json"
        assert json.loads(secrets.read_text()) == {"Token": "tok-value-123"}
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600

    run_with(tmp_path, scenario)


def test_artifact_outside_workspace_is_copied_in(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.log"
    outside.write_bytes(b"0123456789")

    async def scenario(m: ScriptManager) -> None:
        await m.start(bash("t-art", f"new_octopusartifact {outside}"))
        final, _ = await finish(m, "t-art")
        (artifact,) = final.artifacts
        assert artifact.path == "artifacts/elsewhere.log"
        assert artifact.size == 10
        assert m.workspace_file("t-art", artifact.path).read_bytes() == b"0123456789"

    run_with(tmp_path, scenario)


def test_sensitive_values_are_masked_and_never_leak(tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55word"
    # The secret is written in two halves with a flush and a pause between: two read() chunks.
    body = f"""
printf '%s' 'first half: {secret[:6]}'
sleep 0.2
printf '%s end\\n' '{secret[6:]}'
echo "twice {secret} and {secret}"
echo "$(cat /proc/$$/environ | tr '\\0' '\\n' | grep -c {secret[:6]}) env hits"
echo "args: $*"
set_octopusvariable Out "later-secret-999" True
echo "out later-secret-999"
"""

    async def scenario(m: ScriptManager) -> None:
        cmd = bash("t-mask", body, variables=(Variable("Password", secret, sensitive=True),))
        await m.start(cmd)
        final, lines = await finish(m, "t-mask")
        out = texts(lines, LogSource.STDOUT)
        assert out == [
            b"first half: " + MASK + b" end",
            b"twice " + MASK + b" and " + MASK,
            b"0 env hits",
            b"args: ",
            b"out " + MASK,
        ]
        ticket_dir = tmp_path / "tickets" / "t-mask"
        for path in ticket_dir.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert secret.encode() not in data or path.name == "script.sh", path
                if path.name != "secrets.json":
                    assert b"later-secret-999" not in data or path.name == "script.sh", path
        assert not (ticket_dir / "variables.json").exists()

    run_with(tmp_path, scenario)


def test_variables_file_is_owner_only_and_outside_the_workspace(tmp_path: Path) -> None:
    body = (
        'stat -c %a "$CUTTLE_VARIABLES_FILE"; get_octopusvariable Secret\n'
        'case "$CUTTLE_VARIABLES_FILE" in "$PWD"/*) echo inside ;; *) echo outside ;; esac\n'
        'stat -c %a "$(dirname "$CUTTLE_VARIABLES_FILE")"'
    )

    async def scenario(m: ScriptManager) -> None:
        variables = (Variable("Secret", "abc-123-xyz", sensitive=True),)
        await m.start(bash("t-perm", body, variables=variables))
        _, lines = await finish(m, "t-perm")
        assert texts(lines, LogSource.STDOUT) == [b"600", MASK, b"outside", b"700"]

    run_with(tmp_path, scenario)


def test_sh_syntax_runs_with_the_same_helpers(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        cmd = StartCommand(ticket="t-sh", body='set_octopusvariable A "b c"', syntax=Syntax.SH)
        await m.start(cmd)
        final, _ = await finish(m, "t-sh")
        assert final.output_variables == (Variable("A", "b c"),)

    run_with(tmp_path, scenario)


def test_clean_workspaces_removes_only_finished_old_tickets(tmp_path: Path) -> None:
    async def scenario(m: ScriptManager) -> None:
        await m.start(bash("t-old", "true"))
        await finish(m, "t-old")
        assert await m.clean_workspaces(older_than=3600) == 0
        assert await m.clean_workspaces(older_than=0) == 1
        assert not (tmp_path / "tickets" / "t-old").exists()
        with pytest.raises(UnknownTicket):
            await m.status("t-old")

    run_with(tmp_path, scenario)


def test_service_message_helper_encoding_matches_protocol() -> None:
    # The shell helpers hand-roll base64; make sure the constant they use is "True".
    assert base64.b64decode("VHJ1ZQ==") == b"True"
    assert os.path.exists(sys.executable)
