"""Two server nodes on one PostgreSQL: a follower on node B sees what node A stores at once.

Node A runs the script; `cuttle task log --follow` is connected to node B, which stores
nothing of that task. Both nodes poll the store only every two minutes, so the line printed
after the follower caught up can reach it within the test's seconds only through the
database's LISTEN/NOTIFY (store/change_feed.py); so can the task's end.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster, wait_for
from tests.integration.harness.postgres import server_url
from tests.integration.harness.tasks import log_lines, newest_task_id

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(180)]

POLL = 120.0


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
    pg_schema: str, cluster: Cluster, tmp_path: Path
) -> None:
    first = cluster.start_server(
        database_url=server_url(pg_schema), follow_poll_interval_seconds=POLL
    )
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
        second = cluster.join_node(first)
        second.start()
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
