"""A message matches the state: an agent lost mid-script never reads as "safe to retry".

A polling Tentacle is killed (SIGKILL) while its script runs and never comes back. The script
had started and printed, so its result is unknown: the target must end `result_unknown` with a
message that says it may have run (and the last line stored), never that it is safe to run
again, which would invite an operator to run a non-idempotent change twice.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.integration.harness.cluster import BIN, Cluster, wait_for
from tests.integration.harness.tasks import (
    finished_task,
    kill_marked,
    log_lines,
    newest_task_id,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_polling_agent_lost_mid_script_ends_result_unknown_not_safe_to_retry(
    cluster: Cluster,
) -> None:
    # Short: the agent is gone for good, and the test waits for the server to give up on it.
    server = cluster.start_server(agent_lost_after_seconds=4.0)
    tentacle = cluster.add_tentacle("gone-01", "polling")
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    body = f"export {mark}\nfor i in 1 2 3 4 5 6 7 8; do echo line $i; done\nsleep 300\n"
    run = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "gone-01", "--", body],
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        task_id = wait_for(lambda: newest_task_id(server), 30, "the task to be listed")
        wait_for(lambda: "line 8" in log_lines(server, task_id), 30, "the 8 lines to be stored")
        assert tentacle.process is not None
        tentacle.process.kill()

        task = wait_for(lambda: finished_task(server, task_id), 60, "the task to finish")
        out, _ = run.communicate(timeout=30)
        (target,) = task["targets"]
        assert target["state"] == "result_unknown", target
        message = target["message"]
        assert "may have run" in message, message
        assert "safe to retry" not in message, message
        assert "not delivered" not in message, message
        # What is known: the last line stored (8 lines, their journal sequences 1..8 or more).
        assert "the last line stored is number" in message, message
        assert task["state"] == "failed", task
        printed = out.decode(errors="replace")
        assert "safe to retry" not in printed, printed
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        kill_marked(mark.encode())
