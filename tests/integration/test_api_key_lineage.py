"""Key lineage (issue 14, point 8): a key minted with a key is revoked with it.

Through the real CLI and server: a leaked key's holder may have minted more keys; revoking the
leaked one must take those too, and a user with no role cannot mint keys at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.cluster import Cluster, Server, wait_for

pytestmark = pytest.mark.integration

MODEL = """
environments:
  - name: Dev
users:
  - name: alice
  - name: bob
teams:
  - name: Viewers
    members: [alice]
    grants:
      - role: view
"""
# The server trusts a verified key for 5 s (KEY_CACHE_SECONDS) before looking it up again.
REVOCATION_SECONDS = 20.0


@pytest.fixture
def server(cluster: Cluster, tmp_path: Path) -> Server:
    started = cluster.start_server()
    model = tmp_path / "model.yaml"
    model.write_text(MODEL)
    ok(cuttle(started, "apply", "-f", str(model)))
    return started


def _as(key: dict[str, str]) -> dict[str, str]:
    return {"CUTTLE_API_KEY": key["api_key"]}


def _mint(server: Server, user: str, env: dict[str, str] | None = None) -> dict[str, str]:
    made = ok(cuttle(server, "api-key", "create", "--user", user, "--output", "json", env=env))
    created: dict[str, str] = json.loads(made.stdout)
    return created


def _keys(server: Server) -> dict[str, dict[str, Any]]:
    listed = json.loads(ok(cuttle(server, "api-key", "list", "--output", "json")).stdout)
    return {k["id"]: k for k in listed}


def _works(server: Server, key: dict[str, str]) -> bool:
    return cuttle(server, "environment", "list", env=_as(key)).returncode == 0


def _refused(server: Server, key: dict[str, str]) -> bool:
    result = cuttle(server, "environment", "list", env=_as(key))
    if result.returncode == 0:
        return False
    assert "invalid or revoked API key" in result.stderr, result.stderr
    return True


def test_revoking_a_key_revokes_the_keys_minted_with_it(server: Server) -> None:
    given = _mint(server, "alice")
    minted = _mint(server, "alice", env=_as(given))
    minted_again = _mint(server, "alice", env=_as(minted))
    kept = _mint(server, "alice")
    for key in (given, minted, minted_again, kept):
        assert _works(server, key)

    revoked = ok(cuttle(server, "api-key", "revoke", given["id"]))

    for key in (given, minted, minted_again):
        wait_for(lambda key=key: _refused(server, key), REVOCATION_SECONDS, "revocation")
    assert f"revoked {given['id']}" in revoked.stderr
    assert f"revoked {minted['id']}" in revoked.stderr
    assert f"created with {minted['id']}" in revoked.stderr, revoked.stderr
    keys = _keys(server)
    assert keys[minted["id"]]["created_by_key_id"] == given["id"]
    assert keys[minted_again["id"]]["created_by_key_id"] == minted["id"]
    # Made by the init key: lineage from there too.
    assert keys[given["id"]]["created_by_key_id"]
    assert [keys[k["id"]]["revoked"] for k in (given, minted, minted_again, kept)] == [
        True,
        True,
        True,
        False,
    ]
    assert _works(server, kept)


def test_a_user_with_no_role_cannot_mint_keys(server: Server) -> None:
    bob = _mint(server, "bob")  # an administrator may still give bob a key

    refused = cuttle(server, "api-key", "create", "--user", "bob", env=_as(bob))

    assert refused.returncode == 1
    assert "[permission_denied]" in refused.stderr, refused.stderr
    assert "'bob' holds no role" in refused.stderr, refused.stderr
    assert [k["user"] for k in _keys(server).values()].count("bob") == 1
    # Nor for anyone else.
    refused = cuttle(server, "api-key", "create", "--user", "alice", env=_as(bob))
    assert "[permission_denied]" in refused.stderr, refused.stderr


def test_revoke_all_of_a_users_keys(server: Server) -> None:
    first, second = _mint(server, "alice"), _mint(server, "alice")
    minted = _mint(server, "alice", env=_as(first))
    bob = _mint(server, "bob")

    # A user may contain a leak of their own keys without waiting for an administrator.
    done = ok(
        cuttle(
            server,
            "api-key",
            "revoke",
            "--all",
            "--user",
            "alice",
            "--output",
            "json",
            env=_as(second),
        )
    )

    revoked = {k["id"] for k in json.loads(done.stdout)}
    assert revoked == {first["id"], second["id"], minted["id"]}
    for key in (first, second, minted):
        wait_for(lambda key=key: _refused(server, key), REVOCATION_SECONDS, "revocation")
    keys = _keys(server)
    assert not keys[bob["id"]]["revoked"]
    assert all(k["revoked"] for k in keys.values() if k["user"] == "alice")
    # bob may not revoke alice's keys; nobody names a key and --all at once.
    refused = cuttle(server, "api-key", "revoke", "--all", "--user", "alice", env=_as(bob))
    assert "[permission_denied]" in refused.stderr, refused.stderr
    usage = cuttle(server, "api-key", "revoke", "--all")
    assert usage.returncode == 2
    assert "--all and --user go together" in usage.stderr
