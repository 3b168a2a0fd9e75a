"""A target the server cannot reach says so, since when and for how long it keeps trying.

The listening Tentacle is down when a script is sent to it. The live output and `task show`
say "waiting for web-01 since ...: <why>; retrying for ... more"; once the Tentacle is back the
output says it was reached again, the script runs with every line, and the machine's reason is
clear again.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster, Server, wait_for
from tests.integration.harness.tasks import log_lines, newest_task_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _machine_reason(server: Server, task_id: str) -> str:
    task = server.cli_json("task", "show", task_id)
    machine = next(n for n in task["nodes"] if n["kind"] == "machine")
    return str(machine["reason"])


def test_an_unreachable_target_says_why_since_when_and_recovers(cluster: Cluster) -> None:
    server = cluster.start_server(agent_lost_after_seconds=120.0)
    tentacle = cluster.add_tentacle("web-01", "listening")
    assert tentacle.process is not None
    tentacle.process.stop()
    run = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", "echo delivered"],
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        task_id = wait_for(lambda: newest_task_id(server), 30, "the task to be listed")
        wait_for(
            lambda: any(
                line.startswith("waiting for web-01 since ") for line in log_lines(server, task_id)
            ),
            60,
            "the waiting note",
            interval=0.2,
        )
        reason = _machine_reason(server, task_id)
        assert re.fullmatch(
            r"waiting for web-01 since \d\d:\d\d:\d\d UTC: .+; retrying for \d+ minutes more",
            reason,
        ), reason
        tentacle.start()
        out, _ = run.communicate(timeout=90)
        printed = out.decode(errors="replace")
        assert run.returncode == 0, printed
        assert "waiting for web-01 since" in printed, printed
        assert "reached web-01 again" in printed, printed
        assert "delivered" in log_lines(server, task_id)
        assert _machine_reason(server, task_id) == ""
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if run.stdout is not None:
            run.stdout.close()  # a failed test must not leak the pipe into the next one


DEPLOYABLE = """
environments:
  - name: Dev
projects:
  - name: Web
    process:
      steps:
        - name: Hello
          target_tags: [web]
          actions:
            - name: Hello
              type: run_script
              script:
                body: |
                  echo "deployed on #{Octopus.Machine.Name}"
"""


def test_a_deployment_to_an_unreachable_target_says_so_too(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server(agent_lost_after_seconds=120.0)
    model = tmp_path / "model.yaml"
    model.write_text(DEPLOYABLE)
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "Web", "--version", "1.0.0", check=True)
    tentacle = cluster.add_tentacle("web-01", "listening")
    assert tentacle.process is not None
    tentacle.process.stop()
    deploy = [str(BIN / "cuttle"), "deploy", "--project", "Web", "--release", "1.0.0"]
    run = subprocess.Popen(
        [*deploy, "--environment", "Dev", "--wait", "--wait-timeout", "120"],
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        task_id = wait_for(lambda: newest_task_id(server), 30, "the deployment to be listed")
        wait_for(
            lambda: _machine_reason(server, task_id).startswith("waiting for web-01 since "),
            60,
            "the waiting reason in task show",
            interval=0.2,
        )
        assert re.fullmatch(
            r"waiting for web-01 since \d\d:\d\d:\d\d UTC: .+; retrying for \d+ minutes more",
            _machine_reason(server, task_id),
        )
        tentacle.start()
        out, _ = run.communicate(timeout=110)
        printed = out.decode(errors="replace")
        assert run.returncode == 0, printed
        assert "waiting for web-01 since" in printed, printed
        assert "reached web-01 again" in printed, printed
        assert "deployed on web-01" in log_lines(server, task_id)
        assert _machine_reason(server, task_id) == ""
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if run.stdout is not None:
            run.stdout.close()
