"""Several server nodes share one database and present one identity; a dead node's task moves.

`cuttle-server join` makes a second node's home from the first node's master key and database.
Both present the certificate kept (encrypted) in the database, so a Tentacle trusts one
thumbprint whichever node talks to it. When the node running a deployment is SIGKILLed, the
other adopts the task once the lease runs out and finishes it: the script running at the kill
is re-attached by its ticket, finished actions are not rerun, every line is stored once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cuttle.server.store import database
from tests.integration.harness.cluster import BIN, Cluster, Server, _env, wait_for
from tests.integration.harness.postgres import query, server_url
from tests.integration.harness.tasks import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Short leases so adoption happens within seconds of a node's death.
NODE_SETTINGS = {
    "task_lease_seconds": 3.0,
    "node_heartbeat_interval_seconds": 0.5,
    "task_watchdog_interval_seconds": 1.0,
}

MACHINES = ("web-01", "web-02", "web-03", "web-04")


def _model(marks: Path, starts: Path) -> str:
    body = "\n".join(
        [
            f'echo "#{{Octopus.Machine.Name}}" >> "{starts}"',
            'for i in $(seq 1 300); do echo "#{Octopus.Machine.Name} line $i"; done',
            f'while [ ! -e "{marks}/#{{Octopus.Machine.Name}}" ]; do sleep 0.05; done',
            'for i in $(seq 301 600); do echo "#{Octopus.Machine.Name} line $i"; done',
        ]
    )
    indented = "\n".join("                  " + line for line in body.splitlines())
    return f"""
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Shared
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Roll
          target_tags: [web-server]
          window_size: 1
          actions:
            - name: Deploy
              type: run_script
              script:
                body: |
{indented}
"""


@pytest.mark.postgres
def test_a_joined_node_presents_the_same_identity_and_wrong_keys_are_refused(
    pg_schema: str, cluster: Cluster, tmp_path: Path
) -> None:
    first = cluster.start_server(database_url=server_url(pg_schema), **NODE_SETTINGS)
    second = cluster.join_node(first)
    assert second.thumbprint == first.thumbprint
    assert (second.home / "server-certificate.pem").read_bytes() == (
        first.home / "server-certificate.pem"
    ).read_bytes()
    assert (second.home / "master.key").stat().st_mode & 0o077 == 0
    second.start()
    # The second node answers the same API key and sees the first node's model and machines.
    cluster.add_tentacle("web-01", "listening", environments=("Dev",), roles=("web-server",))
    names = [m["name"] for m in second.cli_json("machine", "list", "--output", "json")]
    assert names == ["web-01"]
    nodes = subprocess.run(
        [
            str(BIN / "cuttle-server"),
            "node",
            "list",
            "--home",
            str(second.home),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=True,
    )
    assert len(json.loads(nodes.stdout)) == 2
    # The admin API shows the same, and which node answered.
    listed = second.cli_json("node", "list")
    assert len(listed) == 2
    assert [n["this_node"] for n in listed].count(True) == 1
    mine = next(n for n in listed if n["this_node"])
    assert mine["id"] == (second.home / "node-id").read_text().strip()
    assert all(n["heartbeat_age_seconds"] < 30 and n["task_cap"] == 5 for n in listed), listed

    # A key that is not the first node's cannot join, and says so.
    stranger = cluster.root / "stranger"
    stranger.mkdir()
    subprocess.run(
        [str(BIN / "cuttle-server"), "init", "--home", str(stranger)],
        capture_output=True,
        env=_env(),
        timeout=60,
        check=True,
    )
    impostor = Server(cluster.root / "server-c", cluster.procs)
    impostor.home.mkdir()
    refused = subprocess.run(
        [
            str(BIN / "cuttle-server"),
            "join",
            "--home",
            str(impostor.home),
            "--database-url",
            server_url(pg_schema),
            "--master-key",
            str(stranger / "master.key"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert refused.returncode != 0
    assert "is not the master key of the server in that database" in refused.stderr
    assert not (impostor.home / "master.key").exists()
    # init on a database that already belongs to a server points at join instead.
    again = subprocess.run(
        [
            str(BIN / "cuttle-server"),
            "init",
            "--home",
            str(tmp_path / "again"),
            "--database-url",
            server_url(pg_schema),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert again.returncode != 0
    assert "already belongs to a server" in again.stderr
    assert "cuttle-server join" in again.stderr


def test_an_upgraded_home_moves_its_identity_into_the_database(cluster: Cluster) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "listening", environments=("Dev",))
    before = server.thumbprint
    assert server.process is not None
    server.process.stop()
    # The state a database from before the identity moved is in: migrated down to 0013.
    engine = database.create_engine_for(f"sqlite+pysqlite:///{server.home / 'cuttle.db'}")
    try:
        database.downgrade(engine, "0013")
    finally:
        engine.dispose()
    server.start()
    with sqlite3.connect(server.home / "cuttle.db") as db:
        stored = db.execute("SELECT thumbprint FROM server_identity").fetchall()
    assert stored == [(before,)]
    # The Tentacle, which trusts the old thumbprint, still runs scripts for it.
    out = server.cli("script", "run", "--machine", tentacle.name, "--", "echo still-trusted")
    assert out.returncode == 0, out.stderr
    assert "still-trusted" in out.stdout


@pytest.mark.postgres
def test_the_surviving_node_adopts_a_deployment_whose_node_was_killed(
    pg_schema: str, cluster: Cluster, tmp_path: Path
) -> None:
    marks, starts = tmp_path / "marks", tmp_path / "starts.txt"
    marks.mkdir()
    first = cluster.start_server(database_url=server_url(pg_schema), **NODE_SETTINGS)
    second = cluster.join_node(first)
    second.start()
    for name in MACHINES:
        cluster.add_tentacle(name, "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(_model(marks, starts))
    first.cli("apply", "-f", str(model), check=True)
    first.cli("release", "create", "--project", "Shared", "--version", "1.0.0", check=True)
    (marks / "web-01").touch()
    queued = first.cli(
        "deploy",
        "--project",
        "Shared",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--output",
        "json",
        check=True,
    )
    task_id = json.loads(queued.stdout)["task_id"]
    wait_for(
        lambda: "web-02 line 300" in log_lines(first, task_id),
        60,
        "web-02 to print its first half",
        interval=0.2,
    )
    owner = query(pg_schema, "SELECT owner_node FROM tasks WHERE id = %s", task_id)[0][0]
    nodes = {
        (first.home / "node-id").read_text().strip(): first,
        (second.home / "node-id").read_text().strip(): second,
    }
    dead = nodes[str(owner)]
    survivor = next(s for s in nodes.values() if s is not dead)
    assert dead.process is not None
    dead.process.kill()
    (marks / "web-02").touch()
    for name in ("web-03", "web-04"):
        (marks / name).touch()

    def finished() -> dict[str, object] | None:
        task = json.loads(survivor.cli("task", "show", task_id, "--output", "json").stdout)
        return task if task["state"] not in ("queued", "running") else None

    task = wait_for(finished, 120, "the adopted deployment to finish", interval=0.5)
    assert task["state"] == "success", task
    machines = [n for n in task["nodes"] if n["kind"] == "machine"]
    assert all(n["attempts"] == 1 and n["state"] == "success" for n in machines), machines
    assert sorted(starts.read_text().split()) == list(MACHINES)
    lines = log_lines(survivor, task_id)
    for name in MACHINES:
        numbers = [
            int(m.group(1)) for line in lines if (m := re.fullmatch(rf"{name} line (\d+)", line))
        ]
        assert numbers == list(range(1, 601)), (name, len(numbers), numbers[:3], numbers[-3:])
    assert "task_adopted" in (survivor.home / "server.log").read_text()
