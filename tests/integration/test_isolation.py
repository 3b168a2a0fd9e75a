"""Full isolation from the script console: one script per mutex per machine, the others wait.

`cuttle script run --isolation full --mutex NAME` through the real server to a real Tentacle:
a second script on the same mutex waits (and says so) until the first is cancelled; one with an
isolation timeout fails to start, saying why; another mutex, or no isolation, does not wait.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster, Server, wait_for
from tests.integration.harness.tasks import (
    finished_task,
    kill_marked,
    log_lines,
    processes_with,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _task_ids(server: Server) -> list[str]:
    return [t["id"] for t in server.cli_json("task", "list")]


def _start(server: Server, out: Path, *args: str) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=server.cli_env(),
            start_new_session=True,
        )


def _new_task(server: Server, known: list[str]) -> str:
    def fresh() -> str | None:
        ids = [i for i in _task_ids(server) if i not in known]
        return ids[0] if ids else None

    return wait_for(fresh, 30, "the new task to be listed", interval=0.2)


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_fully_isolated_scripts_on_one_mutex_take_turns(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", style)
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    gate = tmp_path / "gate"
    os.mkfifo(gate)  # the holder waits on it forever: only the cancel ends it
    holder_body = f"export {mark}\necho holder started\nread -r _ < '{gate}'\necho holder done\n"
    isolated = ("--isolation", "full", "--mutex", "deploy")
    runs: list[subprocess.Popen[bytes]] = []
    try:
        runs.append(_start(server, tmp_path / "holder.out", *isolated, "--", holder_body))
        holder = _new_task(server, [])
        wait_for(
            lambda: "holder started" in log_lines(server, holder),
            30,
            "the holder to run",
            interval=0.2,
        )

        runs.append(_start(server, tmp_path / "waiter.out", *isolated, "--", "echo waiter ran"))
        waiter = _new_task(server, [holder])
        wait_for(
            lambda: any(
                "Waiting for the mutex 'deploy'" in line for line in log_lines(server, waiter)
            ),
            30,
            "the waiter to say it waits for the mutex",
            interval=0.2,
        )

        # One that may not wait long fails to start, saying why; nothing of it ran.
        quick = server.cli(
            "script", "run", "--machine", "web-01", *isolated, "--isolation-timeout", "0.5",
            "--", "echo quick ran",
            timeout=60,
        )  # fmt: skip
        assert quick.returncode == 1, quick.stdout + quick.stderr
        quick_task = _new_task(server, [holder, waiter])
        (target,) = server.cli_json("task", "show", quick_task)["targets"]
        assert target["state"] == "failed_to_start", target
        assert "Timed out after 0.5s waiting for the mutex 'deploy'" in target["message"], target
        assert "quick ran" not in log_lines(server, quick_task)

        # Another mutex, and no isolation at all, run while the holder runs.
        other = server.cli(
            "script", "run", "--machine", "web-01", "--isolation", "full", "--mutex", "other",
            "--", "echo other ran",
            timeout=60,
        )  # fmt: skip
        assert other.returncode == 0, other.stdout + other.stderr
        assert "web-01: other ran" in other.stdout
        plain = server.cli("script", "run", "--machine", "web-01", "--", "echo plain ran")
        assert plain.returncode == 0, plain.stdout + plain.stderr

        assert finished_task(server, waiter) is None
        assert "waiter ran" not in log_lines(server, waiter)

        # Cancelling the holder releases the mutex: the waiter runs, to success.
        cancel = server.cli("task", "cancel", holder, timeout=60)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        done = wait_for(
            lambda: finished_task(server, waiter), 60, "the waiter to finish", interval=0.2
        )
        assert done["state"] == "success", done
        assert "waiter ran" in log_lines(server, waiter)
        assert runs[1].wait(30) == 0
        holder_task = finished_task(server, holder)
        assert holder_task is not None
        assert holder_task["state"] == "cancelled", holder_task
        assert "holder done" not in log_lines(server, holder)
        assert not processes_with(mark.encode())
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait(10)
        kill_marked(mark.encode())


def test_a_mutex_without_full_isolation_is_refused(cluster: Cluster) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening")
    run = server.cli("script", "run", "--machine", "web-01", "--mutex", "deploy", "--", "true")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--mutex and --isolation-timeout need --isolation full" in run.stderr
    assert _task_ids(server) == []
