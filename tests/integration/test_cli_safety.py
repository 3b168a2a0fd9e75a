"""The CLI asks before destroying, names what a typo missed, and completes in the shell.

Everything goes through the real `cuttle` CLI against a real server (and, for machines, a real
Tentacle); a terminal is a real pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.cluster import BIN, Cluster, Server

# Each test runs dozens of CLI commands, each a process start and a TLS handshake.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def _refused(result: subprocess.CompletedProcess[str], *texts: str, code: int = 1) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    for text in texts:
        assert text in result.stderr, (text, result.stderr)


def _on_terminal(server: Server, answer: str, *args: str) -> tuple[int, str]:
    """Run cuttle with a pseudo-terminal as stdin/stdout/stderr, answer its question."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "cuttle"), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=server.cli_env(),
        close_fds=True,
    )
    os.close(follower)
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(leader, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    assert answered, seen.decode(errors="replace")
    return code, seen.decode(errors="replace")


def _project(server: Server) -> dict[str, Any]:
    result: dict[str, Any] = _json(cuttle(server, "project", "show", "Web", "--output", "json"))
    return result


def test_destructive_commands_ask_and_say_what_goes_with_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    ok(cuttle(server, "environment", "create", "Dev"))
    ok(cuttle(server, "project", "create", "Web"))
    for version in ("1.0.0", "1.0.1"):
        ok(cuttle(server, "release", "create", "--project", "Web", "--version", version))

    # No terminal and no --yes: refused, and nothing is deleted.
    _refused(
        cuttle(server, "project", "delete", "Web"),
        "refusing to delete project Web and its 2 releases",
        "pass --yes",
    )
    _refused(
        cuttle(server, "release", "delete", "--project", "Web", "--release", "1.0.0"),
        "pass --yes",
    )
    assert _project(server)["name"] == "Web"

    # On a terminal the question says what goes; "no" keeps it, "yes" deletes it.
    code, screen = _on_terminal(server, "n", "project", "delete", "Web")
    assert code == 1, screen
    assert "Delete project Web and its 2 releases" in screen, screen
    assert "cancelled; nothing was changed" in screen
    assert _project(server)["name"] == "Web"
    code, screen = _on_terminal(server, "y", "environment", "delete", "Dev")
    assert code == 0, screen
    assert "deleted environment Dev" in screen
    deleted = ok(cuttle(server, "project", "delete", "Web", "--yes"))
    assert "deleted project Web and its 2 releases" in deleted.stderr

    # apply --prune: the deletions are named before anything happens.
    ok(cuttle(server, "environment", "create", "Extra"))
    wanted = tmp_path / "wanted.yaml"
    wanted.write_text(yaml.safe_dump({"environments": [{"name": "Test"}]}))
    _refused(
        cuttle(server, "apply", "-f", str(wanted), "--prune"),
        "refusing to apply and delete 1 document(s): environment Extra",
        "pass --yes",
    )
    names = [e["name"] for e in _json(cuttle(server, "environment", "list", "--output", "json"))]
    assert names == ["Extra"]
    ok(cuttle(server, "apply", "-f", str(wanted), "--prune", "--yes"))
    names = [e["name"] for e in _json(cuttle(server, "environment", "list", "--output", "json"))]
    assert names == ["Test"]

    # machine remove: a typo is named before the question; then --yes is needed.
    cluster.add_tentacle("web-01", "polling", environments=("Test",))
    _refused(
        cuttle(server, "machine", "remove", "web-1", "--yes"),
        "machine 'web-1' was not found; did you mean 'web-01'?",
    )
    _refused(cuttle(server, "machine", "remove", "web-01"), "remove machine web-01", "pass --yes")
    ok(cuttle(server, "machine", "remove", "web-01", "--yes"))
    assert _json(cuttle(server, "machine", "list", "--output", "json")) == []


def test_names_that_do_not_exist_are_refused_with_the_close_one(cluster: Cluster) -> None:
    server = cluster.start_server()
    for name in ("Dev", "Production"):
        ok(cuttle(server, "environment", "create", name))
    runbooks = [
        {
            "name": "Restart",
            "environments": ["Dev"],
            "process": {
                "steps": [
                    {
                        "name": "Restart",
                        "target_tags": ["web"],
                        "actions": [
                            {"name": "Restart", "type": "run_script", "script": {"body": "true"}}
                        ],
                    }
                ]
            },
        }
    ]
    ok(cuttle(server, "project", "create", "Web", "--set", f"runbooks={json.dumps(runbooks)}"))
    ok(cuttle(server, "release", "create", "--project", "Web", "--version", "1.0.0"))

    _refused(cuttle(server, "project", "show", "Wbe"), "did you mean 'Web'?", "[not_found]")
    _refused(
        cuttle(
            server, "deploy", "--project", "Web", "--release", "1.0.0", "--environment", "Prodution"
        ),
        "did you mean 'Production'?",
    )
    _refused(
        cuttle(
            server,
            "runbook",
            "run",
            "--project",
            "Web",
            "--runbook",
            "Restrat",
            "--environment",
            "Dev",
        ),
        "has no runbook 'Restrat'",
        "did you mean 'Restart'?",
    )
    _refused(
        cuttle(server, "machine", "list", "--environment", "Prodution"),
        "environment 'Prodution' does not exist; did you mean 'Production'?",
        code=2,
    )
    _refused(
        cuttle(server, "script", "run", "--environment", "Dve", "--", "true"),
        "did you mean 'Dev'?",
        code=2,
    )
    _refused(
        cuttle(server, "variable", "set", "X", "1", "--project", "Web", "--environment", "Dve"),
        "no environment named 'Dve'; did you mean 'Dev'?",
    )
    _refused(cuttle(server, "events", "--category", "delted"), "did you mean 'deleted'?", code=2)
    # A channel filter is a name like any other: any case matches, a typo is refused.
    listed = _json(
        cuttle(
            server,
            "release",
            "list",
            "--project",
            "Web",
            "--channel",
            "default",
            "--output",
            "json",
        )
    )
    assert [r["version"] for r in listed] == ["1.0.0"]
    _refused(
        cuttle(server, "release", "list", "--project", "Web", "--channel", "Defualt"),
        "project 'Web' has no channel 'Defualt'; did you mean 'Default'?",
        "[not_found]",
    )
    # A release keeps the channel it was made in after the channel is gone, and lists by it.
    ok(cuttle(server, "channel", "create", "Beta", "--project", "Web"))
    ok(
        cuttle(
            server,
            "release",
            "create",
            "--project",
            "Web",
            "--version",
            "2.0.0",
            "--channel",
            "Beta",
        )
    )
    ok(cuttle(server, "channel", "delete", "Beta", "--project", "Web", "--yes"))
    listed = _json(
        cuttle(
            server, "release", "list", "--project", "Web", "--channel", "BETA", "--output", "json"
        )
    )
    assert [r["version"] for r in listed] == ["2.0.0"]
    assert (
        _json(cuttle(server, "events", "--category", "machine removed", "--output", "json")) == []
    )
    _refused(cuttle(server, "--space", "Defualt", "environment", "list"), "did you mean 'Default'?")

    # Machines are server-wide: --space is refused, not ignored (CUTTLE_SPACE is a default).
    _refused(
        cuttle(server, "--space", "Default", "machine", "list"), "machines are server-wide", code=2
    )
    _refused(
        cuttle(server, "--space", "Default", "script", "run", "--", "true"), "server-wide", code=2
    )
    assert (
        _json(
            cuttle(server, "machine", "list", "--output", "json", env={"CUTTLE_SPACE": "Default"})
        )
        == []
    )


def test_shell_completion_scripts_complete_commands(cluster: Cluster) -> None:
    del cluster
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
        source = subprocess.run(
            [str(BIN / "cuttle"), "completion", shell],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "_CUTTLE_COMPLETE" in source, (shell, source)
        assert marker in source, (shell, source)
    # What the bash function asks cuttle when <Tab> is pressed after "cuttle chan".
    answer = subprocess.run(
        [str(BIN / "cuttle")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={
            **os.environ,
            "_CUTTLE_COMPLETE": "bash_complete",
            "COMP_WORDS": "cuttle chan",
            "COMP_CWORD": "1",
        },
    ).stdout
    assert "plain,channel" in answer.splitlines(), answer
