"""The deployment model through a real server and the real CLI: YAML in, YAML out, rules held."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.harness.cluster import BIN, Cluster, Server

pytestmark = pytest.mark.integration

MODEL = Path(__file__).parent / "data" / "model.yaml"


def cuttle(
    server: Server, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI against the server with extra environment and stdin."""
    return subprocess.run(
        [str(BIN / "cuttle"), *args],
        capture_output=True,
        text=True,
        env={**server.cli_env(), **(env or {})},
        input=stdin,
        timeout=90,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def secret() -> str:
    return f"pw-{uuid.uuid4().hex}"


@pytest.fixture
def applied(cluster: Cluster, secret: str) -> Server:
    server = cluster.start_server()
    result = ok(cuttle(server, "apply", "-f", str(MODEL), env={"WEB_DB_PASSWORD": secret}))
    assert "created project Web" in result.stdout
    return server


def _database_bytes(server: Server) -> bytes:
    return b"".join(p.read_bytes() for p in server.home.glob("*.db*"))


def test_a_complete_model_applies_exports_and_reapplies_with_no_diff(
    applied: Server, secret: str, tmp_path: Path
) -> None:
    server = applied
    again = ok(
        cuttle(
            server,
            "apply",
            "-f",
            str(MODEL),
            "--dry-run",
            "--exit-code",
            env={"WEB_DB_PASSWORD": secret},
        )
    )
    assert "0 would change" in again.stdout, again.stdout

    exported = tmp_path / "exported.yaml"
    ok(cuttle(server, "export", "-o", str(exported)))
    text = exported.read_text()
    data = yaml.safe_load(text)
    assert [e["name"] for e in data["environments"]] == ["Dev", "Test", "Production"]
    (web,) = data["projects"]
    assert [s["name"] for s in web["process"]["steps"]] == [
        "Check",
        "Deploy web",
        "Approve",
        "Notify",
    ]
    assert web["process"]["steps"][1]["window_size"] == 2
    password = next(v for v in web["variables"] if v["name"] == "DbPassword")
    assert password == {
        "name": "DbPassword",
        "sensitive": True,
        "scope": {"environments": ["Production"]},
    }
    assert secret not in text

    # The export is the state: applying it changes nothing, and exporting again is identical.
    ok(cuttle(server, "apply", "-f", str(exported), "--dry-run", "--exit-code"))
    applied_again = ok(cuttle(server, "apply", "-f", str(exported)))
    assert "0 changed" in applied_again.stdout
    assert ok(cuttle(server, "export")).stdout == text


def test_sensitive_values_never_appear_in_plain_text(applied: Server, secret: str) -> None:
    server = applied
    shown = ok(cuttle(server, "project", "show", "Web", "--output", "json")).stdout
    assert secret not in shown
    events = ok(cuttle(server, "events", "--output", "json")).stdout
    assert secret not in events
    assert any(e["name"] == "Web" for e in json.loads(events))
    # Changing the secret is audited without the value.
    new_secret = f"pw-{uuid.uuid4().hex}"
    ok(
        cuttle(
            server,
            "variable",
            "set",
            "DbPassword",
            "--sensitive",
            "--project",
            "Web",
            "--environment",
            "Production",
            stdin=new_secret,
        )
    )
    events = ok(cuttle(server, "events", "--kind", "project", "--output", "json")).stdout
    assert new_secret not in events
    assert secret not in events
    assert json.loads(events)[0]["details"]["changed"] == ["variables[2].value"]
    database = _database_bytes(server)
    assert secret.encode() not in database
    assert new_secret.encode() not in database
    refused = cuttle(server, "variable", "set", "X", new_secret, "--sensitive", "--project", "Web")
    assert refused.returncode == 2
    assert "never taken from the command line" in refused.stderr


def test_malformed_files_are_rejected_whole_with_file_line_and_path(
    applied: Server, tmp_path: Path
) -> None:
    server = applied
    broken = tmp_path / "broken.yaml"
    broken.write_text("environments:\n  - name: Staging\n  - name: [unclosed\n")
    result = cuttle(server, "apply", "-f", str(broken))
    assert result.returncode == 4
    assert f"{broken}:4: malformed YAML" in result.stderr, result.stderr
    assert "at line 3" in result.stderr, result.stderr

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "environments:\n"
        "  - name: Staging\n"
        "lifecycles:\n"
        "  - name: Broken\n"
        "    phases:\n"
        "      - name: One\n"
        "        automatic_environments: [Nowhere]\n"
        "projects:\n"
        "  - name: Api\n"
        "    lifecycle: Standard\n"
        "    tenanted_mode: sometimes\n"
    )
    result = cuttle(server, "apply", "-f", str(wrong))
    assert result.returncode == 4
    assert f"{wrong}:11: projects[0].tenanted_mode" in result.stderr, result.stderr

    wrong.write_text(
        "environments:\n"
        "  - name: Staging\n"
        "lifecycles:\n"
        "  - name: Broken\n"
        "    phases:\n"
        "      - name: One\n"
        "        automatic_environments: [Nowhere]\n"
    )
    result = cuttle(server, "apply", "-f", str(wrong))
    assert result.returncode == 4
    assert (
        f"{wrong}:7: lifecycles[0].phases[0].automatic_environments[0]: "
        "no environment named 'Nowhere'"
    ) in result.stderr, result.stderr
    # Nothing was applied: Staging, which was fine, does not exist either.
    names = [
        e["name"]
        for e in json.loads(ok(cuttle(server, "environment", "list", "--output", "json")).stdout)
    ]
    assert names == ["Dev", "Test", "Production"]


