"""A server on PostgreSQL whose connections are cut mid-deployment finishes it by itself.

Every connection of the server is terminated by the database (pg_terminate_backend, as a
failover or a restarted PostgreSQL does) while a script prints. The engine's transactions see
a dropped connection, retry on a new one, and the deployment ends successfully without a
server restart, every line stored exactly once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness.cluster import Cluster, wait_for
from tests.integration.harness.postgres import LIBPQ, server_url
from tests.integration.harness.tasks import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(240)]

MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Steady
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Print
          target_tags: [web-server]
          actions:
            - name: Print
              type: run_script
              script:
                body: |
                  i=0
                  while [ ! -e "MARK" ]; do
                    i=$((i+1)); echo "line $i"
                    if [ $((i % 200)) = 0 ]; then sleep 0.05; fi
                  done
                  echo "final $i"
"""


def _terminate(application: str) -> int:
    with psycopg.connect(LIBPQ, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application,),
        ).fetchall()
    return len(rows)


def test_connections_cut_mid_deployment_are_retried_and_nothing_is_lost(
    pg_schema: str, cluster: Cluster, tmp_path: Path
) -> None:
    application = f"cuttle-{pg_schema}"
    url = server_url(pg_schema, application)
    mark = tmp_path / "go"
    server = cluster.start_server(database_url=url)
    cluster.add_tentacle("web-01", "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.replace("MARK", str(mark)))
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "Steady", "--version", "1.0.0", check=True)
    out = server.cli(
        "deploy",
        "--project",
        "Steady",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--output",
        "json",
        check=True,
    )
    task_id = json.loads(out.stdout)["task_id"]
    wait_for(lambda: len(log_lines(server, task_id)) > 1000, 60, "output to be stored")
    cut = _terminate(application)
    assert cut > 0, "the server had no connection to cut"
    wait_for(lambda: len(log_lines(server, task_id)) > 3000, 60, "output to go on being stored")
    assert _terminate(application) > 0
    mark.touch()

    def finished() -> dict[str, object] | None:
        task: dict[str, object] = json.loads(
            server.cli("task", "show", task_id, "--output", "json").stdout
        )
        return task if task["state"] not in ("queued", "running") else None

    task = wait_for(finished, 120, "the deployment to finish", interval=0.5)
    assert task["state"] == "success", task
    lines = log_lines(server, task_id)
    numbered = [int(m.group(1)) for line in lines if (m := re.fullmatch(r"line (\d+)", line))]
    assert numbered == list(range(1, len(numbered) + 1)), (len(numbered), numbered[-3:])
    assert [line for line in lines if line.startswith("final ")] == [f"final {len(numbered)}"]
    # The cut reached the engine and was retried, not avoided.
    log = (server.home / "server.log").read_text()
    assert "transaction_retrying" in log
    assert "terminating connection" in log
