"""Following a task through the real CLI: no lost wakeup, every line once, from memory."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from cuttle.protocol.v1 import admin_pb2 as apb
from tests.integration.harness.clients import AdminApi
from tests.integration.harness.cluster import BIN, Cluster, wait_for
from tests.integration.harness.tasks import log_lines

pytestmark = pytest.mark.integration

# Far longer than any run below may take: only a notification can end them in time.
POLL = 120.0


def test_a_no_op_script_returns_without_waiting_for_the_poll(cluster: Cluster) -> None:
    server = cluster.start_server(follow_poll_interval_seconds=POLL)
    cluster.add_tentacle("web-01", "listening")
    # A task that ends between the follower's look and its wait was seen only at the next poll
    # (most runs of a no-op script): each of these would then take POLL seconds.
    for _ in range(5):
        started = time.monotonic()
        run = server.cli("script", "run", "--machine", "web-01", "--", "true", timeout=POLL / 2)
        elapsed = time.monotonic() - started
        assert run.returncode == 0, run.stdout + run.stderr
        assert elapsed < POLL / 6, f"the CLI took {elapsed:.1f}s: the end was seen by the poll"


def _release(fifo: Path) -> bool:
    """Let the script go on: it waits reading the FIFO (False: it is not reading yet)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)
    return True


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_follow_started_mid_run_prints_every_line_once(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server(follow_poll_interval_seconds=POLL)
    cluster.add_tentacle("web-01", style)
    fifo = tmp_path / "go.fifo"
    os.mkfifo(fifo)
    body = (
        'for i in $(seq 1 3000); do echo "line $i"; done\n'
        f'read go < "{fifo}"\n'
        'for i in $(seq 3001 6000); do echo "line $i"; done\n'
    )
    runner = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", body],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server.cli_env(),
    )
    follower: subprocess.Popen[bytes] | None = None
    try:
        task_id = wait_for(
            lambda: (server.cli_json("task", "list") or [{}])[0].get("id"), 30, "the task"
        )
        wait_for(lambda: len(log_lines(server, task_id)) >= 3000, 30, "the first lines")
        follower = subprocess.Popen(
            [str(BIN / "cuttle"), "task", "log", task_id, "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=server.cli_env(),
        )
        wait_for(lambda: _release(fifo), 30, "the script to wait for the FIFO")
        follow_out, follow_err = follower.communicate(timeout=POLL / 2)
        run_out, run_err = runner.communicate(timeout=POLL / 2)
    finally:
        for process in (runner, follower):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
    expected = [f"web-01: line {i}" for i in range(1, 6001)]
    assert runner.returncode == 0, run_err.decode()
    assert run_out.decode().splitlines() == expected
    assert follower.returncode == 0, follow_err.decode()
    assert follow_out.decode().splitlines() == expected

    # Read back as JSON lines, the same shape as before runs existed, from any position.
    events = [
        json.loads(line)
        for line in server.cli(
            "task", "log", task_id, "--output", "json", check=True
        ).stdout.splitlines()
    ]
    positions = [
        int(line["position"]) for e in events for line in e.get("lines", {}).get("lines", [])
    ]
    assert positions == list(range(1, 6001))
    assert "finished" in events[-1]

    # A client that does not ask for runs (an older CLI) still gets every line, as lines.
    api = AdminApi(server)
    try:
        old = [(line.position, line.line.text) for line in api.log(task_id)]
        request = apb.WatchTaskRequest(task_id=task_id, no_follow=True, accept_runs=True)
        runs = [
            item
            for event in api.stub.WatchTask(request, metadata=api.metadata, timeout=60)
            for item in event.runs.runs
        ]
    finally:
        api.close()
    assert old == [(i, f"line {i}".encode()) for i in range(1, 6001)]
    new = [
        (item.first_position + offset, text)
        for item in runs
        for offset, text in enumerate(item.run.text.split(b"\n"))
    ]
    assert new == old
