"""The audit trail shows each caller only the events about what they may view.

carol may view project Web only: she reads the trail of Web's releases but not Billing's, while
an administrator reads both; events about the server itself stay readable to her.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
users:
  - name: carol
teams:
  - name: Web watchers
    members: [carol]
    grants:
      - role: view
        projects: [Web]
projects:
  - name: Web
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
  - name: Billing
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
"""


def test_events_about_projects_a_caller_cannot_view_are_not_shown(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    model = tmp_path / "model.yaml"
    model.write_text(MODEL)
    ok(cuttle(server, "apply", "-f", str(model)))
    for project in ("Web", "Billing"):
        ok(cuttle(server, "release", "create", "--project", project, "--version", "1.0.0"))
    key = json.loads(
        ok(cuttle(server, "api-key", "create", "--user", "carol", "--output", "json")).stdout
    )["api_key"]

    def messages(env: dict[str, str] | None = None) -> list[str]:
        out = ok(cuttle(server, "events", "--output", "json", env=env)).stdout
        return [e["message"] for e in json.loads(out)]

    admin = messages()
    assert any("release 1.0.0 of Billing" in m for m in admin), admin
    assert any("release 1.0.0 of Web" in m for m in admin), admin
    carols = messages({"CUTTLE_API_KEY": key})
    assert any("release 1.0.0 of Web" in m for m in carols), carols
    assert not any("Billing" in m for m in carols), carols
