"""Two server nodes on one PostgreSQL: a follower on node B sees what node A stores at once.

Node A runs the script; `cuttle task log --follow` is connected to node B, which stores
nothing of that task. Both nodes poll the store only every two minutes, so the line printed
after the follower caught up can reach it within the test's seconds only through the
database's LISTEN/NOTIFY (store/change_feed.py); so can the task's end.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness.cluster import BIN, Cluster, Server, wait_for
from tests.integration.harness.tasks import log_lines, newest_task_id

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(180)]

LIBPQ = "postgresql://postgres@127.0.0.1:5432/test"
POLL = 120.0
# What must not be copied from node A's home: what makes a node itself.
NODE_OWN = ("node-id", "ports.json", "server.log", "cuttle.disk-reserve")


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema of the test's own in the shared PostgreSQL, dropped afterwards."""
    try:
        admin = psycopg.connect(LIBPQ, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not answering: {exc}")
    name = f"t_{uuid.uuid4().hex}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield name
        finally:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


def _second_node(cluster: Cluster, first: Server) -> Server:
    """Node B: node A's home (identity, keys, settings, database) but a node of its own."""
    home = cluster.root / "server-b"
    shutil.copytree(first.home, home, ignore=shutil.ignore_patterns(*NODE_OWN))
    node = Server(home, cluster.procs, settings=dict(first.settings))
    node.thumbprint, node.api_key = first.thumbprint, first.api_key
    node.start()
    return node


def _read_lines(stream: subprocess.Popen[str], into: queue.Queue[str]) -> None:
    assert stream.stdout is not None
    for line in stream.stdout:
        into.put(line.rstrip("\n"))


def _next_line(lines: queue.Queue[str], within: float) -> str:
    try:
        return lines.get(timeout=within)
    except queue.Empty:
        raise AssertionError(f"the follower printed nothing within {within} s") from None


def test_a_follower_on_another_node_sees_output_without_polling(
    cluster: Cluster, tmp_path: Path, schema: str
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    first = cluster.start_server(database_url=url, follow_poll_interval_seconds=POLL)
    cluster.add_tentacle("web-01", "listening")
    mark = tmp_path / "go"
    script = f'echo before; while [ ! -e "{mark}" ]; do sleep 0.05; done; echo after'
    runner = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=first.cli_env(),
    )
    follower: subprocess.Popen[str] | None = None
    try:
        task_id = wait_for(lambda: newest_task_id(first), 60, "the script's task")
        wait_for(lambda: "before" in log_lines(first, task_id), 60, "the first line stored")
        second = _second_node(cluster, first)
        follower = subprocess.Popen(
            [str(BIN / "cuttle"), "task", "log", task_id, "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=second.cli_env(),
        )
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(follower, lines), daemon=True)
        reader.start()
        assert _next_line(lines, 60) == "web-01: before"
        touched = time.monotonic()
        mark.touch()
        assert _next_line(lines, 30) == "web-01: after"
        # Far below the poll: node A's commit reached node B's follower through the database.
        assert time.monotonic() - touched < POLL / 4
        assert follower.wait(timeout=30) == 0, "the follower did not see the task end"
        reader.join(timeout=10)
        assert runner.wait(timeout=30) == 0
    finally:
        for proc in (runner, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if follower is not None and follower.stdout is not None:
            follower.stdout.close()
