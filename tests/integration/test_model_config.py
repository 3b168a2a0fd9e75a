"""The deployment model through a real server and the real CLI: YAML in, YAML out, rules held."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.cluster import BIN, Cluster, Server

pytestmark = pytest.mark.integration

MODEL = Path(__file__).parent / "data" / "model.yaml"


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
    result = cuttle(applied, "environment", "delete", "Production", "--yes")
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
    refused = cuttle(server, "environment", "delete", "Dev", "--yes", env=as_alice)
    assert "needs the administer role" in refused.stderr, refused.stderr
    # Machines are seen through their environments: alice may see Dev's (there are none).
    assert (
        json.loads(ok(cuttle(server, "machine", "list", "--output", "json", env=as_alice)).stdout)
        == []
    )
    refused = cuttle(server, "machine", "remove", "web-01", "--yes", env=as_alice)
    assert "[not_found]" in refused.stderr, refused.stderr
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


def _write(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _environments(server: Server) -> list[str]:
    listed = ok(cuttle(server, "environment", "list", "--output", "json")).stdout
    return [e["name"] for e in json.loads(listed)]


def test_prune_deletes_what_the_files_no_longer_declare_in_the_kinds_they_manage(
    applied: Server, tmp_path: Path
) -> None:
    server = applied
    ok(cuttle(server, "environment", "create", "Staging"))
    ok(cuttle(server, "project", "create", "Api"))
    exported = tmp_path / "exported.yaml"
    ok(cuttle(server, "export", "-o", str(exported)))
    model = yaml.safe_load(exported.read_text())
    model["environments"] = [e for e in model["environments"] if e["name"] != "Staging"]
    model["projects"] = [p for p in model["projects"] if p["name"] != "Api"]
    del model["tenants"]
    wanted = _write(tmp_path / "wanted.yaml", model)

    # Without --prune nothing goes; with it, a dry run shows the deletions as changes.
    ok(cuttle(server, "apply", "-f", str(wanted), "--dry-run", "--exit-code"))
    dry = cuttle(server, "apply", "-f", str(wanted), "--prune", "--dry-run", "--exit-code")
    assert dry.returncode == 3, dry.stdout + dry.stderr
    assert "delete project Api\ndelete environment Staging\n" in dry.stdout, dry.stdout
    assert "2 would change (2 delete)," in dry.stdout, dry.stdout
    assert "Contoso" not in dry.stdout
    assert "Staging" in _environments(server)

    pruned = ok(cuttle(server, "apply", "-f", str(wanted), "--prune", "--yes", "--output", "json"))
    deletions = [c for c in json.loads(pruned.stdout)["changes"] if c["action"] == "delete"]
    assert [(c["kind"], c["name"]) for c in deletions] == [
        ("project", "Api"),
        ("environment", "Staging"),
    ]
    assert _environments(server) == ["Dev", "Test", "Production"]
    # The file declares no tenants, so Contoso stays until a tenant kind is named.
    tenants = json.loads(ok(cuttle(server, "tenant", "list", "--output", "json")).stdout)
    assert [t["name"] for t in tenants] == ["Contoso"]
    events = json.loads(
        ok(cuttle(server, "events", "--category", "deleted", "--output", "json")).stdout
    )
    assert [(e["kind"], e["name"]) for e in events] == [
        ("environment", "Staging"),
        ("project", "Api"),
    ]

    usage = cuttle(server, "apply", "-f", str(wanted), "--prune-kind", "tenant")
    assert usage.returncode == 2
    assert "--prune-kind needs --prune" in usage.stderr
    ok(cuttle(server, "apply", "-f", str(wanted), "--prune", "--yes", "--prune-kind", "tenants"))
    assert json.loads(ok(cuttle(server, "tenant", "list", "--output", "json")).stdout) == []
    # The documents a space starts with are never pruned.
    lifecycles = json.loads(ok(cuttle(server, "lifecycle", "list", "--output", "json")).stdout)
    assert [lc["name"] for lc in lifecycles] == ["Default Lifecycle", "Standard"]


def test_a_prune_that_something_still_needs_is_refused_and_nothing_is_applied(
    applied: Server, cluster: Cluster, tmp_path: Path
) -> None:
    server = applied
    cluster.add_tentacle("web-01", "polling", environments=("Staging",))
    wanted = _write(
        tmp_path / "wanted.yaml",
        {"environments": [{"name": "Dev"}, {"name": "Test"}, {"name": "Extra"}]},
    )
    refused = cuttle(server, "apply", "-f", str(wanted), "--prune", "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "[failed_precondition]" in refused.stderr
    assert "cannot prune (nothing was applied)" in refused.stderr
    assert (
        "environment 'Production' is still used by: lifecycle 'Standard' at "
        "phases[2].optional_environments[0]"
    ) in refused.stderr, refused.stderr
    assert "environment 'Staging' is still used by machine(s) web-01" in refused.stderr
    assert _environments(server) == ["Dev", "Test", "Production", "Staging"]


def test_a_prune_deletes_only_what_the_caller_may_see_and_may_delete(
    applied: Server, tmp_path: Path
) -> None:
    server = applied
    ok(cuttle(server, "project", "create", "Api"))
    created = json.loads(
        ok(cuttle(server, "api-key", "create", "--user", "alice", "--output", "json")).stdout
    )
    as_alice = {"CUTTLE_API_KEY": created["api_key"]}
    # alice sees only Web: her export applied with --prune leaves Api alone.
    mine = tmp_path / "mine.yaml"
    ok(cuttle(server, "export", "--kind", "projects", "-o", str(mine), env=as_alice))
    dry = ok(cuttle(server, "apply", "-f", str(mine), "--prune", "--dry-run", env=as_alice))
    assert "0 would change, 1 unchanged" in dry.stdout, dry.stdout
    # An administrator applying the same file would delete Api.
    dry = ok(cuttle(server, "apply", "-f", str(mine), "--prune", "--dry-run"))
    assert "delete project Api" in dry.stdout, dry.stdout

    # What she can see but not delete refuses the whole prune.
    nothing = _write(tmp_path / "nothing.yaml", {})
    refused = cuttle(
        server,
        "apply",
        "-f",
        str(nothing),
        "--prune",
        "--yes",
        "--prune-kind",
        "user",
        env=as_alice,
    )
    assert refused.returncode == 1
    assert "[permission_denied]" in refused.stderr
    assert "administer role" in refused.stderr, refused.stderr
    assert "delete user" in refused.stderr, refused.stderr
    users = json.loads(ok(cuttle(server, "user", "list", "--output", "json")).stdout)
    assert [u["name"] for u in users] == ["alice", "rita"]


def test_two_included_library_sets_that_tie_are_refused_where_they_meet(
    applied: Server, tmp_path: Path
) -> None:
    server = applied

    def port(value: str) -> dict[str, object]:
        return {"name": "Port", "value": value, "scope": {"environments": ["Dev"]}}

    sets = _write(
        tmp_path / "sets.yaml",
        {
            "library_variable_sets": [
                {"name": "Common", "variables": [port("80")]},
                {"name": "Web defaults", "variables": [{"name": "Other", "value": "x"}]},
            ],
            "projects": [{"name": "Api", "library_variable_sets": ["Common", "Web defaults"]}],
        },
    )
    ok(cuttle(server, "apply", "-f", str(sets)))

    # Giving the second set a value that ties with the first is refused at that value.
    tied = _write(
        tmp_path / "tied.yaml",
        {
            "library_variable_sets": [
                {
                    "name": "Web defaults",
                    "variables": [{"name": "Other", "value": "x"}, port("8080")],
                },
            ]
        },
    )
    refused = cuttle(server, "apply", "-f", str(tied))
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert (
        f"{tied}:6: library_variable_sets[0].variables[1]: variable 'Port' is ambiguous in "
        "project 'Api': the value from library variable set 'Common' scoped to environment Dev "
        "and the value from library variable set 'Web defaults' scoped to environment Dev both "
        "apply, equally specific, when the environment is Dev"
    ) in refused.stderr, refused.stderr

    # The project's own value for that scope decides, so the same change is then accepted.
    ok(cuttle(server, "variable", "set", "Port", "443", "--project", "Api", "--environment", "Dev"))
    ok(cuttle(server, "apply", "-f", str(tied)))
