"""A lifecycle's retention policy removes old releases with their deployments and task logs.

With "keep 1 release", after three releases were deployed to Dev one after the other, only the
last one is left; the first two and their tasks (logs included) are gone, and the audit trail
says the retention policy removed them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness.cluster import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Keep one
    release_retention:
      quantity_to_keep: 1
      unit: items
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Short
    lifecycle: Keep one
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Say
          target_tags: [web-server]
          actions:
            - name: Say
              type: run_script
              script:
                body: |
                  echo "release #{Octopus.Release.Number}"
"""


def test_retention_removes_old_releases_with_their_task_logs(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server(retention_interval_seconds=0.5)
    cluster.add_tentacle("web-01", "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(MODEL)
    server.cli("apply", "-f", str(model), check=True)
    tasks: dict[str, str] = {}
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        server.cli("release", "create", "--project", "Short", "--version", version, check=True)
        run = server.cli(
            "deploy",
            "--project",
            "Short",
            "--release",
            version,
            "--environment",
            "Dev",
            "--wait",
            "--output",
            "json",
            timeout=120,
            check=True,
        )
        tasks[version] = next(
            line.split('"task_id": "', 1)[1].split('"', 1)[0]
            for line in run.stdout.splitlines()
            if '"task_id": "' in line
        )

    def only_the_last() -> bool:
        releases = server.cli_json("release", "list", "--project", "Short")
        return [r["version"] for r in releases] == ["1.0.2"]

    wait_for(only_the_last, 60, "retention to remove 1.0.0 and 1.0.1", interval=0.5)
    for version in ("1.0.0", "1.0.1"):
        gone = server.cli("task", "log", tasks[version])
        assert gone.returncode != 0, gone.stdout
        assert "not found" in gone.stderr.lower() or "no task" in gone.stderr.lower(), gone.stderr
    kept = server.cli("task", "log", tasks["1.0.2"], check=True)
    assert "release 1.0.2" in kept.stdout
    messages = [e["message"] for e in server.cli_json("events")]
    for version in ("1.0.0", "1.0.1"):
        assert any(
            m.startswith(f"Removed release {version} of Short and 1 task log(s)") for m in messages
        ), messages
