"""The built-in package feed through a real server and the real CLI.

Push, list, delete, prune and their rules; releases choosing and recording package versions;
a CI key that may push and nothing more; a push killed mid-way; two server nodes on one
PostgreSQL database sharing one package root.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import zipfile
from pathlib import Path

import grpc
import pytest

from cuttle.protocol.v1 import packages_pb2 as ppb
from cuttle.protocol.v1 import packages_pb2_grpc
from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.clients import admin_channel
from tests.integration.harness.cluster import BIN, Cluster, Server, wait_for
from tests.integration.harness.postgres import server_url

pytestmark = pytest.mark.integration

MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Web
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
      - name: Stable
        prerelease_pattern: "^$"
    process:
      steps:
        - name: Deploy web
          target_tags: [web-server]
          actions:
            - name: Deploy web
              type: deploy_package
              package:
                package_id: web
        - name: Migrate
          target_tags: [web-server]
          actions:
            - name: Run migrations
              type: run_script
              script:
                package:
                  package_id: tools
                file: migrate.sh
"""

GHOST = """
projects:
  - name: Ghostly
    lifecycle: Only Dev
    process:
      steps:
        - name: Haunt
          target_tags: [web-server]
          actions:
            - name: Haunt
              type: deploy_package
              package:
                package_id: ghost
"""

CI_MODEL = """
users:
  - name: ci
    is_service_account: true
teams:
  - name: Build servers
    members: [ci]
    grants:
      - role: package_push
"""


