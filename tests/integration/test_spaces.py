"""Spaces through a real server and the real CLI: separate models under one server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.cluster import Cluster, Server

pytestmark = pytest.mark.integration

MODEL = """
environments:
  - name: Dev
  - name: Production
users:
  - name: alice
teams:
  - name: Admins
    members: [alice]
    grants:
      - role: administer
projects:
  - name: Web
    description: {description}
"""


def _model(tmp_path: Path, name: str, description: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MODEL.format(description=description))
    return str(path)


def _spaces(server: Server) -> dict[str, bool]:
    listed = json.loads(ok(cuttle(server, "space", "list", "--output", "json")).stdout)
    return {s["name"]: s["is_default"] for s in listed}


@pytest.fixture
def server(cluster: Cluster) -> Server:
    return cluster.start_server()


def test_the_same_names_live_independently_in_two_spaces(server: Server, tmp_path: Path) -> None:
    ok(cuttle(server, "space", "create", "Team-B"))
    assert _spaces(server) == {"Default": True, "Team-B": False}

    ok(cuttle(server, "apply", "-f", _model(tmp_path, "a", "in default")))
    # The global option and the environment variable both choose the space.
    ok(cuttle(server, "--space", "Team-B", "apply", "-f", _model(tmp_path, "b", "in b")))
    as_b = {"CUTTLE_SPACE": "Team-B"}
    shown = json.loads(
        ok(cuttle(server, "project", "show", "Web", "--output", "json", env=as_b)).stdout
    )
    assert shown["description"] == "in b"
    shown = json.loads(ok(cuttle(server, "project", "show", "Web", "--output", "json")).stdout)
    assert shown["description"] == "in default"
    # A command's own --space wins over the environment.
    shown = json.loads(
        ok(
            cuttle(
                server, "project", "show", "Web", "--space", "Default", "--output", "json", env=as_b
            )
        ).stdout
    )
    assert shown["description"] == "in default"

    # Each space exports its own model, and the space starts with the default documents.
    export_b = yaml.safe_load(ok(cuttle(server, "export", env=as_b)).stdout)
    assert [p["description"] for p in export_b["projects"]] == ["in b"]
    assert "Default Lifecycle" in [lc["name"] for lc in export_b["lifecycles"]]
    ok(cuttle(server, "environment", "delete", "Dev", "--yes", env=as_b))
    names = [
        e["name"]
        for e in json.loads(ok(cuttle(server, "environment", "list", "--output", "json")).stdout)
    ]
    assert names == ["Dev", "Production"]

    ok(cuttle(server, "release", "create", "--project", "Web", "--version", "1.0.0", env=as_b))
    listed = json.loads(
        ok(cuttle(server, "release", "list", "--project", "Web", "--output", "json")).stdout
    )
    assert listed == []


def test_a_space_is_renamed_and_deleted_only_once_empty(server: Server, tmp_path: Path) -> None:
    ok(cuttle(server, "space", "create", "Ops"))
    ok(cuttle(server, "space", "rename", "Ops", "Operations"))
    assert _spaces(server) == {"Default": True, "Operations": False}
    ok(cuttle(server, "--space", "Operations", "apply", "-f", _model(tmp_path, "m", "x")))

    refused = cuttle(server, "space", "delete", "Operations", "--yes")
    assert refused.returncode == 1
    assert "[failed_precondition]" in refused.stderr
    assert "still holds" in refused.stderr
    assert "1 project(s)" in refused.stderr, refused.stderr
    assert "2 environment(s)" in refused.stderr, refused.stderr

    empty = tmp_path / "empty.yaml"
    empty.write_text("environments: []\n")
    ok(
        cuttle(
            server,
            "--space",
            "Operations",
            "apply",
            "-f",
            str(empty),
            "--prune",
            "--yes",
            *("--prune-kind", "environment", "--prune-kind", "project"),
            *("--prune-kind", "team", "--prune-kind", "user"),
        )
    )
    ok(cuttle(server, "space", "delete", "Operations", "--yes"))
    assert _spaces(server) == {"Default": True}

    events = json.loads(ok(cuttle(server, "events", "--kind", "space", "--output", "json")).stdout)
    assert [e["message"] for e in events][:3] == [
        "Deleted space Operations",
        "Renamed space Ops to Operations",
        "Created space Ops",
    ]


def test_the_default_space_stays_and_unknown_spaces_are_named(server: Server) -> None:
    for args in (("space", "delete", "Default", "--yes"), ("space", "rename", "Default", "Other")):
        refused = cuttle(server, *args)
        assert refused.returncode == 1
        assert "[failed_precondition]" in refused.stderr
        assert "default space 'Default' cannot be" in refused.stderr
    ok(cuttle(server, "space", "create", "Twin"))
    refused = cuttle(server, "space", "create", "twin")
    assert "[conflict]" in refused.stderr
    assert "space named 'twin' already exists" in refused.stderr

    for args in (
        ("--space", "Nowhere", "environment", "list"),
        ("--space", "Nowhere", "export"),
        ("--space", "Nowhere", "release", "list", "--project", "Web"),
        ("space", "delete", "Nowhere", "--yes"),
        ("space", "rename", "Nowhere", "Somewhere"),
    ):
        refused = cuttle(server, *args)
        assert refused.returncode == 1, args
        assert "[not_found]" in refused.stderr, (args, refused.stderr)
        assert "space 'Nowhere' was not found" in refused.stderr, (args, refused.stderr)


def test_team_grants_hold_in_their_own_space_only(server: Server, tmp_path: Path) -> None:
    ok(cuttle(server, "space", "create", "Team-B"))
    b = {"CUTTLE_SPACE": "Team-B"}
    # alice administers everything in Team-B, through a team of Team-B.
    ok(cuttle(server, "apply", "-f", _model(tmp_path, "b", "in b"), env=b))
    created = json.loads(
        ok(cuttle(server, "api-key", "create", "--user", "alice", "--output", "json", env=b)).stdout
    )
    as_alice = {"CUTTLE_API_KEY": created["api_key"]}

    ok(cuttle(server, "environment", "create", "Test", env={**as_alice, **b}))
    refused = cuttle(server, "environment", "create", "Test", env=as_alice)
    assert "[permission_denied]" in refused.stderr, refused.stderr
    refused = cuttle(server, "environment", "list", env=as_alice)
    assert "[permission_denied]" in refused.stderr, refused.stderr
    # Administering a space is not administering the server: no spaces, no machines.
    for args in (("space", "create", "Mine"), ("space", "list"), ("machine", "list")):
        refused = cuttle(server, *args, env={**as_alice, **b})
        assert "[permission_denied]" in refused.stderr, (args, refused.stderr)


def test_a_space_administrator_manages_only_that_space_s_keys(
    server: Server, tmp_path: Path
) -> None:
    ok(cuttle(server, "space", "create", "Team-B"))
    b = {"CUTTLE_SPACE": "Team-B"}
    ok(cuttle(server, "apply", "-f", _model(tmp_path, "b", "in b"), env=b))
    ok(cuttle(server, "apply", "-f", _model(tmp_path, "a", "in default")))

    def key_for(env: dict[str, str]) -> dict[str, str]:
        made = cuttle(server, "api-key", "create", "--user", "alice", "--output", "json", env=env)
        created: dict[str, str] = json.loads(ok(made).stdout)
        return created

    alice_b, alice_default = key_for(b), key_for({})
    as_alice_b = {"CUTTLE_API_KEY": alice_b["api_key"], **b}

    listed = json.loads(
        ok(cuttle(server, "api-key", "list", "--output", "json", env=as_alice_b)).stdout
    )
    ids = {k["id"] for k in listed}
    # Team-B's administrator sees Team-B's keys: not the default space's, not the init keys.
    assert alice_b["id"] in ids
    assert alice_default["id"] not in ids
    everything = json.loads(ok(cuttle(server, "api-key", "list", "--output", "json")).stdout)
    assert {alice_b["id"], alice_default["id"]} <= {k["id"] for k in everything}
    assert len(everything) > len(listed)

    refused = cuttle(server, "api-key", "revoke", alice_default["id"], env=as_alice_b)
    assert "[permission_denied]" in refused.stderr, refused.stderr
    ok(cuttle(server, "api-key", "revoke", alice_default["id"]))
    ok(cuttle(server, "api-key", "revoke", alice_b["id"], env=as_alice_b))


def test_machines_of_the_default_space_do_not_keep_another_space_s_environment(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening", environments=("Dev",))
    ok(cuttle(server, "space", "create", "Ops"))
    ok(cuttle(server, "--space", "Ops", "apply", "-f", _model(tmp_path, "m", "x")))
    # web-01 is in the default space's Dev, not in Ops' Dev.
    ok(cuttle(server, "--space", "Ops", "environment", "delete", "Dev", "--yes"))
    refused = cuttle(server, "environment", "delete", "Dev", "--yes")
    assert refused.returncode == 1
    assert "still used by machine(s) web-01" in refused.stderr, refused.stderr
