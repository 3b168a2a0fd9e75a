"""A task reads `cancelled` only once its agent has seen every process of the script gone.

The script's tree includes a `setsid` child that ignores SIGTERM, so the Tentacle must wait its
grace and SIGKILL it. Until then the task must read `cancelling`; the first time it reads
`cancelled`, no process of the tree may be alive. (The states are read before /proc: a process
seen alive after the task read `cancelled` was alive when it did.)
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from cuttle.protocol.v1 import admin_pb2 as apb
from tests.integration.harness.clients import AdminApi
from tests.integration.harness.cluster import BIN, Cluster, wait_for
from tests.integration.harness.tasks import (
    kill_marked,
    log_lines,
    newest_task_id,
    processes_with,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_the_task_is_cancelling_while_any_process_lives_and_cancelled_after(
    cluster: Cluster, style: str
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", style)
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}".encode()
    body = (
        f"export {mark.decode()}\n"
        # Left its session, and ignores the polite signal: only the SIGKILL after the
        # Tentacle's grace ends it.
        "setsid bash -c 'trap \"\" TERM; echo stubborn; sleep 300; sleep 300' &\n"
        "sleep 300 &\n"
        "echo started\n"
        "wait\n"
    )
    run = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", body],
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        task_id = wait_for(lambda: newest_task_id(server), 30, "the task to be listed")
        wait_for(
            lambda: {"started", "stubborn"} <= set(log_lines(server, task_id)),
            30,
            "both processes to have started",
        )
        assert len(processes_with(mark)) >= 3
        cancel = server.cli("task", "cancel", task_id)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr

        # The admin API directly: a `cuttle` process per look would be slower than the grace.
        api = AdminApi(server)
        try:
            seen: list[tuple[str, int]] = []
            while True:
                state = apb.TaskState.Name(api.task(task_id).state)
                alive = len(processes_with(mark))
                seen.append((state, alive))
                if state == "TASK_STATE_CANCELLED":
                    break
                assert state == "TASK_STATE_CANCELLING", seen
                assert len(seen) < 5000, seen[-20:]
        finally:
            api.close()
        # Cancelled only when all were gone; and cancelling for as long as one lived.
        assert seen[-1] == ("TASK_STATE_CANCELLED", 0), seen[-20:]
        assert any(s == "TASK_STATE_CANCELLING" and n for s, n in seen), seen[:20]
        task = server.cli_json("task", "show", task_id)
        (target,) = task["targets"]
        assert target["state"] == "cancelled", target
        run.communicate(timeout=30)
        assert run.returncode != 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        kill_marked(mark)