def make_zip(path: Path, marker: str, size: int = 600_000) -> str:
    """A zip holding a file of `size` bytes that differ per marker; returns its SHA-256."""
    body = (hashlib.sha256(marker.encode()).hexdigest() * (size // 64 + 1))[:size]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("app/index.txt", body)
        archive.writestr("Deploy.sh", f"echo {marker}\n")
        archive.writestr("migrate.sh", f'echo "migrating {marker} in $(basename "$PWD")"\n')
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed(server: Server, *args: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = json.loads(
        ok(cuttle(server, "package", "list", "--output", "json", *args)).stdout
    )
    return found


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "sha256").rglob("*") if p.is_file())


@pytest.fixture
def server(cluster: Cluster) -> Server:
    return cluster.start_server()


def test_push_list_replace_delete_and_prune_follow_the_rules(
    server: Server, tmp_path: Path
) -> None:
    shas = {}
    for version in ("1.0.0", "1.1.0", "2.0.0-beta.1"):
        shas[version] = make_zip(tmp_path / f"web.{version}.zip", version)
    shas["tools"] = make_zip(tmp_path / "tools.3.0.0.tar", "tools")
    for name in ("web.1.0.0.zip", "web.1.1.0.zip", "web.2.0.0-beta.1.zip", "tools.3.0.0.tar"):
        ok(cuttle(server, "package", "push", str(tmp_path / name)))

    web = listed(server, "--package-id", "WEB")
    assert [p["version"] for p in web] == ["2.0.0-beta.1", "1.1.0", "1.0.0"]
    first = web[-1]
    assert first["sha256"] == shas["1.0.0"]
    assert first["size"] == (tmp_path / "web.1.0.0.zip").stat().st_size
    assert first["format"] == "zip"
    assert first["pushed_by"] == "initial admin"
    assert str(first["pushed_at"]).endswith("Z")
    table = ok(cuttle(server, "package", "list")).stdout
    assert "tools" in table
    assert "3.0.0" in table

    # A duplicate exits non-zero saying what to do; its bytes are not stored.
    again = tmp_path / "again" / "web.1.0.0.zip"
    again.parent.mkdir()
    make_zip(again, "different")
    refused = cuttle(server, "package", "push", str(again))
    assert refused.returncode != 0
    assert "already in the feed" in refused.stderr
    assert "--replace" in refused.stderr
    assert len(stored_files(server.home / "packages")) == 4

    # Bad input: clear errors, nothing stored.
    for name, problem in (("web.zip", "has no version"), ("web.1.0.0.rar", "not a supported")):
        (tmp_path / name).write_bytes(b"x")
        refused = cuttle(server, "package", "push", str(tmp_path / name))
        assert refused.returncode != 0
        assert problem in refused.stderr, refused.stderr
    assert len(listed(server)) == 4

    # Releases: the newest version fitting the channel, or the one asked for.
    model = tmp_path / "model.yaml"
    model.write_text(MODEL)
    ok(cuttle(server, "apply", "-f", str(model)))
    made = json.loads(
        ok(
            cuttle(
                server,
                "release",
                "create",
                "--project",
                "Web",
                "--version",
                "1.0.0",
                "--output",
                "json",
            )
        ).stdout
    )
    assert {(p["action"], p["package_id"], p["version"]) for p in made["packages"]} == {
        ("Deploy web", "web", "2.0.0-beta.1"),
        ("Run migrations", "tools", "3.0.0"),
    }
    ok(
        cuttle(
            server,
            "release",
            "create",
            "--project",
            "Web",
            "--version",
            "1.1.0",
            "--channel",
            "Stable",
        )
    )
    shown = json.loads(
        ok(
            cuttle(
                server,
                "release",
                "show",
                "--project",
                "Web",
                "--release",
                "1.1.0",
                "--output",
                "json",
            )
        ).stdout
    )
    recorded = {p["package_id"]: p for p in shown["packages"]}
    assert recorded["web"]["version"] == "1.1.0"
    assert recorded["web"]["sha256"] == shas["1.1.0"]
    assert recorded["tools"]["sha256"] == shas["tools"]
    assert recorded["web"]["use"] == "package"
    assert recorded["tools"]["use"] == "script"
    ok(
        cuttle(
            server,
            "release",
            "create",
            "--project",
            "Web",
            "--version",
            "1.2.0",
            "--package",
            "Deploy web:1.0.0",
        )
    )
    # A chosen version outside the channel's rules, and one not in the feed.
    refused = cuttle(
        server,
        "release",
        "create",
        "--project",
        "Web",
        "--version",
        "1.3.0",
        "--channel",
        "Stable",
        "--package",
        "web:2.0.0-beta.1",
    )
    assert refused.returncode != 0
    assert "pre-release rule" in refused.stderr, refused.stderr
    refused = cuttle(
        server,
        "release",
        "create",
        "--project",
        "Web",
        "--version",
        "1.3.0",
        "--package",
        "web:9.9.9",
    )
    assert "version 9.9.9 (from --package 'web:9.9.9') is not in the feed" in refused.stderr
    ghost = tmp_path / "ghost.yaml"
    ghost.write_text(GHOST)
    ok(cuttle(server, "apply", "-f", str(ghost)))
    refused = cuttle(server, "release", "create", "--project", "Ghostly", "--version", "1.0.0")
    assert refused.returncode != 0
    assert "package 'ghost' has no version in the feed" in refused.stderr, refused.stderr

    # Recorded versions: no replace, no delete; both say which releases.
    replacement = tmp_path / "again" / "web.1.1.0.zip"
    make_zip(replacement, "replacement")
    refused = cuttle(server, "package", "push", str(replacement), "--replace")
    assert refused.returncode != 0
    assert "cannot be replaced: releases Web 1.1.0 recorded it" in refused.stderr
    refused = cuttle(server, "package", "delete", "web", "1.0.0", "--yes")
    assert refused.returncode != 0
    assert "used by releases Web 1.2.0" in refused.stderr, refused.stderr

    # Replace an unrecorded version, then prune what no release uses.
    ok(cuttle(server, "release", "delete", "--project", "Web", "--release", "1.0.0", "--yes"))
    beta = tmp_path / "again" / "web.2.0.0-beta.1.zip"
    new_sha = make_zip(beta, "beta again")
    pushed = json.loads(
        ok(cuttle(server, "package", "push", str(beta), "--replace", "--output", "json")).stdout
    )
    assert pushed["replaced"] is True
    assert pushed["sha256"] == new_sha
    dry = json.loads(ok(cuttle(server, "package", "prune", "--dry-run", "--output", "json")).stdout)
    assert [(p["package_id"], p["version"]) for p in dry["removed"]] == [("web", "2.0.0-beta.1")]
    assert len(listed(server)) == 4
    ok(cuttle(server, "package", "prune", "--yes"))
    assert sorted((p["package_id"], p["version"]) for p in listed(server)) == [
        ("tools", "3.0.0"),
        ("web", "1.0.0"),
        ("web", "1.1.0"),
    ]
    assert len(stored_files(server.home / "packages")) == 3
    ok(cuttle(server, "release", "delete", "--project", "Web", "--release", "1.2.0", "--yes"))
    ok(cuttle(server, "package", "delete", "web", "1.0.0", "--yes"))
    assert len(stored_files(server.home / "packages")) == 2

    trail = json.loads(ok(cuttle(server, "events", "--kind", "package", "--output", "json")).stdout)
    categories = [(e["category"], e["name"]) for e in trail]
    assert ("deleted", "web 1.0.0") in categories
    assert ("pruned", "web 2.0.0-beta.1") in categories
    assert ("replaced", "web 2.0.0-beta.1") in categories
    assert categories.count(("pushed", "web 1.0.0")) == 1


def test_the_same_bytes_under_two_versions_are_stored_once(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "build.zip"
    sha = make_zip(path, "same")
    for version in ("1.0.0", "1.0.1"):
        ok(
            cuttle(
                server, "package", "push", str(path), "--package-id", "web", "--version", version
            )
        )
    assert {p["sha256"] for p in listed(server)} == {sha}
    assert stored_files(server.home / "packages") == [
        server.home / "packages/sha256" / sha[:2] / sha
    ]


def test_a_package_larger_than_a_grpc_message_goes_through(server: Server, tmp_path: Path) -> None:
    # More than MAX_MESSAGE_BYTES (16 MiB): the push is chunked, never one message.
    path = tmp_path / "big.1.0.0.tar"
    with path.open("wb") as out:
        for _ in range(20):
            out.write(os.urandom(1024 * 1024))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    pushed = json.loads(ok(cuttle(server, "package", "push", str(path), "--output", "json")).stdout)
    assert (pushed["sha256"], pushed["size"], pushed["format"]) == (sha, 20 * 1024 * 1024, "tar")
    stored = server.home / "packages/sha256" / sha[:2] / sha
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha


def test_each_space_has_its_own_feed(server: Server, tmp_path: Path) -> None:
    ok(cuttle(server, "space", "create", "Team-B"))
    make_zip(tmp_path / "web.1.0.0.zip", "b")
    ok(cuttle(server, "package", "push", str(tmp_path / "web.1.0.0.zip"), "--space", "Team-B"))
    assert listed(server) == []
    assert [p["version"] for p in listed(server, "--space", "Team-B")] == ["1.0.0"]
    # A space holding packages is not deleted (their files would be left behind).
    refused = cuttle(server, "space", "delete", "Team-B", "--yes")
    assert "1 package version(s)" in refused.stderr, refused.stderr
    ok(cuttle(server, "package", "prune", "--space", "Team-B", "--yes"))
    ok(cuttle(server, "space", "delete", "Team-B", "--yes"))
    assert stored_files(server.home / "packages") == []


def test_a_key_with_only_package_push_pushes_and_does_nothing_else(
    server: Server, tmp_path: Path
) -> None:
    model = tmp_path / "model.yaml"
    model.write_text(MODEL + CI_MODEL)
    ok(cuttle(server, "apply", "-f", str(model)))
    key = json.loads(
        ok(cuttle(server, "api-key", "create", "--user", "ci", "--output", "json")).stdout
    )["api_key"]
    as_ci = {"CUTTLE_API_KEY": key}
    make_zip(tmp_path / "web.1.0.0.zip", "ci")
    make_zip(tmp_path / "tools.1.0.0.zip", "ci tools")
    ok(cuttle(server, "package", "push", str(tmp_path / "web.1.0.0.zip"), env=as_ci))
    ok(cuttle(server, "package", "push", str(tmp_path / "tools.1.0.0.zip"), env=as_ci))
    assert [p["pushed_by"] for p in listed(server)] == ["ci", "ci"]
    ok(cuttle(server, "package", "list", env=as_ci))

    for args in (
        ("release", "create", "--project", "Web", "--version", "1.0.0"),
        ("package", "delete", "web", "1.0.0", "--yes"),
        ("package", "prune", "--yes"),
        ("environment", "create", "Test"),
        ("project", "show", "Web"),
    ):
        refused = cuttle(server, *args, env=as_ci)
        assert refused.returncode != 0, args
        assert "[permission_denied]" in refused.stderr, (args, refused.stderr)
    # An administrator's release, which the CI key cannot deploy either.
    ok(cuttle(server, "release", "create", "--project", "Web", "--version", "1.0.0"))
    refused = cuttle(
        server,
        "deploy",
        "--project",
        "Web",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        env=as_ci,
    )
    assert refused.returncode != 0
    assert "[permission_denied]" in refused.stderr, refused.stderr


def test_a_push_killed_mid_way_leaves_nothing(server: Server, tmp_path: Path) -> None:
    # The CLI reads a pipe we feed: it is killed after part of the package went out.
    pipe = tmp_path / "web.1.0.0.zip"
    os.mkfifo(pipe)
    push = subprocess.Popen(
        [str(BIN / "cuttle"), "package", "push", str(pipe)],
        env=server.cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    temp = server.home / "packages" / "tmp"
    try:
        with pipe.open("wb") as writer:
            writer.write(os.urandom(3 * 1024 * 1024))
            writer.flush()

            def receiving() -> bool:
                return any(p.stat().st_size > 0 for p in temp.iterdir())

            wait_for(receiving, 30, "the server to receive part of the push")
            os.killpg(push.pid, signal.SIGKILL)
            push.wait(10)
    finally:
        if push.poll() is None:
            os.killpg(push.pid, signal.SIGKILL)
            push.wait(10)
    wait_for(lambda: not any(temp.iterdir()), 30, "the server to drop the partial file")
    assert listed(server) == []
    assert stored_files(server.home / "packages") == []
    # The server is fine afterwards: the same version can be pushed in full.
    pipe.unlink()
    make_zip(pipe, "whole")
    ok(cuttle(server, "package", "push", str(pipe)))


def test_a_stream_closed_early_or_corrupted_stores_nothing(server: Server) -> None:
    channel = admin_channel(server)
    stub = packages_pb2_grpc.PackageServiceStub(channel)
    metadata = (("x-api-key", server.api_key),)
    data = os.urandom(600_000)
    header = ppb.PushPackageRequest(
        header=ppb.PushPackageHeader(file_name="web.1.0.0.zip", size=len(data))
    )
    try:
        # The client stops after one chunk and closes its side: no trailer, so cut short.
        with pytest.raises(grpc.RpcError) as cut:
            stub.PushPackage(
                iter([header, ppb.PushPackageRequest(chunk=data[:300_000])]),
                metadata=metadata,
                timeout=30,
            )
        assert cut.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "without its trailer" in str(cut.value.details())
        # Every byte, but one flipped on the way: the SHA-256 the client computed disagrees.
        damaged = bytes([data[0] ^ 1]) + data[1:]
        trailer = ppb.PushPackageTrailer(sha256=hashlib.sha256(data).hexdigest())
        with pytest.raises(grpc.RpcError) as corrupt:
            stub.PushPackage(
                iter(
                    [
                        header,
                        ppb.PushPackageRequest(chunk=damaged),
                        ppb.PushPackageRequest(trailer=trailer),
                    ]
                ),
                metadata=metadata,
                timeout=30,
            )
        assert "the sender computed" in str(corrupt.value.details())
    finally:
        channel.close()
    assert listed(server) == []
    assert stored_files(server.home / "packages") == []
    assert not any((server.home / "packages" / "tmp").iterdir())


@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_two_nodes_on_one_database_share_one_package_root(
    cluster: Cluster, tmp_path: Path, pg_schema: str
) -> None:
    shared = tmp_path / "shared-packages"
    first = cluster.start_server(database_url=server_url(pg_schema), package_root=str(shared))
    second = Server(cluster.root / "server-2", cluster.procs)
    second.settings.update(package_root=str(shared))
    joined = second.join(first)
    assert joined.returncode == 0, joined.stderr
    second.start()

    sha = make_zip(tmp_path / "web.1.0.0.zip", "node one")
    ok(cuttle(first, "package", "push", str(tmp_path / "web.1.0.0.zip")))
    seen = listed(second)
    assert [(p["package_id"], p["version"], p["sha256"]) for p in seen] == [("web", "1.0.0", sha)]
    assert stored_files(shared) == [shared / "sha256" / sha[:2] / sha]
    assert not (first.home / "packages").exists()

    # A release made on the second node records the bytes the first received.
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.replace("package_id: tools", "package_id: web"))
    ok(cuttle(second, "apply", "-f", str(model)))
    made = json.loads(
        ok(
            cuttle(
                second,
                "release",
                "create",
                "--project",
                "Web",
                "--version",
                "1.0.0",
                "--output",
                "json",
            )
        ).stdout
    )
    assert {p["sha256"] for p in made["packages"]} == {sha}
    refused = cuttle(first, "package", "delete", "web", "1.0.0", "--yes")
    assert "used by releases Web 1.0.0" in refused.stderr, refused.stderr

    make_zip(tmp_path / "web.1.0.1.zip", "node two")
    ok(cuttle(second, "package", "push", str(tmp_path / "web.1.0.1.zip")))
    ok(cuttle(first, "package", "delete", "web", "1.0.1", "--yes"))
    assert [p["version"] for p in listed(second)] == ["1.0.0"]
    assert stored_files(shared) == [shared / "sha256" / sha[:2] / sha]

    # Pushed through the first node, deployed by the second alone: the first is stopped, so
    # the second claims the task and reads the bytes from the shared root.
    cluster.add_tentacle("web-01", "listening", environments=("Dev",), roles=("web-server",))
    assert first.process is not None
    first.process.stop()
    deployed = second.cli(
        "deploy",
        "--project",
        "Web",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--wait",
        "--wait-timeout",
        "90",
        timeout=120,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "web 1.0.0: full" in deployed.stdout + deployed.stderr
    assert "node one" in deployed.stdout
    # The script taken from the package ran from the ticket's own copy of it.
    assert "migrating node one in package" in deployed.stdout