def test_deleting_what_is_in_use_says_by_what(applied: Server) -> None:
    result = cuttle(applied, "environment", "delete", "Production")
    assert result.returncode == 1
    assert "still used by" in result.stderr
    assert "lifecycle 'Standard'" in result.stderr
    assert "[failed_precondition]" in result.stderr


def test_a_team_limited_to_dev_cannot_touch_production(applied: Server) -> None:
    server = applied
    created = json.loads(
        ok(cuttle(server, "api-key", "create", "--user", "alice", "--output", "json")).stdout
    )
    as_alice = {"CUTTLE_API_KEY": created["api_key"]}

    ok(
        cuttle(
            server,
            "variable",
            "set",
            "Greeting",
            "hi dev",
            "--project",
            "Web",
            "--environment",
            "Dev",
            env=as_alice,
        )
    )
    refused = cuttle(
        server,
        "variable",
        "set",
        "Greeting",
        "hi prod",
        "--project",
        "Web",
        "--environment",
        "Production",
        env=as_alice,
    )
    assert refused.returncode == 1
    assert "needs the edit role for project 'Web' in environment 'Production'" in refused.stderr
    assert "[permission_denied]" in refused.stderr
    refused = cuttle(server, "environment", "delete", "Dev", env=as_alice)
    assert "needs the administer role" in refused.stderr, refused.stderr
    refused = cuttle(server, "machine", "list", env=as_alice)
    assert "[permission_denied]" in refused.stderr
    # What alice did is audited under her name.
    events = json.loads(ok(cuttle(server, "events", "--actor", "alice", "--output", "json")).stdout)
    assert [e["name"] for e in events] == ["Web"]
    assert os.environ.get("CUTTLE_API_KEY") != created["api_key"]


def test_releases_follow_channel_rules_and_keep_their_snapshot(applied: Server) -> None:
    server = applied
    created = json.loads(
        ok(
            cuttle(
                server,
                "release",
                "create",
                "--project",
                "Web",
                "--version",
                "1.4.0",
                "--notes",
                "first",
                "--output",
                "json",
            )
        ).stdout
    )
    assert created["channel"] == "Default"

    # The default channel takes [1.0,2.0) without pre-release tags.
    outside = cuttle(server, "release", "create", "--project", "Web", "--version", "2.0.0")
    assert outside.returncode == 1
    assert "outside the channel's version range" in outside.stderr, outside.stderr
    tagged = cuttle(server, "release", "create", "--project", "Web", "--version", "1.5.0-beta")
    assert "pre-release rule ^$" in tagged.stderr, tagged.stderr
    again = cuttle(server, "release", "create", "--project", "Web", "--version", "1.4.0")
    assert "already exists" in again.stderr
    assert "[conflict]" in again.stderr
    bad = cuttle(server, "release", "create", "--project", "Web", "--version", "1.x")
    assert bad.returncode == 1, bad.stderr
    assert "version:" in bad.stderr, bad.stderr
    ok(
        cuttle(
            server,
            "release",
            "create",
            "--project",
            "Web",
            "--version",
            "1.4.1-hotfix.1",
            "--channel",
            "Hotfix",
        )
    )
    # No version: the next from the project's template (LastMajor.LastMinor.NextPatch).
    auto = json.loads(
        ok(cuttle(server, "release", "create", "--project", "Web", "--output", "json")).stdout
    )
    assert auto["version"] == "1.4.2", auto

    # Editing the project changes documents, never an existing release's snapshot.
    ok(cuttle(server, "variable", "set", "Greeting", "changed", "--project", "Web"))
    shown = json.loads(
        ok(
            cuttle(
                server,
                "release",
                "show",
                "--project",
                "Web",
                "--release",
                "1.4.0",
                "--output",
                "json",
            )
        ).stdout
    )
    greetings = [v["value"] for v in shown["snapshot"]["variables"] if v["name"] == "Greeting"]
    assert greetings == ["hello", "hello production"], greetings
    assert [s["name"] for s in shown["snapshot"]["process"]["steps"]][0] == "Check"
    # Until someone asks for it explicitly, which is audited.
    ok(cuttle(server, "release", "update-variables", "--project", "Web", "--release", "1.4.0"))
    shown = json.loads(
        ok(
            cuttle(
                server,
                "release",
                "show",
                "--project",
                "Web",
                "--release",
                "1.4.0",
                "--output",
                "json",
            )
        ).stdout
    )
    greetings = [v["value"] for v in shown["snapshot"]["variables"] if v["name"] == "Greeting"]
    assert "changed" in greetings
    events = json.loads(
        ok(cuttle(server, "events", "--kind", "release", "--output", "json")).stdout
    )
    assert events[0]["category"] == "variables-updated"

    listed = json.loads(
        ok(cuttle(server, "release", "list", "--project", "Web", "--output", "json")).stdout
    )
    assert [r["version"] for r in listed] == ["1.4.2", "1.4.1-hotfix.1", "1.4.0"]

    progression = json.loads(
        ok(
            cuttle(
                server,
                "release",
                "progression",
                "--project",
                "Web",
                "--release",
                "1.4.0",
                "--output",
                "json",
            )
        ).stdout
    )
    assert [p["name"] for p in progression["phases"]] == ["Development", "Testing", "Live"]
    assert progression["allowed_environments"] == ["Dev"]
    assert progression["automatic_environments"] == ["Dev"]
    assert "phase Live is not open" in progression["reasons"]["Production"]


def test_imperative_commands_validate_like_files(applied: Server) -> None:
    server = applied
    duplicate = cuttle(server, "environment", "create", "dev")
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr
    assert "[conflict]" in duplicate.stderr

    ok(
        cuttle(
            server,
            "process",
            "add-step",
            "--project",
            "Web",
            "--name",
            "Smoke",
            "--target-tag",
            "web-server",
            "--script",
            "echo #{Octopus.Machine.Name}",
        )
    )
    steps = json.loads(
        ok(cuttle(server, "process", "list", "--project", "Web", "--output", "json")).stdout
    )["steps"]
    assert [s["name"] for s in steps][-1] == "Smoke"

    again = cuttle(
        server, "process", "add-step", "--project", "Web", "--name", "smoke", "--script", "true"
    )
    assert again.returncode == 2, again.stderr
    assert "appears more than once" in again.stderr, again.stderr
    broken = cuttle(
        server,
        "process",
        "add-step",
        "--project",
        "Web",
        "--name",
        "Broken",
        "--script",
        "echo ok\n#{if Ready}never closed",
    )
    assert broken.returncode == 2
    assert "not a valid #{...} template" in broken.stderr, broken.stderr
    assert "line 2" in broken.stderr, broken.stderr
    unknown = cuttle(server, "project", "create", "Api", "--set", "lifecycle=Nope")
    assert unknown.returncode == 1
    assert "lifecycle: no lifecycle named 'Nope'" in unknown.stderr, unknown.stderr
    names = json.loads(ok(cuttle(server, "project", "list", "--output", "json")).stdout)
    assert [p["name"] for p in names] == ["Web"]


def test_the_server_refuses_an_encryption_key_others_can_read(tmp_path: Path) -> None:
    home = tmp_path / "server"
    subprocess.run(
        [str(BIN / "cuttle-server"), "init", "--home", str(home), "--output", "json"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key = home / "master.key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    run = subprocess.run(
        [
            str(BIN / "cuttle-server"),
            "run",
            "--home",
            str(home),
            "--listen-host",
            "127.0.0.1",
            "--admin-port",
            "0",
            "--polling-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr
    assert f"chmod 600 {key}" in run.stderr, run.stderr
    assert not (home / "ports.json").exists()


def test_runbooks_publish_snapshots(applied: Server) -> None:
    server = applied
    ok(cuttle(server, "runbook", "publish", "--project", "Web", "--runbook", "restart web"))
    ok(
        cuttle(
            server,
            "runbook",
            "publish",
            "--project",
            "Web",
            "--runbook",
            "Restart web",
            "--snapshot-name",
            "after fix",
        )
    )
    snapshots = json.loads(
        ok(
            cuttle(
                server,
                "runbook",
                "snapshots",
                "--project",
                "Web",
                "--runbook",
                "Restart web",
                "--output",
                "json",
            )
        ).stdout
    )
    assert [(s["name"], s["published"]) for s in snapshots] == [
        ("after fix", True),
        ("Snapshot 1", False),
    ]
    missing = cuttle(server, "runbook", "publish", "--project", "Web", "--runbook", "Nope")
    assert "has no runbook 'Nope' (it has: Restart web)" in missing.stderr, missing.stderr
